/**
 * Worker threads that repack quantized tensors for the cache (repack-worker.ts), so that a big
 * model's first load uses every core. Jobs go to the workers in turn; each answers in the order it
 * was given work, and the caller writes the results in its own order, so the cache file is the
 * same byte for byte as one made on a single thread (tested).
 */
import os from "node:os";
import { Worker } from "node:worker_threads";
import { UserError } from "../errors.js";
import type { CompactQuantized } from "./block-quant.js";
import type { RepackJob, RepackReply } from "./repack-worker.js";
import type { TensorRef } from "./tensor-ref.js";

/**
 * How many workers a conversion uses: LOGIT_LENS_REPACK_WORKERS when set (0 = none, repack on the
 * main thread), else one per core when the model's quantized tensors are big enough to repay
 * starting them (about 50 ms each), none on a single core.
 */
export function repackWorkerCount(quantizedBytes: number): number {
  const env = process.env["LOGIT_LENS_REPACK_WORKERS"];
  if (env !== undefined && env !== "" && Number.isInteger(Number(env)) && Number(env) >= 0) return Number(env);
  const cores = os.availableParallelism();
  return cores > 1 && quantizedBytes >= 64 * 2 ** 20 ? Math.min(cores, 8) : 0;
}

export class RepackPool {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<number, { resolve: (q: CompactQuantized) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failed: Error | undefined;

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL("./repack-worker.js", import.meta.url));
      w.on("message", (r: RepackReply) => this.settle(r));
      // A worker that dies (out of memory, a bug) fails every job still waiting, not just its own.
      w.on("error", (e) => this.failAll(e));
      w.on("exit", (code) => {
        if (code !== 0) this.failAll(new Error(`a repacking worker stopped (exit code ${code})`));
      });
      this.workers.push(w);
    }
  }

  /** The tensor repacked by a worker (block-quant.ts compactRepack on readTensorBytes(ref)). */
  repack(ref: TensorRef, rows: number, cols: number, rowOrder?: Int32Array, bytes8 = false): Promise<CompactQuantized> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    const job: RepackJob = { id, ref, rows, cols, rowOrder, bytes8 };
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.workers[id % this.workers.length]!.postMessage(job);
    });
  }

  async close(): Promise<void> {
    this.failed ??= new Error("the repacking pool is closed");
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private settle(r: RepackReply): void {
    const w = this.waiting.get(r.id);
    if (!w) return;
    this.waiting.delete(r.id);
    if (r.ok) w.resolve(r.q);
    else w.reject(r.userError ? new UserError(r.message) : new Error(r.message));
  }

  private failAll(e: Error): void {
    this.failed ??= e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }
}
