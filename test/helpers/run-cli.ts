/**
 * Runs the real command line (`node bin/logit-lens.js ...`) in a child process, as a user would,
 * with a timeout so that a hang fails the test instead of blocking the run.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the nearest folder above this file that holds bin/logit-lens.js. */
export const REPO_ROOT: string = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, "bin", "logit-lens.js")) && fs.existsSync(path.join(dir, "package.json"))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root (bin/logit-lens.js) above " + fileURLToPath(import.meta.url));
    dir = up;
  }
})();

export const CLI_PATH = path.join(REPO_ROOT, "bin", "logit-lens.js");

export interface CliResult {
  /** Exit code; null when the process was killed (see `timedOut`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the timeout elapsed and the process was killed. */
  timedOut: boolean;
  /** Wall-clock milliseconds. */
  ms: number;
}

export interface CliOptions {
  /** Kill the process after this many ms (default 60 s). */
  timeoutMs?: number;
  /** Extra environment variables (merged over process.env; `undefined` removes one). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Text written to the child's stdin (stdin is closed in any case, so nothing waits on it). */
  input?: string;
}

export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const env: Record<string, string | undefined> = { ...process.env };
  // Stack traces must come from the CLI's own choice, not from a debug flag inherited by the test.
  delete env["LOGIT_LENS_DEBUG"];
  for (const [k, v] of Object.entries(options.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], {
      cwd: options.cwd ?? REPO_ROOT,
      env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        timedOut,
        ms: Date.now() - started,
      });
    });
    child.stdin.on("error", () => {}); // the child may exit before reading
    child.stdin.end(options.input ?? "");
  });
}
