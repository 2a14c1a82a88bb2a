/**
 * Sweeps over several processes or machines through BullMQ, a Redis-backed job queue (why BullMQ
 * rather than `--shard i/n`: docs/sweep.md).
 *
 * One job = one unit of the sweep (`unitSize` consecutive prompts). The job carries the sweep's
 * options (absolute paths: every worker must see the data file and the results folder at the same
 * path, a shared volume) and the unit number; its id is derived from the results folder and the
 * sweep's identity, so enqueueing twice adds nothing. A worker computes the unit exactly as a
 * local run does (sweep.ts UnitRunner) and writes its files under their fixed names; the job is
 * completed only after both files are in place. So:
 * - a worker killed mid-unit holds the job's lock until it expires (`lockSeconds`); another
 *   worker's stalled-job check then puts the job back in the queue and someone redoes the unit;
 * - a worker killed between writing the files and completing the job: the unit is redone and its
 *   files overwritten with the same bytes (units are deterministic), nothing is doubled;
 * - Redis restarted: jobs survive when Redis persists (appendonly), and ioredis reconnects.
 * The results are the folder's unit files, merged by `mergeSweep` as after a local run.
 */
import { createHash } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { Queue, UnrecoverableError, Worker, type Job, type ConnectionOptions } from "bullmq";
import { UserError } from "../errors.js";
import { finishedUnits, mergeSweep, openSweep, progressLine, readManifest, unitName, UnitRunner, unitsOf, type MergeOutcome, type SweepSettings } from "./sweep.js";
import type { LoadedModel } from "../engine/model.js";
import fs from "node:fs";

export const DEFAULT_QUEUE_NAME = "logit-lens-sweep";

/** What a job carries: the sweep's options (as the CLI normalised them) and one unit. */
export interface SweepJobData<O> {
  options: O;
  unit: number;
}

/** `redis://[user:password@]host[:port][/db]` into ioredis options. */
export function redisConnection(url: string): ConnectionOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError(`--queue '${url}' is not a URL (redis://host:port)`);
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") throw new UserError(`--queue '${url}' must be a redis:// URL`);
  const db = u.pathname.replace(/^\//, "");
  if (db && !/^\d+$/.test(db)) throw new UserError(`--queue '${url}': the path must be a database number`);
  return {
    host: u.hostname || "127.0.0.1",
    port: u.port ? Number(u.port) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(u.protocol === "rediss:" ? { tls: {} } : {}),
    // BullMQ workers block on Redis; ioredis must retry forever (through a Redis restart) rather
    // than fail commands after 20 tries.
    maxRetriesPerRequest: null,
  };
}

/** Job ids: `<prefix><unit-NNNNNN>`, one prefix per (results folder, sweep identity). BullMQ ids may not contain ':'. */
function jobPrefixOf(out: string, manifestSha: string): string {
  return `${createHash("sha256").update(`${path.resolve(out)}\n${manifestSha}`).digest("hex").slice(0, 16)}-`;
}

function manifestSha(out: string): string {
  const m = readManifest(out);
  return createHash("sha256").update(JSON.stringify({ ...m, about: undefined })).digest("hex");
}

/** Fails fast with one line when Redis cannot be reached (before loading a model for nothing). */
export async function assertRedisReachable(url: string, queueName: string): Promise<void> {
  const probe = new Queue(queueName, { connection: redisConnection(url) });
  probe.on("error", () => undefined);
  try {
    await checkReachable(probe, url);
  } finally {
    await probe.close();
  }
}

/** Waits for Redis with a deadline, and gives up at the first connection error (refused, unknown host). */
async function checkReachable(queue: Queue, url: string, seconds = 10): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onError: ((e: Error) => void) | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UserError(`cannot reach Redis at ${url} (nothing answered in ${seconds} s); start redis-server or fix --queue`)), seconds * 1000);
    onError = (e: Error) => reject(new UserError(`cannot reach Redis at ${url} (${(e as NodeJS.ErrnoException).code ?? e.message}); start redis-server or fix --queue`));
    queue.once("error", onError);
  });
  try {
    await Promise.race([queue.waitUntilReady(), failed]);
  } finally {
    clearTimeout(timer);
    if (onError) queue.off("error", onError);
  }
}

export interface EnqueueOptions<O> {
  url: string;
  queueName: string;
  model: LoadedModel;
  settings: SweepSettings;
  /** The options every worker re-reads the sweep from (absolute paths). */
  options: O;
  /** Follow the queue until every unit is done, then merge. */
  wait: boolean;
  log: SweepSettings["log"];
}

export interface EnqueueOutcome {
  unitsTotal: number;
  unitsAlreadyDone: number;
  jobsAdded: number;
  merged: MergeOutcome | null;
}

/**
 * Writes the manifest, queues one job per unit without results, and (with `wait`) follows the
 * folder and the queue, printing progress with an ETA, until every unit is there; then merges.
 */
export async function enqueueSweep<O>(e: EnqueueOptions<O>): Promise<EnqueueOutcome> {
  const { unitsTotal } = openSweep(e.model, e.settings);
  const prefix = jobPrefixOf(e.settings.out, manifestSha(e.settings.out));
  const queue = new Queue(e.queueName, { connection: redisConnection(e.url) });
  queue.on("error", () => undefined); // reconnects are ioredis's business; failures show up below
  try {
    await checkReachable(queue, e.url);
    const before = finishedUnits(e.settings.out, unitsTotal);
    const jobs: { name: string; data: SweepJobData<O>; opts: { jobId: string; attempts: number; backoff: { type: "fixed"; delay: number }; removeOnComplete: boolean; removeOnFail: boolean } }[] = [];
    for (let u = 0; u < unitsTotal; u++) {
      if (before.has(u)) continue;
      const jobId = prefix + unitName(u);
      // A unit that failed before (say a worker without the data file) is tried again.
      const old = await queue.getJob(jobId);
      if (old && (await old.isFailed())) await old.remove();
      jobs.push({ name: "unit", data: { options: e.options, unit: u }, opts: { jobId, attempts: 3, backoff: { type: "fixed", delay: 1000 }, removeOnComplete: true, removeOnFail: false } });
    }
    for (let i = 0; i < jobs.length; i += 500) await queue.addBulk(jobs.slice(i, i + 500));
    if (!e.wait) return { unitsTotal, unitsAlreadyDone: before.size, jobsAdded: jobs.length, merged: null };
    await followSweep(queue, e.settings.out, unitsTotal, before.size, e.model.config.nLayers, prefix, e.log);
    return { unitsTotal, unitsAlreadyDone: before.size, jobsAdded: jobs.length, merged: await mergeSweep(e.settings.out) };
  } finally {
    await queue.close();
  }
}

/** Polls the results folder (the truth) and the queue (workers, failures) once a second. */
async function followSweep(queue: Queue, out: string, unitsTotal: number, before: number, layers: number, jobPrefix: string, log: SweepSettings["log"]): Promise<void> {
  const started = Date.now();
  const seen = new Set<number>(finishedUnits(out, unitsTotal));
  let tokens = 0;
  for (;;) {
    const now = finishedUnits(out, unitsTotal);
    for (const u of now) {
      if (seen.has(u)) continue;
      seen.add(u);
      try {
        tokens += (JSON.parse(fs.readFileSync(path.join(out, "parts", `${unitName(u)}.json`), "utf8")) as { tokens: number }).tokens;
      } catch {
        // Being replaced by a redo this instant: its tokens are counted from the first copy seen.
      }
    }
    const computed = now.size - before;
    let workers = -1;
    try {
      workers = await queue.getWorkersCount();
      const failed = await queue.getFailed(0, 1000);
      const ours = failed.filter((j) => j.id?.startsWith(jobPrefix));
      if (ours.length) throw new UserError(`${ours.length} unit(s) failed in the queue; first: ${ours[0]!.id}: ${ours[0]!.failedReason}`);
    } catch (err) {
      if (err instanceof UserError) throw err;
      // Redis restarting: keep following the folder.
    }
    log?.(progressLine({ done: now.size, total: unitsTotal, before, tokens, layers, seconds: (Date.now() - started) / 1000, computed, extra: workers >= 0 ? `, ${workers} worker${workers === 1 ? "" : "s"}` : ", queue unreachable" }), now.size === unitsTotal);
    if (now.size === unitsTotal) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export interface WorkerOptions<O> {
  url: string;
  queueName: string;
  /** Seconds without a lock renewal after which a unit counts as abandoned and is redone. */
  lockSeconds: number;
  /** Loads the model and the sweep settings from a job's options (the CLI's own code path). */
  prepare: (options: O) => Promise<{ model: LoadedModel; settings: SweepSettings }>;
  log: (line: string) => void;
}

/**
 * Runs units from the queue until SIGTERM/SIGINT (then finishes the unit in hand and exits). One
 * unit at a time: onnxruntime already uses every core. The model and data of the last sweep seen
 * stay loaded, so consecutive units of one sweep load nothing.
 */
export async function runWorker<O>(w: WorkerOptions<O>): Promise<void> {
  let current: { key: string; runner: UnitRunner; layers: number } | null = null;
  let units = 0;
  const name = `${os.hostname()}:${process.pid}`;
  await assertRedisReachable(w.url, w.queueName);
  const worker = new Worker<SweepJobData<O>>(
    w.queueName,
    async (job: Job<SweepJobData<O>>) => {
      try {
        const key = JSON.stringify(job.data.options);
        if (!current || current.key !== key) {
          current = null;
          const { model, settings } = await w.prepare(job.data.options);
          // Checks that this worker's model, data and settings are the enqueued sweep's.
          const { unitsTotal } = openSweep(model, settings, { updateAbout: false });
          if (job.data.unit >= unitsTotal) throw new UserError(`unit ${job.data.unit} is beyond the sweep's ${unitsTotal} units`);
          current = { key, runner: new UnitRunner(model, settings), layers: model.config.nLayers };
        }
        const started = Date.now();
        const tokens = await current.runner.run(job.data.unit);
        units++;
        w.log(`worker ${name}: ${unitName(job.data.unit)} (${tokens} tokens x ${current.layers} layers in ${((Date.now() - started) / 1000).toFixed(1)} s; ${units} units so far)`);
        return { tokens, worker: name };
      } catch (err) {
        // Bad input is not fixed by retrying; anything else (a crash, a full disk) may be.
        if (err instanceof UserError) throw new UnrecoverableError(err.message);
        throw err;
      }
    },
    {
      connection: redisConnection(w.url),
      concurrency: 1,
      lockDuration: w.lockSeconds * 1000,
      stalledInterval: Math.max(1000, (w.lockSeconds * 1000) / 2),
      // A unit abandoned by killed workers several times over is still worth redoing.
      maxStalledCount: 100,
      name,
    },
  );
  worker.on("error", () => undefined); // connection errors while Redis restarts: ioredis reconnects
  worker.on("failed", (job, err) => w.log(`worker ${name}: ${job ? unitName(job.data.unit) : "a job"} failed: ${err.message}`));
  w.log(`worker ${name}: waiting for units on ${w.url} (queue ${w.queueName})`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      w.log(`worker ${name}: stopping after the unit in hand (${units} units done)`);
      void worker.close().then(resolve, resolve);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
}

/** `sweep merge`: the summary of a results folder whose units were computed anywhere. */
export async function mergeCommandCore(out: string, opts: { bootstrap?: number; seed?: number }): Promise<MergeOutcome> {
  const m = readManifest(out);
  const merged = await mergeSweep(out, opts);
  if (merged.missing.length) {
    throw new UserError(`${merged.missing.length} of ${unitsOf(m)} units of ${out} have no results yet (first: ${unitName(merged.missing[0]!)}); let the workers finish, or run the same 'sweep' locally to compute them`);
  }
  return merged;
}
