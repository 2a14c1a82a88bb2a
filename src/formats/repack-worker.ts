/**
 * Worker thread for converting a model into the cache (weight-store.ts `convert`): reads one
 * quantized tensor's blocks from its file and re-lays them out for MatMulNBits (block-quant.ts
 * `compactRepack`). Why a worker: repacking is plain JavaScript over every weight (4-6 ns each:
 * about 40 s of a Llama-3-8B's first load, 6 minutes of a 70B's), and a machine's other cores
 * can do it side by side while the main thread writes finished tensors to the cache in order.
 */
import { parentPort } from "node:worker_threads";
import { compactRepack, type CompactQuantized } from "./block-quant.js";
import { readTensorBytes } from "./files.js";
import type { TensorRef } from "./tensor-ref.js";

export interface RepackJob {
  id: number;
  ref: TensorRef;
  rows: number;
  cols: number;
  rowOrder?: Int32Array;
  bytes8: boolean;
}

export type RepackReply = { id: number; ok: true; q: CompactQuantized } | { id: number; ok: false; message: string; userError: boolean };

/** The typed arrays of a result, handed over without copying. */
export function transferables(q: CompactQuantized): ArrayBuffer[] {
  return [q.data, q.d, q.sc, q.m, q.negDmin, q.mc].filter((a) => a !== undefined).map((a) => a!.buffer as ArrayBuffer);
}

parentPort?.on("message", (job: RepackJob) => {
  try {
    const q = compactRepack(job.ref.dtype, readTensorBytes(job.ref), job.rows, job.cols, job.rowOrder, job.bytes8);
    parentPort!.postMessage({ id: job.id, ok: true, q } satisfies RepackReply, transferables(q));
  } catch (e) {
    parentPort!.postMessage({ id: job.id, ok: false, message: (e as Error).message, userError: (e as Error).name === "UserError" } satisfies RepackReply);
  }
});
