/**
 * Where downloaded models live on disk.
 *
 * - Our own cache (models fetched by alias): `$LOGIT_LENS_CACHE`, else `$XDG_CACHE_HOME/logit-lens`,
 *   else `~/.cache/logit-lens`; one folder per alias under `models/`.
 * - The Hugging Face cache (hub downloads), shared with Python's huggingface_hub and transformers:
 *   `$HF_HUB_CACHE` (or the legacy `$HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else
 *   `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. Layout:
 *   `models--org--name/{blobs/<etag>, refs/<revision>, snapshots/<commit>/<file> -> ../../blobs/<etag>}`.
 *
 * Everything is read from the environment at call time, so tests can point it elsewhere.
 */
import { homedir } from "node:os";
import { join, resolve } from "node:path";

function env(name: string): string | undefined {
  const value = process.env[name];
  return value !== undefined && value.trim() !== "" ? value : undefined;
}

function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return join(homedir(), path.slice(2));
  return path;
}

/** `$XDG_CACHE_HOME`, else `~/.cache`. */
function userCacheDir(): string {
  const xdg = env("XDG_CACHE_HOME");
  return xdg ? resolve(expandHome(xdg)) : join(homedir(), ".cache");
}

/** Root of logit-lens's own cache. */
export function cacheRoot(): string {
  const explicit = env("LOGIT_LENS_CACHE");
  if (explicit) return resolve(expandHome(explicit));
  return join(userCacheDir(), "logit-lens");
}

/** `<root>/models`: one folder per alias. */
export function modelsDir(): string {
  return join(cacheRoot(), "models");
}

/** `<root>/models/<alias>`. */
export function aliasDir(alias: string): string {
  return join(modelsDir(), alias);
}

/** `<root>/tmp`: scratch space for downloads (same file system as the models, so renames are atomic). */
export function scratchDir(): string {
  return join(cacheRoot(), "tmp");
}

/** `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`. */
export function hfHomeDir(): string {
  const home = env("HF_HOME");
  if (home) return resolve(expandHome(home));
  return join(userCacheDir(), "huggingface");
}

/** The Hugging Face hub cache (see the file comment for the precedence). */
export function hfHubCacheDir(): string {
  const explicit = env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE");
  if (explicit) return resolve(expandHome(explicit));
  return join(hfHomeDir(), "hub");
}

/** `models--org--name`: the folder of one model repo inside the hub cache. */
export function hfRepoFolderName(repoId: string): string {
  return ["models", ...repoId.split("/")].join("--");
}

/** Whether a process still runs: stale lock files and scratch folders name their owner's pid. */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
