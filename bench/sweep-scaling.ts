/**
 * Sweep throughput (tokens x layers per second) on one process, and through the queue with 1, 2
 * and 3 local `sweep worker` processes (BullMQ on a redis-server started here), on the same data.
 *
 *   npm run build && node dist/bench/sweep-scaling.js [--model smollm2-135m-instruct]
 *        [--data FILE] [--window 128] [--limit 16] [--workers 1,2,3] [--threads N] [--out FILE]
 *
 * --threads N sets LOGIT_LENS_THREADS=N for every process (onnxruntime's threads; default all
 * cores): with 1, each worker uses one core, which shows how processes scale on a small machine.
 *
 * Data: data/heldout.txt when it exists (tools/sweep/devils-dictionary.mjs), else the committed
 * excerpt test/fixtures/sweep/devil-excerpt.txt; --limit windows of --window tokens, one window per
 * unit (so the queue can spread them). Every run is a fresh results folder.
 *
 * Timing: wall clock of the whole command (the enqueuer's, which ends after the merge), so model
 * loading counts: workers are started with --model and timed only once they say they wait for
 * units (the model loaded), the local run includes its own load, reported apart from its sweep
 * time (the CLI's own figure). Writes a Markdown section (default: a file in the temp folder) and
 * prints it, with the CPU (lscpu) and the load average before and after.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { CLI_PATH, REPO_ROOT } from "../test/helpers/run-cli.js";
import { RedisServer, redisServerPath } from "../test/sweep/redis-server.js";

const { values: a } = parseArgs({
  options: {
    model: { type: "string", default: "smollm2-135m-instruct" },
    data: { type: "string" },
    window: { type: "string", default: "128" },
    limit: { type: "string", default: "16" },
    workers: { type: "string", default: "1,2,3" },
    threads: { type: "string" },
    out: { type: "string" },
  },
});
const data = a.data ?? (fs.existsSync(path.join(REPO_ROOT, "data/heldout.txt")) ? path.join(REPO_ROOT, "data/heldout.txt") : path.join(REPO_ROOT, "test/fixtures/sweep/devil-excerpt.txt"));
const workerCounts = a.workers!.split(",").map(Number);
if (!redisServerPath()) {
  console.error("redis-server is not installed (apt-get install redis-server)");
  process.exit(2);
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ll-sweep-bench-"));
if (a.threads) process.env["LOGIT_LENS_THREADS"] = a.threads; // inherited by every child
const common = ["--model", a.model!, "--data", data, "--window", a.window!, "--limit", a.limit!, "--unit-size", "1", "--metrics", "kl,ce,top1", "--bootstrap", "200"];

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  const t = Date.now();
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d) => (stdout += d));
    c.stderr.on("data", (d) => (stderr += d));
    c.on("exit", (code) => resolve({ code, stdout, stderr, seconds: (Date.now() - t) / 1000 }));
  });
}

function startWorker(url: string): Promise<ChildProcess> {
  const c = spawn(process.execPath, [CLI_PATH, "sweep", "worker", "--queue", url, "--model", a.model!], { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((resolve, reject) => {
    let err = "";
    c.stderr!.on("data", (d) => {
      err += d;
      if (/waiting for units/.test(err)) resolve(c);
    });
    c.on("exit", (code) => reject(new Error(`worker exited with ${code}: ${err}`)));
  });
}

const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(", ");
const cpu = spawnSync("lscpu", { encoding: "utf8" }).stdout.match(/Model name:\s*(.*)/)?.[1] ?? os.cpus()[0]?.model ?? "unknown CPU";
const lines: string[] = [];
const loadBefore = loadavg();
console.error(`sweep scaling: ${a.model} on ${path.basename(data)}, ${a.limit} windows of ${a.window} tokens; ${cpu}, ${os.cpus().length} cores; load ${loadBefore}`);

// One process, no queue.
const local = await run(["sweep", ...common, "--out", path.join(tmp, "local")]);
if (local.code !== 0) throw new Error(local.stderr);
const m = /(\d+) tokens x (\d+) layers in ([\d.]+) s \((\d+) tokens x layers\/s\)/.exec(local.stderr)!;
const [tokens, layers, sweepSeconds] = [Number(m[1]), Number(m[2]), Number(m[3])];
const tl = tokens * layers;
const rows: string[][] = [["local, 1 process (no queue)", "—", local.seconds.toFixed(1), (tl / local.seconds).toFixed(0), `${(tl / sweepSeconds).toFixed(0)} (sweep alone, ${sweepSeconds.toFixed(1)} s)`]];
console.error(`  local: ${local.seconds.toFixed(1)} s wall, ${(tl / sweepSeconds).toFixed(0)} tokens x layers/s in the sweep`);

const redis = await RedisServer.start(path.join(tmp, "redis"));
let base = NaN;
try {
  for (const n of workerCounts) {
    const workers = await Promise.all(Array.from({ length: n }, () => startWorker(redis.url)));
    const r = await run(["sweep", ...common, "--out", path.join(tmp, `queue-${n}`), "--queue", redis.url, "--enqueue", "--queue-name", "logit-lens-sweep"]);
    for (const w of workers) w.kill("SIGTERM");
    await Promise.all(workers.map((w) => new Promise((res) => (w.exitCode !== null ? res(null) : w.once("exit", res)))));
    if (r.code !== 0) throw new Error(r.stderr);
    const same = fs.readFileSync(path.join(tmp, `queue-${n}`, "summary.json"), "utf8") === fs.readFileSync(path.join(tmp, "local", "summary.json"), "utf8");
    if (n === 1) base = r.seconds;
    rows.push([`queue, ${n} worker${n > 1 ? "s" : ""}`, String(n), r.seconds.toFixed(1), (tl / r.seconds).toFixed(0), `${(base / r.seconds).toFixed(2)}x vs 1 worker${same ? "; summary = local's" : "; SUMMARY DIFFERS"}`]);
    console.error(`  ${n} worker(s): ${r.seconds.toFixed(1)} s wall, ${(tl / r.seconds).toFixed(0)} tokens x layers/s`);
  }
} finally {
  await redis.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
}
const loadAfter = loadavg();

lines.push(`### Sweep throughput and queue scaling (${new Date().toISOString().slice(0, 10)})`);
lines.push("");
lines.push(`\`node dist/bench/sweep-scaling.js\` (bench/sweep-scaling.ts): ${a.model}, ${a.limit} windows of ${a.window} tokens from ${path.basename(data)} (${tokens} tokens x ${layers} layers), metrics kl, ce, top1, one window per unit, onnxruntime threads per process: ${a.threads ?? "all cores"}. ${cpu}, ${os.cpus().length} cores; load average (1, 5, 15 min) ${loadBefore} before, ${loadAfter} after (the machine is shared). Wall clock of the whole command; queue workers had loaded the model before the clock started.`);
lines.push("");
lines.push("| run | workers | wall s | tokens x layers / s | notes |");
lines.push("|---|---|---|---|---|");
for (const r of rows) lines.push(`| ${r.join(" | ")} |`);
const text = lines.join("\n") + "\n";
const outFile = a.out ?? path.join(os.tmpdir(), "sweep-scaling.md");
fs.writeFileSync(outFile, text);
console.log(text);
console.error(`wrote ${outFile}`);
