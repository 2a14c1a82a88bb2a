/**
 * Downloads a model repo from the Hugging Face hub into the standard hub cache (the one Python's
 * huggingface_hub and transformers use, so either side reuses what the other fetched):
 *
 *   <hub cache>/models--org--name/blobs/<etag>                      file contents
 *   <hub cache>/models--org--name/refs/<revision>                   commit the revision pointed at
 *   <hub cache>/models--org--name/snapshots/<commit>/<file>         symlink -> ../../blobs/<etag>
 *
 * <etag> is the SHA-256 for LFS/Xet files and the git blob id for the others, as huggingface_hub
 * names them. @huggingface/hub answers the API calls (revision -> commit, file tree); the file
 * bytes are fetched here rather than with its downloadFileToCacheDir, which neither reports
 * progress nor resumes: a file in flight is written to `blobs/<etag>.incomplete`, and a later call
 * (or an automatic retry) continues it with an HTTP Range request. Every file is checked against
 * its hash (SHA-256 for LFS files, git blob SHA-1 otherwise) before it enters blobs/.
 *
 * Only what the lens needs is fetched: config, tokenizer and generation files, and the safetensors
 * weights (only the shards the index names), or exactly the files asked for (a single .gguf).
 *
 * Environment: HF_TOKEN (else the token file `$HF_HOME/token`, as `huggingface-cli login` writes
 * it), HF_ENDPOINT, HF_HUB_OFFLINE, and the cache variables of cache.ts.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, open, readFile, readdir, rename, stat, symlink, copyFile, unlink, writeFile } from "node:fs/promises";
import { dirname, join, relative, isAbsolute } from "node:path";
import { UserError } from "../errors.js";
import { isSafeRelativePath } from "../formats/files.js";
import type { Progress } from "../progress.js";
import { hfHomeDir, hfHubCacheDir, hfRepoFolderName, pidAlive } from "./cache.js";

/** The hub's own address, when HF_ENDPOINT does not name another (kept in @huggingface/hub). */
async function defaultHubUrl(): Promise<string> {
  return (await import("@huggingface/hub")).HUB_URL;
}

export interface HubDownloadOptions {
  /** Branch, tag or commit; default "main". */
  revision?: string;
  progress: Progress;
  /** Default: $HF_ENDPOINT, else the public hub. */
  hubUrl?: string;
  /** Fetch exactly these files (paths in the repo) instead of the default config+tokenizer+weights set. */
  files?: string[];
  /** Use only the local cache (also when HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Default: $HF_TOKEN, else the token file. */
  accessToken?: string;
  /** Extra attempts per file after a dropped connection, each resuming where the last stopped (default 4). */
  retries?: number;
  /** Abort a transfer that delivers nothing for this long (default 60 s). */
  stallTimeoutMs?: number;
  /** Give up on an API request (model info, file list) that has not answered in this long (default 30 s). */
  requestTimeoutMs?: number;
  /** Say that we are still waiting after this long without an answer (default 2 s). */
  waitingNoticeMs?: number;
}

/** Files fetched by default besides the weights. */
const METADATA_FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "chat_template.json",
  "model.safetensors.index.json",
];
/** Fallback tokenizer files, fetched only when the repo has no tokenizer.json. */
const LEGACY_TOKENIZER_FILES = ["tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json"];

const COMMIT_RE = /^[0-9a-f]{40}$/;
const REPO_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

interface TreeFile {
  path: string;
  size: number;
  oid: string;
  lfs?: { oid: string; size: number };
}

function envFlag(name: string): boolean {
  return /^(1|true|yes|on)$/i.test(process.env[name]?.trim() ?? "");
}

/** HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the token file ($HF_TOKEN_PATH or $HF_HOME/token). */
export async function hubToken(): Promise<string | undefined> {
  for (const name of ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]) {
    const value = process.env[name]?.trim();
    if (value) return value;
  }
  const file = process.env["HF_TOKEN_PATH"]?.trim() || join(hfHomeDir(), "token");
  try {
    const value = (await readFile(file, "utf8")).trim();
    return value || undefined;
  } catch {
    return undefined;
  }
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Network failure codes that mean "the hub could not be reached at all". */
function networkCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && e; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** An AbortSignal.timeout() firing, however deep a library wrapped it. */
function isTimeout(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && e; depth++) {
    if ((e as { name?: unknown }).name === "TimeoutError") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** Runs `work`, telling the user once if it takes longer than `afterMs` (a slow server otherwise looks like a hang). */
async function withWaitingNotice<T>(work: Promise<T>, afterMs: number, notice: () => void): Promise<T> {
  const timer = setTimeout(notice, afterMs);
  try {
    return await work;
  } finally {
    clearTimeout(timer);
  }
}

/** What we learnt about the last failed HTTP response, for error messages. */
interface HttpFailure {
  status: number;
  errorCode?: string;
  message?: string;
}

class HubContext {
  lastFailure: HttpFailure | undefined;
  constructor(
    readonly repoId: string,
    readonly hubUrl: string,
    readonly token: string | undefined,
    /** Every API request is abandoned after this long: a silent server must not hang the CLI. */
    readonly requestTimeoutMs = 30_000,
  ) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { Authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  /**
   * The fetch handed to @huggingface/hub: adds the token (the library itself insists on tokens
   * that start with "hf_") and remembers why a request failed.
   */
  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const headers = new Headers(init?.headers);
    if (this.token && !headers.has("Authorization")) headers.set("Authorization", `Bearer ${this.token}`);
    const timeout = AbortSignal.timeout(this.requestTimeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const res = await fetch(input, { ...init, headers, signal });
    if (!res.ok) {
      this.lastFailure = { status: res.status, errorCode: res.headers.get("X-Error-Code") ?? undefined };
      const msg = res.headers.get("X-Error-Message");
      if (msg) this.lastFailure.message = msg;
    }
    return res;
  };

  /** Turns a failed request into a one-line UserError. */
  error(err: unknown, what: string, revision?: string): UserError {
    if (err instanceof UserError) return err;
    if (isTimeout(err)) {
      return new UserError(
        `the hub at ${this.hubUrl} did not answer within ${this.requestTimeoutMs / 1000} s while fetching ${what} of '${this.repoId}': check the network or HF_ENDPOINT; models already downloaded load offline (HF_HUB_OFFLINE=1)`,
      );
    }
    const code = networkCode(err);
    const status =
      (err as { statusCode?: unknown }).statusCode ?? (err instanceof HttpStatusError ? err.status : undefined);
    const repo = `'${this.repoId}'`;
    if (typeof status === "number") {
      const errorCode = err instanceof HttpStatusError ? err.errorCode : this.lastFailure?.errorCode;
      if (status === 401 && errorCode === "RepoNotFound") {
        return new UserError(
          `model ${repo} not found on the hub at ${this.hubUrl}${this.token ? "" : " (if it is private, set HF_TOKEN to a token with access)"}`,
        );
      }
      if (status === 401) {
        return new UserError(
          this.token
            ? `the hub refused the token in HF_TOKEN for ${repo} (401): the token is invalid or has no access to this private or gated model`
            : `the hub refused access to ${repo} (401): it is private or gated, or does not exist; if you have access, set HF_TOKEN to a token that has it`,
        );
      }
      if (status === 403) {
        return new UserError(
          `access to ${repo} is forbidden (403): it is gated; accept its terms on its hub page with the account whose token is in HF_TOKEN`,
        );
      }
      if (status === 404) {
        if (errorCode === "RevisionNotFound" && revision) {
          return new UserError(`revision '${revision}' not found in ${repo} on the hub`);
        }
        if (errorCode === "EntryNotFound") return new UserError(`${what} not found in ${repo} on the hub`);
        return new UserError(`model ${repo} not found on the hub at ${this.hubUrl} (404)`);
      }
      const detail = err instanceof Error ? oneLine(err.message).split(". URL:")[0] : "";
      return new UserError(`the hub answered ${status} while fetching ${what} of ${repo}${detail ? `: ${detail}` : ""}`);
    }
    if (code) {
      return new UserError(
        `cannot reach the Hugging Face hub at ${this.hubUrl} (${code}) to fetch ${repo}: check the network or HF_ENDPOINT; models already downloaded load offline (HF_HUB_OFFLINE=1)`,
      );
    }
    const message = err instanceof Error ? err.message : String(err);
    return new UserError(`fetching ${what} of ${repo} from the hub failed: ${oneLine(message)}`);
  }
}

class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string | undefined,
  ) {
    super(`HTTP ${status}`);
  }
}

/** Parses a repo id, rejecting anything that could escape the cache folder. */
function checkRepoId(repoId: string): void {
  if (!REPO_ID_RE.test(repoId) || repoId.includes("..")) {
    throw new UserError(`'${repoId}' is not a Hugging Face model id (expected 'org/name')`);
  }
}

function checkRelativePath(path: string): void {
  if (!isSafeRelativePath(path)) throw new UserError(`refusing the unsafe file path '${path}' in a hub repo`);
}

/** A file path the server (or a downloaded index) gave us: refused unless it stays inside the snapshot. */
function checkServerPath(path: unknown, repoId: string, where: string): string {
  if (!isSafeRelativePath(path)) {
    throw new UserError(`refusing the unsafe file path ${JSON.stringify(String(path)).slice(0, 200)} in ${where} of '${repoId}' (a broken or hostile hub at HF_ENDPOINT?)`);
  }
  return path;
}

async function readJson(path: string): Promise<unknown> {
  return JSON.parse(await readFile(path, "utf8"));
}

/** Shards named by a safetensors index file; a name that would leave the snapshot folder is refused. */
function indexShards(index: unknown, where: string): string[] {
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (!map || typeof map !== "object") throw new UserError(`${where} has no weight_map`);
  const shards = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const s of shards) {
    if (!isSafeRelativePath(s)) {
      throw new UserError(`${where} names the shard ${JSON.stringify(String(s)).slice(0, 200)}, which is not a file inside the model folder; refusing it`);
    }
  }
  return (shards as string[]).sort();
}

/**
 * True when a snapshot folder holds what a load needs: the given files, or config.json plus the
 * safetensors weights (every shard of the index when there is one).
 */
export async function snapshotComplete(dir: string, files?: string[]): Promise<boolean> {
  try {
    if (files && files.length > 0) {
      for (const f of files) if (!(await exists(join(dir, f)))) return false;
      return true;
    }
    if (!(await exists(join(dir, "config.json")))) return false;
    const indexPath = join(dir, "model.safetensors.index.json");
    if (await exists(indexPath)) {
      for (const shard of indexShards(await readJson(indexPath), indexPath)) {
        if (!(await exists(join(dir, shard)))) return false;
      }
      return true;
    }
    return (await readdir(dir)).some((n) => n.endsWith(".safetensors"));
  } catch {
    return false;
  }
}

/** The snapshot a cached ref (or commit) points at, when it is complete. */
async function cachedSnapshot(repoDir: string, revision: string, files?: string[]): Promise<string | undefined> {
  let commit = revision;
  if (!COMMIT_RE.test(revision)) {
    try {
      commit = (await readFile(join(repoDir, "refs", revision), "utf8")).trim();
    } catch {
      return undefined;
    }
  }
  const dir = join(repoDir, "snapshots", commit);
  return (await snapshotComplete(dir, files)) ? dir : undefined;
}

/**
 * Makes sure `repoId` at `revision` is in the hub cache and returns its snapshot folder.
 * Throws a one-line UserError for unknown repos (404), private or gated ones (401/403), an
 * unreachable hub, or a transfer that keeps failing.
 */
export async function downloadFromHub(repoId: string, options: HubDownloadOptions): Promise<string> {
  checkRepoId(repoId);
  const revision = options.revision?.trim() || "main";
  if (revision.includes("..") || revision.startsWith("/")) throw new UserError(`bad revision '${revision}'`);
  for (const f of options.files ?? []) checkRelativePath(f);
  const repoDir = join(hfHubCacheDir(), hfRepoFolderName(repoId));
  const offline = options.offline || envFlag("HF_HUB_OFFLINE");

  if (COMMIT_RE.test(revision) || offline) {
    const cached = await cachedSnapshot(repoDir, revision, options.files);
    if (cached) return cached;
    if (offline) {
      throw new UserError(
        `'${repoId}' (${revision}) is not in the Hugging Face cache at ${hfHubCacheDir()} and offline mode forbids downloading it`,
      );
    }
  }

  const hubUrl = (options.hubUrl?.trim() || process.env["HF_ENDPOINT"]?.trim() || (await defaultHubUrl())).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(hubUrl)) throw new UserError(`the hub address '${hubUrl}' (HF_ENDPOINT) is not an http(s) URL`);
  const ctx = new HubContext(repoId, hubUrl, options.accessToken ?? (await hubToken()), options.requestTimeoutMs);
  const hub = await import("@huggingface/hub");
  const noticeMs = options.waitingNoticeMs ?? 2000;
  const waiting = (what: string) => () =>
    options.progress.info(`waiting for the hub at ${hubUrl} (${what} of ${repoId}; giving up after ${ctx.requestTimeoutMs / 1000} s)...`);

  // 1. Which commit is the revision at?
  let commit: string;
  try {
    const info = await withWaitingNotice(
      hub.modelInfo({ name: repoId, revision, hubUrl, fetch: ctx.fetch, additionalFields: ["sha"] }),
      noticeMs,
      waiting("model info"),
    );
    commit = String(info.sha ?? "");
    if (!COMMIT_RE.test(commit)) throw new UserError(`the hub gave no usable commit for '${repoId}' at '${revision}'`);
  } catch (err) {
    const mapped = ctx.error(err, "the model info", revision);
    if (networkCode(err) || isTimeout(err)) {
      const cached = await cachedSnapshot(repoDir, revision, options.files);
      if (cached) {
        options.progress.info(`hub unreachable (${networkCode(err) ?? "timed out"}); using the cached snapshot of ${repoId}`);
        return cached;
      }
    }
    throw mapped;
  }

  // 2. The file tree at that commit.
  const tree = new Map<string, TreeFile>();
  const MAX_TREE_ENTRIES = 1_000_000;
  try {
    await withWaitingNotice(
      (async () => {
        for await (const entry of hub.listFiles({ repo: { type: "model", name: repoId }, revision: commit, recursive: true, hubUrl, fetch: ctx.fetch })) {
          if (entry.type !== "file") continue;
          // Every name the server gives is refused unless it stays inside the snapshot folder.
          const path = checkServerPath(entry.path, repoId, "the hub's file list");
          const size = entry.lfs?.size ?? entry.size;
          if (!Number.isSafeInteger(size) || size < 0) throw new UserError(`the hub gave an invalid size for ${path} in '${repoId}'`);
          tree.set(path, {
            path,
            size,
            oid: entry.oid ?? "",
            ...(entry.lfs ? { lfs: { oid: entry.lfs.oid, size: entry.lfs.size } } : {}),
          });
          if (tree.size > MAX_TREE_ENTRIES) throw new UserError(`the hub lists more than ${MAX_TREE_ENTRIES} files for '${repoId}'; refusing it`);
        }
      })(),
      noticeMs,
      waiting("the file list"),
    );
  } catch (err) {
    throw ctx.error(err, "the file list", revision);
  }

  const snapshotDir = join(repoDir, "snapshots", commit);
  const fetcher = new BlobFetcher(ctx, repoDir, commit, options);

  // 3. Pick the files.
  let wanted: TreeFile[];
  if (options.files && options.files.length > 0) {
    wanted = options.files.map((f) => {
      const file = tree.get(f);
      if (!file) {
        const ggufs = [...tree.keys()].filter((p) => p.toLowerCase().endsWith(".gguf"));
        const hint = f.toLowerCase().endsWith(".gguf")
          ? ggufs.length > 0
            ? `; its .gguf files: ${ggufs.slice(0, 12).join(", ")}${ggufs.length > 12 ? ", ..." : ""}`
            : "; it has no .gguf files"
          : "";
        throw new UserError(`'${f}' not found in '${repoId}' at ${revision}${hint}`);
      }
      return file;
    });
  } else {
    const topLevel = [...tree.values()].filter((f) => !f.path.includes("/"));
    const names = new Set(topLevel.map((f) => f.path));
    const picked = new Set<string>(METADATA_FILES.filter((n) => names.has(n)));
    if (!names.has("tokenizer.json")) for (const n of LEGACY_TOKENIZER_FILES) if (names.has(n)) picked.add(n);
    if (!names.has("config.json")) {
      throw new UserError(`'${repoId}' has no config.json: not a transformers model (for a GGUF repo, name the file: ${repoId}:<file>.gguf)`);
    }
    if (names.has("model.safetensors.index.json")) {
      // The index decides which shards belong to the model; fetch it first.
      await fetcher.fetchAll([tree.get("model.safetensors.index.json")!], false);
      const indexPath = join(snapshotDir, "model.safetensors.index.json");
      for (const shard of indexShards(await readJson(indexPath), `${repoId}/model.safetensors.index.json`)) {
        if (!tree.has(shard)) throw new UserError(`'${repoId}': its safetensors index names ${shard}, which the repo lacks`);
        picked.add(shard);
      }
    } else {
      const safetensors = topLevel.filter((f) => f.path.endsWith(".safetensors")).map((f) => f.path);
      const modelFiles = safetensors.filter((p) => p.startsWith("model"));
      for (const p of modelFiles.length > 0 ? modelFiles : safetensors) picked.add(p);
      if (safetensors.length === 0) {
        const other = topLevel.filter((f) => /\.(bin|pt|pth|gguf|onnx)$/.test(f.path)).map((f) => f.path);
        throw new UserError(
          `'${repoId}' has no .safetensors weights${other.length ? ` (it has ${other.slice(0, 6).join(", ")})` : ""}: only safetensors (or a single .gguf, as ${repoId}:<file>.gguf) can be loaded`,
        );
      }
    }
    wanted = [...picked].sort().map((p) => tree.get(p)!);
  }

  // 4. Fetch what is missing, then record the ref.
  await fetcher.fetchAll(wanted, true);
  if (revision !== commit) {
    await mkdir(join(repoDir, "refs", dirname(revision)), { recursive: true });
    const refPath = join(repoDir, "refs", revision);
    const tmp = `${refPath}.${process.pid}.tmp`;
    await writeFile(tmp, commit);
    await rename(tmp, refPath);
  }
  return snapshotDir;
}


const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Downloads blobs of one repo commit and links them into the snapshot. */
class BlobFetcher {
  private readonly retries: number;
  private readonly stallMs: number;

  constructor(
    private readonly ctx: HubContext,
    private readonly repoDir: string,
    private readonly commit: string,
    private readonly options: HubDownloadOptions,
  ) {
    this.retries = options.retries ?? 4;
    this.stallMs = options.stallTimeoutMs ?? 60_000;
  }

  private etag(file: TreeFile): string {
    const etag = file.lfs?.oid ?? file.oid;
    if (!/^[0-9a-f]{40,64}$/.test(etag)) throw new UserError(`the hub gave no usable hash for ${file.path} in '${this.ctx.repoId}'`);
    return etag;
  }

  private blobPath(file: TreeFile): string {
    return join(this.repoDir, "blobs", this.etag(file));
  }

  /** Fetches every file whose blob is missing, with one progress bar over all of them; links all into the snapshot. */
  async fetchAll(files: TreeFile[], showProgress: boolean): Promise<void> {
    const missing: TreeFile[] = [];
    for (const f of files) if (!(await exists(this.blobPath(f)))) missing.push(f);
    if (missing.length > 0) {
      const total = missing.reduce((a, f) => a + f.size, 0);
      const progress = this.options.progress;
      const label = `downloading ${this.ctx.repoId} (${missing.length} file${missing.length === 1 ? "" : "s"})`;
      if (showProgress) progress.start(label, total, "bytes");
      let before = 0;
      for (const f of missing) {
        await this.fetchBlob(f, (done) => {
          if (showProgress) progress.update(before + done);
        });
        before += f.size;
      }
      if (showProgress) progress.done(mib(total));
    }
    for (const f of files) await this.link(f);
  }

  private async link(file: TreeFile): Promise<void> {
    const snapshot = join(this.repoDir, "snapshots", this.commit);
    const pointer = join(snapshot, file.path);
    // Paths were validated when listed; this is the last line of defence before mkdir/symlink.
    const rel = relative(snapshot, pointer);
    checkServerPath(file.path, this.ctx.repoId, "the hub's file list");
    if (rel.startsWith("..") || isAbsolute(rel)) {
      throw new UserError(`refusing to write ${file.path} outside the snapshot folder of '${this.ctx.repoId}'`);
    }
    const blob = this.blobPath(file);
    await mkdir(dirname(pointer), { recursive: true });
    try {
      await lstat(pointer);
      if (await exists(pointer)) return; // already linked (or a copy)
      await unlink(pointer); // dangling link
    } catch {
      // no pointer yet
    }
    try {
      await symlink(relative(dirname(pointer), blob), pointer);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EEXIST") return;
      // No symlinks (Windows without developer mode, some mounts): copy, as huggingface_hub does.
      await copyFile(blob, pointer);
    }
  }

  /** Takes the per-blob lock; waits while another live process holds it. */
  private async lock(file: TreeFile): Promise<() => Promise<void>> {
    const dir = join(dirname(this.repoDir), ".locks", hfRepoFolderName(this.ctx.repoId));
    await mkdir(dir, { recursive: true });
    const lockPath = join(dir, `${this.etag(file)}.logit-lens.lock`);
    let told = false;
    for (;;) {
      try {
        const fh = await open(lockPath, "wx");
        await fh.writeFile(String(process.pid));
        await fh.close();
        return async () => {
          await unlink(lockPath).catch(() => {});
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const holder = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
      if (!Number.isInteger(holder) || holder <= 0 || !pidAlive(holder)) {
        await unlink(lockPath).catch(() => {});
        continue;
      }
      if (!told) {
        this.options.progress.info(`waiting for process ${holder}, which is downloading ${file.path} of ${this.ctx.repoId}`);
        told = true;
      }
      await sleep(500);
    }
  }

  private async fetchBlob(file: TreeFile, onBytes: (done: number) => void): Promise<void> {
    const blob = this.blobPath(file);
    await mkdir(dirname(blob), { recursive: true });
    const release = await this.lock(file);
    try {
      if (await exists(blob)) return; // another process finished it while we waited
      const incomplete = `${blob}.incomplete`;
      const url = `${this.ctx.hubUrl}/${this.ctx.repoId}/resolve/${this.commit}/${file.path
        .split("/")
        .map(encodeURIComponent)
        .join("/")}`;
      let failures = 0;
      for (;;) {
        try {
          await this.transfer(url, file, incomplete, onBytes);
          break;
        } catch (err) {
          if (err instanceof UserError || err instanceof HttpStatusError) throw this.ctx.error(err, file.path);
          failures++;
          if (failures > this.retries) {
            const have = await stat(incomplete).then((s) => s.size, () => 0);
            const code = networkCode(err);
            const cause =
              code === "UND_ERR_SOCKET" || code === "ECONNRESET"
                ? `connection dropped, ${code}`
                : (code ?? oneLine(err instanceof Error ? err.message : String(err)));
            throw new UserError(
              `download of ${file.path} from '${this.ctx.repoId}' broke off at ${mib(have)} of ${mib(file.size)} (${cause}); run again to resume`,
            );
          }
          await sleep(Math.min(8000, 500 * 2 ** (failures - 1)));
        }
      }
      await this.verify(file, incomplete);
      await rename(incomplete, blob);
    } finally {
      await release();
    }
  }

  /** One HTTP attempt: continues `incomplete` from its current length. */
  private async transfer(url: string, file: TreeFile, incomplete: string, onBytes: (done: number) => void): Promise<void> {
    let have = await stat(incomplete).then((s) => s.size, () => 0);
    if (have > file.size) {
      await unlink(incomplete);
      have = 0;
    }
    if (have === file.size && file.size > 0) return;
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new Error(`no data for ${this.stallMs / 1000} s`)), this.stallMs);
    };
    arm();
    try {
      const res = await fetch(url, {
        headers: this.ctx.headers(have > 0 ? { Range: `bytes=${have}-` } : {}),
        redirect: "follow",
        signal: controller.signal,
      });
      if (res.status === 416 && have > 0) {
        // The server has nothing past what we hold: start over rather than trust it.
        await res.body?.cancel();
        await unlink(incomplete);
        throw new Error("range not satisfiable");
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new HttpStatusError(res.status, res.headers.get("X-Error-Code") ?? undefined);
      }
      let offset = 0;
      if (res.status === 206) {
        const m = /^bytes (\d+)-/.exec(res.headers.get("Content-Range") ?? "");
        offset = m ? Number(m[1]) : -1;
        if (offset !== have) {
          await res.body?.cancel();
          await unlink(incomplete).catch(() => {});
          throw new Error(`server resumed at byte ${offset}, expected ${have}`);
        }
      }
      const oversize = (): UserError =>
        new UserError(
          `the hub sent more than the ${file.size} bytes it announced for ${file.path} of '${this.ctx.repoId}'; stopped and deleted the partial download (a broken or hostile hub at HF_ENDPOINT?)`,
        );
      // A declared length past the announced size is refused before a byte is written.
      const declared = Number(res.headers.get("Content-Length") ?? NaN);
      if (Number.isFinite(declared) && Math.max(0, offset) + declared > file.size) {
        await res.body?.cancel();
        await unlink(incomplete).catch(() => {});
        throw oversize();
      }
      // 200 means the whole file from byte 0, whatever we asked for.
      const out = await open(incomplete, offset > 0 ? "a" : "w");
      let done = offset;
      let tooLong = false;
      onBytes(done);
      try {
        if (res.body) {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            arm();
            // Never write past the announced size: a server that keeps sending is cut off here
            // (leaving the loop cancels the body), not after hundreds of MB.
            if (done + chunk.length > file.size) {
              tooLong = true;
              break;
            }
            await out.write(chunk);
            done += chunk.length;
            onBytes(done);
          }
        }
      } finally {
        await out.close();
      }
      if (tooLong) {
        await unlink(incomplete).catch(() => {});
        throw oversize();
      }
      if (done < file.size) throw new Error(`connection closed after ${done} of ${file.size} bytes`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Checks size and hash; a mismatch deletes the download. */
  private async verify(file: TreeFile, path: string): Promise<void> {
    const size = (await stat(path)).size;
    let hash: Hash;
    let expected: string;
    if (file.lfs) {
      hash = createHash("sha256");
      expected = file.lfs.oid;
    } else {
      hash = createHash("sha1");
      hash.update(`blob ${size}\0`);
      expected = file.oid;
    }
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
    const actual = hash.digest("hex");
    if (size !== file.size || actual !== expected) {
      await unlink(path).catch(() => {});
      throw new UserError(
        `${file.path} of '${this.ctx.repoId}' arrived corrupt (${size} bytes, hash ${actual.slice(0, 12)}..., expected ${file.size} bytes, ${expected.slice(0, 12)}...); run again`,
      );
    }
  }
}
