/**
 * Bookkeeping of logit-lens's own cache (`cacheRoot()`, see cache.ts): what is there, how big,
 * and what is stale. Behind `logit-lens cache list|prune`, and the sweep every model load runs.
 *
 * - `compiled/<key>/`: one converted model (weights.json, weights.bin, .onnx files, whatever the
 *   weight store adds later), always treated as one unit. `source.json` beside them (written by
 *   `recordCompiledSource`) names the files it was converted from, with their size and mtime as
 *   the key was computed, and when it was last used. A folder whose source file is gone or has
 *   changed can never be reused (its key no longer matches): that is what `models fetch --force`
 *   or a re-downloaded model leaves behind.
 * - Partial files (`<name>.<pid>.partial`, `<name>.<pid>-<hex>.partial`, `.tmp`) belong to the
 *   process whose pid they carry; they are stale once that process is dead and the file is older
 *   than a few minutes (pids get reused; the age guards against removing a live writer's file).
 * - `models/<alias>/`: downloaded models (listed; only their dead partial files are pruned).
 * - `tmp/`: download scratch folders, `<alias>-<pid>-<hex>`.
 *
 * The Hugging Face hub cache is shared with Python tools: listed, never pruned.
 */
import fs from "node:fs";
import path from "node:path";
import { cacheRoot, hfHubCacheDir, modelsDir, pidAlive, scratchDir } from "./cache.js";

/** Partial files younger than this are never removed, even when their pid looks dead. */
export const PARTIAL_MIN_AGE_MS = 10 * 60_000;

const SOURCE_FILE = "source.json";
const PARTIAL_RE = /\.(\d+)(?:-[0-9a-f]+)?\.(?:partial|tmp)$/;

export function compiledRoot(root = cacheRoot()): string {
  return path.join(root, "compiled");
}

interface SourceRecord {
  version: 1;
  /** What the user loaded (alias, file or folder), for `cache list`. */
  model?: string;
  sources: { path: string; size: number; mtimeMs: number }[];
  lastUsed: string;
}

/**
 * Notes which source files a compiled folder was converted from, and that it was used now. Call it
 * after every successful load (the CLI does); failures are ignored: bookkeeping must never fail a run.
 */
export function recordCompiledSource(dir: string, sources: string[], model?: string): void {
  try {
    const record: SourceRecord = {
      version: 1,
      ...(model ? { model } : {}),
      sources: sources.map((s) => {
        const real = fs.realpathSync(s);
        const st = fs.statSync(real);
        return { path: real, size: st.size, mtimeMs: st.mtimeMs };
      }),
      lastUsed: new Date().toISOString(),
    };
    const target = path.join(dir, SOURCE_FILE);
    const tmp = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(record, null, 1));
    fs.renameSync(tmp, target);
  } catch {
    // read-only cache, folder removed meanwhile: nothing to record
  }
}

function readSource(dir: string): SourceRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, SOURCE_FILE), "utf8")) as SourceRecord;
    return Array.isArray(r.sources) ? r : undefined;
  } catch {
    return undefined;
  }
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Bytes under `p` (files counted once, links not followed) and the newest mtime seen. */
function usage(p: string): { bytes: number; newest: number } {
  const st = statOrUndefined(p);
  if (!st) return { bytes: 0, newest: 0 };
  if (!st.isDirectory()) return { bytes: st.isFile() ? st.size : 0, newest: st.mtimeMs };
  let bytes = 0;
  let newest = st.mtimeMs;
  for (const name of listDir(p)) {
    const u = usage(path.join(p, name));
    bytes += u.bytes;
    newest = Math.max(newest, u.newest);
  }
  return { bytes, newest };
}

/** The partial-file state of one name: whose it is and whether it is stale. */
function partialState(file: string, now: number, minAgeMs: number): "live" | "stale" | undefined {
  const m = PARTIAL_RE.exec(path.basename(file));
  if (!m) return undefined;
  const st = statOrUndefined(file);
  if (!st) return undefined;
  if (pidAlive(Number(m[1]))) return "live";
  return now - st.mtimeMs >= minAgeMs ? "stale" : "live";
}

export interface CompiledEntry {
  key: string;
  dir: string;
  bytes: number;
  model?: string;
  sources: string[];
  lastUsed: Date;
  /** ok: reusable; converting: a live process is writing it; stale: safe to remove (see reason). */
  state: "ok" | "converting" | "stale";
  reason?: string;
}

export interface CacheListing {
  root: string;
  compiled: CompiledEntry[];
  /** Downloaded models of aliases (`models/<alias>`). */
  models: { name: string; dir: string; bytes: number }[];
  /** Repos in the shared Hugging Face hub cache (never pruned by logit-lens). */
  hub: { name: string; dir: string; bytes: number }[];
  /** Partial files and scratch folders of dead processes. */
  leftovers: { path: string; bytes: number }[];
}

export interface ListOptions {
  /** A compiled folder not used for this many days counts as stale (default 30). */
  unusedDays?: number;
  /** Partial files younger than this are kept (default PARTIAL_MIN_AGE_MS). */
  partialMinAgeMs?: number;
  now?: number;
}

function judgeCompiled(dir: string, options: Required<ListOptions>): CompiledEntry {
  const names = listDir(dir);
  const u = usage(dir);
  const record = readSource(dir);
  const lastUsed = record ? Date.parse(record.lastUsed) || u.newest : u.newest;
  const entry: CompiledEntry = {
    key: path.basename(dir),
    dir,
    bytes: u.bytes,
    ...(record?.model ? { model: record.model } : {}),
    sources: record?.sources.map((s) => s.path) ?? [],
    lastUsed: new Date(lastUsed),
    state: "ok",
  };
  if (names.some((n) => partialState(path.join(dir, n), options.now, options.partialMinAgeMs) === "live")) {
    entry.state = "converting";
    return entry;
  }
  const stale = (reason: string): CompiledEntry => Object.assign(entry, { state: "stale" as const, reason });
  if (!names.includes("weights.json") && !names.includes("weights.bin")) {
    // Nothing usable was ever finished here (a killed conversion).
    return names.length === 0 || options.now - u.newest >= options.partialMinAgeMs ? stale("conversion never finished") : entry;
  }
  for (const s of record?.sources ?? []) {
    const st = statOrUndefined(s.path);
    if (!st) return stale(`source ${s.path} no longer exists`);
    if (st.size !== s.size || st.mtimeMs !== s.mtimeMs) return stale(`source ${s.path} has changed since (re-fetched or edited)`);
  }
  const days = (options.now - lastUsed) / 86_400_000;
  if (days >= options.unusedDays) return stale(`not used for ${Math.floor(days)} days`);
  return entry;
}

/** What the cache holds (no changes). */
export function listCache(options: ListOptions = {}): CacheListing {
  const opts: Required<ListOptions> = {
    unusedDays: options.unusedDays ?? 30,
    partialMinAgeMs: options.partialMinAgeMs ?? PARTIAL_MIN_AGE_MS,
    now: options.now ?? Date.now(),
  };
  const root = cacheRoot();
  const compiled = listDir(compiledRoot(root))
    .filter((n) => statOrUndefined(path.join(compiledRoot(root), n))?.isDirectory())
    .map((n) => judgeCompiled(path.join(compiledRoot(root), n), opts))
    .sort((a, b) => b.lastUsed.getTime() - a.lastUsed.getTime());
  // An older conversion of the very same source files (made before a format change of the weight
  // store: its key differs) is superseded once the newer one has been in use for a day.
  const newestBySource = new Map<string, number>();
  for (const c of compiled) {
    if (c.state === "stale" || c.sources.length === 0) continue;
    const id = c.sources.join("\n");
    const newest = newestBySource.get(id);
    if (newest === undefined) newestBySource.set(id, c.lastUsed.getTime());
    else if (c.state === "ok" && newest - c.lastUsed.getTime() >= 86_400_000) {
      Object.assign(c, { state: "stale" as const, reason: "superseded by a newer conversion of the same source" });
    }
  }
  const models = listDir(modelsDir())
    .map((n) => ({ name: n, dir: path.join(modelsDir(), n) }))
    .filter((m) => statOrUndefined(m.dir)?.isDirectory())
    .map((m) => ({ ...m, bytes: usage(m.dir).bytes }));
  const hub = listDir(hfHubCacheDir())
    .filter((n) => n.startsWith("models--"))
    .map((n) => ({ name: n.slice("models--".length).replace(/--/g, "/"), dir: path.join(hfHubCacheDir(), n) }))
    .map((m) => ({ ...m, bytes: usage(m.dir).bytes }));
  const leftovers: { path: string; bytes: number }[] = [];
  const consider = (p: string): void => {
    if (partialState(p, opts.now, opts.partialMinAgeMs) === "stale") leftovers.push({ path: p, bytes: usage(p).bytes });
  };
  for (const c of compiled) if (c.state !== "stale") for (const n of listDir(c.dir)) consider(path.join(c.dir, n));
  for (const m of models) for (const n of listDir(m.dir)) consider(path.join(m.dir, n));
  for (const n of listDir(scratchDir())) {
    // Download scratch folders: <alias>-<pid>-<hex>.
    const m = /-(\d+)-[0-9a-f]+$/.exec(n);
    const p = path.join(scratchDir(), n);
    const st = statOrUndefined(p);
    if (m && st && !pidAlive(Number(m[1])) && opts.now - st.mtimeMs >= opts.partialMinAgeMs) leftovers.push({ path: p, bytes: usage(p).bytes });
  }
  return { root, compiled, models, hub, leftovers };
}

/** Removes a folder as a unit: renamed aside first, so no reader ever sees it half-deleted. */
function removeUnit(p: string): void {
  const aside = path.join(path.dirname(p), `.${path.basename(p)}.deleting-${process.pid}`);
  try {
    fs.renameSync(p, aside);
  } catch {
    return; // gone already, or taken by someone else
  }
  fs.rmSync(aside, { recursive: true, force: true });
}

export interface PruneResult {
  removed: { path: string; bytes: number; reason: string }[];
  freedBytes: number;
}

/** Removes what `listCache` calls stale; with `dryRun`, only says what it would remove. */
export function pruneCache(options: ListOptions & { dryRun?: boolean } = {}): PruneResult {
  const listing = listCache(options);
  const removed: PruneResult["removed"] = [];
  for (const c of listing.compiled) {
    if (c.state !== "stale") continue;
    if (!options.dryRun) removeUnit(c.dir);
    removed.push({ path: c.dir, bytes: c.bytes, reason: c.reason ?? "stale" });
  }
  for (const l of listing.leftovers) {
    if (!options.dryRun) fs.rmSync(l.path, { recursive: true, force: true });
    removed.push({ path: l.path, bytes: l.bytes, reason: "left by a process that died" });
  }
  // Folders renamed aside by a prune that was itself killed.
  for (const n of listDir(compiledRoot(listing.root))) {
    const m = /^\..*\.deleting-(\d+)$/.exec(n);
    if (m && !pidAlive(Number(m[1]))) {
      const p = path.join(compiledRoot(listing.root), n);
      const bytes = usage(p).bytes;
      if (!options.dryRun) fs.rmSync(p, { recursive: true, force: true });
      removed.push({ path: p, bytes, reason: "left by an interrupted prune" });
    }
  }
  return { removed, freedBytes: removed.reduce((a, r) => a + r.bytes, 0) };
}

/**
 * Removes partial conversion files (and whole never-finished compiled folders) left by processes
 * that died, as the download code does for its own partial files. Cheap (a readdir per compiled
 * folder); run before each model load. Returns the paths removed. Never throws.
 */
export function sweepStalePartials(root = cacheRoot(), minAgeMs = PARTIAL_MIN_AGE_MS): string[] {
  const removed: string[] = [];
  const now = Date.now();
  try {
    for (const key of listDir(compiledRoot(root))) {
      const dir = path.join(compiledRoot(root), key);
      const before = statOrUndefined(dir); // its mtime before our own removals below change it
      if (!before?.isDirectory() || key.startsWith(".")) continue;
      for (const n of listDir(dir)) {
        const p = path.join(dir, n);
        if (partialState(p, now, minAgeMs) === "stale") {
          fs.rmSync(p, { force: true });
          removed.push(p);
        }
      }
      // A folder left empty by a killed first conversion is removed too (not a fresh one that a
      // live process has just created and is about to write into).
      if (listDir(dir).length === 0 && now - before.mtimeMs >= minAgeMs) {
        try {
          fs.rmdirSync(dir);
          removed.push(dir);
        } catch {
          // someone just started writing into it
        }
      }
    }
  } catch {
    // an unreadable cache: the load itself will report it
  }
  return removed;
}
