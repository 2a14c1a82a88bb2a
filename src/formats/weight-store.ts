/**
 * The model's weights as onnxruntime will see them, in their Hugging Face names and layouts, in one
 * file `weights.bin` inside the model's compiled directory, referenced by the graphs as external
 * data (onnxruntime maps it; nothing is held twice in JS).
 *
 * Quantized matrices stay quantized: a ggml block tensor used as a matrix is re-laid-out once into
 * onnxruntime's MatMulNBits form (block-quant.ts), about the size of the original blocks. Everything
 * else (norms, F16/BF16/F32 matrices, tensors whose conversion is not a row permutation) is fp32.
 *
 * Why a converted file: onnxruntime only accepts external data by relative path inside the model's
 * own directory (absolute paths and symlinks out of it are refused), and quantized GGUF blocks,
 * F16/BF16 and layout fixes (llama.cpp's permuted q/k rows) need conversion anyway. The conversion
 * runs once per source file and is reused on later loads (keyed by path, size and mtime).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import type { TensorRef } from "./tensor-ref.js";
import { readRowsF32, readTensorF32 } from "./dequantize.js";
import { canRepack, compactRepack, type CompactQuantized } from "./block-quant.js";
import { readTensorBytes } from "./files.js";
import { RepackPool, repackWorkerCount } from "./repack-pool.js";
import type { ExternalWeight, QuantizedExternal } from "../graph/builder.js";
import type { Progress } from "../progress.js";
import { UserError } from "../errors.js";

/** Bump when the conversion changes, so stale converted files are not reused. */
const FORMAT_VERSION = 9;
/** Big tensors start on a page (onnxruntime maps them); small ones (norms, scales) only need 64 bytes. */
const PAGE = 4096;
const SMALL = 64 * 1024;
/**
 * Source bytes of quantized tensors repacked ahead of the writer at most (at least one tensor):
 * each repacked result is about 1.1-2x its source in memory until written.
 */
const REPACK_AHEAD_BYTES = 512 * 2 ** 20;

export interface TensorTransform {
  /** Identifies the transform in the cache key. */
  id: string;
  apply(data: Float32Array, shape: number[]): { data: Float32Array; shape: number[] };
}

/**
 * Whether a tensor stays block-quantized, and how its rows move: `true` (as they are), a row order
 * (the transform is a pure row permutation, which moves whole quantized rows exactly), or false
 * (converted to fp32). A transform is recognised as a row permutation by what it does to a matrix
 * of row numbers, so the families need not declare it.
 */
function keepsQuantized(entry: WeightEntry, dequantize: boolean): Int32Array | boolean {
  if (dequantize || !canRepack(entry.ref.dtype, entry.ref.shape)) return false;
  return rowOrderOf(entry);
}

/** `true` without a transform, the row order of a transform that only moves rows, else false. */
function rowOrderOf(entry: WeightEntry): Int32Array | boolean {
  const { ref, transform } = entry;
  if (!transform) return true;
  const rows = ref.shape[0]!;
  const probe = new Float32Array(rows * 2);
  for (let i = 0; i < probe.length; i++) probe[i] = i;
  const moved = transform.apply(probe, [rows, 2]);
  if (moved.shape.length !== 2 || moved.shape[0] !== rows || moved.shape[1] !== 2) return false;
  const order = new Int32Array(rows);
  const seen = new Uint8Array(rows);
  for (let i = 0; i < rows; i++) {
    const a = moved.data[2 * i]!, b = moved.data[2 * i + 1]!;
    const src = a / 2;
    if (!Number.isInteger(src) || b !== a + 1 || src < 0 || src >= rows || seen[src]) return false;
    seen[src] = 1;
    order[i] = src;
  }
  return order;
}

/**
 * Whether an F16/BF16 tensor stays 16-bit (in the cache and in memory): matrices without a
 * conversion. Vectors (norms, biases) become fp32: they are small and used elementwise.
 */
function keepsHalf(entry: WeightEntry, dequantize: boolean): Int32Array | boolean {
  const { ref } = entry;
  if (dequantize || (ref.dtype !== "F16" && ref.dtype !== "BF16") || ref.shape.length !== 2) return false;
  return rowOrderOf(entry);
}

/** A 16-bit matrix's raw bytes with its rows reordered (`order[i]`: the source row of row i). */
function reorderRows(raw: Uint8Array, rows: number, order: Int32Array): Uint8Array {
  const rowBytes = raw.length / rows;
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < rows; i++) out.set(raw.subarray(order[i]! * rowBytes, (order[i]! + 1) * rowBytes), i * rowBytes);
  return out;
}

/** What onnxruntime holds for a compact matrix once loaded: 4-bit planes, fp32 scales and mins, zero points. */
function residentBytes(q: CompactQuantized): number {
  const blocks = q.rows * (q.cols / q.blockSize);
  // One byte plane on MatMulNBits' int8 path: the bytes, and per block a scale and a block sum.
  if (q.bytes8) return q.rows * q.cols + blocks * 8 + (q.m || q.negDmin ? blocks * 4 : 0);
  const planes = q.twoPlanes ? 2 : 1;
  const zeroPointBytes = q.zeroPoints.some((z) => z !== 8) ? Math.ceil(planes * blocks / 2) : 0;
  return (planes * q.rows * q.cols) / 2 + planes * blocks * 4 + (q.m || q.negDmin ? blocks * 4 : 0) + zeroPointBytes;
}

export interface WeightEntry {
  ref: TensorRef;
  transform?: TensorTransform;
}

interface Extent {
  offset: number;
  length: number;
}

interface IndexEntry extends Extent {
  shape: number[];
  /** An F16/BF16 matrix stored as it is in the file. */
  half?: "float16" | "bfloat16";
  /** Present for a matrix kept block-quantized: where its codes lie (block-quant.ts, CompactQuantized). */
  quant?: {
    blockSize: number;
    twoPlanes: boolean;
    bytes8?: boolean;
    group: number;
    zeroPoints: number[];
    residentBytes: number;
    d: Extent;
    sc?: Extent & { signed: boolean };
    m?: Extent;
    negDmin?: Extent;
    mc?: Extent;
  };
}

export class WeightStore {
  private index = new Map<string, IndexEntry>();

  private constructor(readonly dir: string, private readonly entries: Map<string, WeightEntry>, private readonly dequantize: boolean, private readonly bytePlanes: ReadonlySet<string>) {}

  /** Shape of a tensor after its transform (known once materialised). */
  shape(name: string): number[] | undefined {
    return this.index.get(name)?.shape;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  /** Where a tensor lies in weights.bin: fp32, or a MatMulNBits-ready quantized matrix. */
  external(name: string): ExternalWeight | QuantizedExternal {
    const e = this.index.get(name);
    if (!e) throw new UserError(`model is missing tensor '${name}'`);
    const at = (x: Extent, shape: number[]): ExternalWeight => ({ location: "weights.bin", offset: x.offset, length: x.length, shape });
    if (!e.quant) return e.half ? { ...at(e, e.shape), half: e.half } : at(e, e.shape);
    const [n, k] = e.shape as [number, number];
    const q = e.quant;
    const blocks = k / q.blockSize;
    const groups = blocks / q.group;
    const planes = q.twoPlanes ? 2 : 1;
    return {
      blockSize: q.blockSize,
      shape: e.shape,
      twoPlanes: q.twoPlanes,
      bytes8: q.bytes8 === true,
      data: at(e, q.bytes8 ? [n, blocks, q.blockSize] : [n, planes * blocks, q.blockSize / 2]),
      d: at(q.d, [n, groups]),
      group: q.group,
      sc: q.sc ? { ...at(q.sc, [n, blocks]), signed: q.sc.signed } : undefined,
      m: q.m ? at(q.m, [n, blocks]) : undefined,
      negDmin: q.negDmin ? at(q.negDmin, [n, groups]) : undefined,
      mc: q.mc ? at(q.mc, [n, blocks]) : undefined,
      zeroPoints: q.zeroPoints,
      residentBytes: q.residentBytes,
      scalesPerRun: this.scalesPerRun(),
    };
  }

  private perRun?: boolean;
  /**
   * Whether this model's quantized matrices make their fp32 scales and mins from the stored codes
   * at each run (graph/builder.ts, QuantizedExternal.scalesPerRun) rather than once at load. Held
   * at load they take 2 bits per weight for the 4-bit K-quants (an fp32 scale and min per block of
   * 32, against 4.5 bits per weight in the whole file): 1.7 GB on the Llama-3-8B Q4_K_M shape.
   * Made per run they cost a pass over 1/32 of each matrix per run, which one token at a time is a
   * third of what a run reads and writes. Measured there (AVX-512 EPYC, 2 threads), held at load
   * against made per run: 64-token prefill 6.2 vs 7.0 s, decoding 1.89 vs 0.91 tok/s, peak RSS
   * of a 64-token lens 6.5 vs 5.2 GB (of a plain generation 7.6 vs 6.2 GB, the folding at load).
   *
   * So a model holds them when it can: when they are small (at most 512 MiB: every model up to a
   * few billion parameters), or when the weights with them take at most half of this machine's
   * memory (the 8B on a 16 GB machine or more). A bigger model, or the 8B on an 8 GB laptop, makes
   * them per run. The rule depends on the model and the machine, never on --max-memory, so a
   * streamed run gives exactly the in-memory run's numbers (the two ways agree to 2.4e-5, not
   * bit for bit). LOGIT_LENS_SCALES_AT_LOAD=1 / =0 forces either way.
   */
  private scalesPerRun(): boolean {
    if (this.perRun === undefined) {
      const forced = process.env["LOGIT_LENS_SCALES_AT_LOAD"];
      let folded = 0;
      for (const e of this.index.values()) if (e.quant) folded += e.quant.residentBytes - e.length;
      const fits = folded <= 512 * 2 ** 20 || this.bytes + folded <= os.totalmem() / 2;
      this.perRun = forced === "1" ? false : forced === "0" ? true : !fits;
    }
    return this.perRun;
  }

  /**
   * A tensor as fp32 in its Hugging Face layout, dequantized from the source file as ggml does
   * (for tests, reference exports and analyses that need plain numbers).
   */
  tensorF32(name: string): { data: Float32Array; shape: number[] } {
    const entry = this.entries.get(name);
    if (!entry) throw new UserError(`model is missing tensor '${name}'`);
    const data = readTensorF32(entry.ref);
    return entry.transform ? entry.transform.apply(data, entry.ref.shape) : { data, shape: entry.ref.shape };
  }

  /**
   * Whether `rowsF32` can give rows of this matrix: one kept quantized or 16-bit, read from its
   * source file as it lies there (no transform, which would need the whole tensor).
   */
  readsRows(name: string): boolean {
    const entry = this.entries.get(name);
    return !!entry && !entry.transform && entry.ref.shape.length === 2 && (this.isQuantized(name) || this.isHalf(name));
  }

  /**
   * Rows [first, end) of a matrix as fp32 into `out`, dequantized from the source file as ggml
   * does (`readsRows` must hold). Returns the raw-bytes buffer, to pass back as `scratch`.
   */
  rowsF32(name: string, first: number, end: number, out: Float32Array, scratch?: Uint8Array): Uint8Array {
    const entry = this.entries.get(name);
    if (!entry || !this.readsRows(name)) throw new Error(`rowsF32: ${name} cannot be read by rows`);
    return readRowsF32(entry.ref, first, end, out, scratch);
  }

  /** An F16/BF16 matrix kept 16-bit. */
  isHalf(name: string): boolean {
    return !!this.index.get(name)?.half;
  }

  isQuantized(name: string): boolean {
    return !!this.index.get(name)?.quant;
  }

  /** The tensor's element type in its source file (F32, F16, Q4_K, ...). */
  sourceDtype(name: string): string | undefined {
    return this.entries.get(name)?.ref.dtype;
  }

  /** Bytes of weights.bin, the size of what the graphs map. */
  get bytes(): number {
    let end = 0;
    for (const e of this.index.values()) {
      const q = e.quant;
      for (const x of [e, q?.d, q?.sc, q?.m, q?.negDmin, q?.mc]) if (x) end = Math.max(end, x.offset + x.length);
    }
    return end;
  }

  /**
   * Converts (once) and indexes the weights. `sources` are the files the weights come from: their
   * identity (path, size, mtime) keys the cache directory under `cacheRoot/compiled/`.
   */
  /**
   * `dequantize`: convert every tensor to fp32 (the old layout: for exact fp32 comparisons).
   * `bytePlanes`: matrices whose 8-bit formats (Q8_0, Q6_K, Q5, IQ4) are stored as one byte plane
   * instead of two nibble planes (the head: block-quant.ts CompactQuantized.bytes8).
   */
  static async open(entries: Map<string, WeightEntry>, sources: string[], cacheRoot: string, progress: Progress, dequantize = false, bytePlanes: ReadonlySet<string> = new Set()): Promise<WeightStore> {
    const key = crypto.createHash("sha256");
    key.update(`v${FORMAT_VERSION}\n`);
    for (const file of sources) {
      const real = fs.realpathSync(file);
      const st = fs.statSync(real);
      key.update(`${real}\n${st.size}\n${st.mtimeMs}\n`);
    }
    for (const [name, e] of [...entries].sort(([a], [b]) => (a < b ? -1 : 1))) {
      key.update(`${name}:${e.ref.name}:${e.ref.dtype}:${e.transform?.id ?? ""}:${keepsQuantized(e, dequantize) ? (bytePlanes.has(name) ? "q8" : "q") : keepsHalf(e, dequantize) ? "h" : "f"}\n`);
    }
    const dir = path.join(cacheRoot, "compiled", key.digest("hex").slice(0, 24));
    const store = new WeightStore(dir, entries, dequantize, bytePlanes);
    if (!store.loadIndex()) await store.convert(progress);
    return store;
  }

  private loadIndex(): boolean {
    const indexPath = path.join(this.dir, "weights.json");
    const binPath = path.join(this.dir, "weights.bin");
    try {
      const parsed = JSON.parse(fs.readFileSync(indexPath, "utf8")) as { size: number; tensors: Record<string, IndexEntry> };
      if (fs.statSync(binPath).size !== parsed.size) return false;
      this.index = new Map(Object.entries(parsed.tensors));
      return [...this.entries.keys()].every((n) => this.index.has(n));
    } catch {
      return false;
    }
  }

  /** Writes a compact matrix's codes; returns where they lie. */
  private writeCodes(q: CompactQuantized, write: (bytes: Uint8Array) => Extent): NonNullable<IndexEntry["quant"]> {
    const bytes = (a: Uint8Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    return {
      blockSize: q.blockSize,
      twoPlanes: q.twoPlanes,
      bytes8: q.bytes8,
      group: q.group,
      zeroPoints: q.zeroPoints,
      // What onnxruntime holds once the codes are expanded: 4-bit planes and fp32 scales and mins.
      residentBytes: residentBytes(q),
      d: write(bytes(q.d)),
      sc: q.sc ? { ...write(q.sc), signed: !!q.scSigned } : undefined,
      m: q.m ? write(bytes(q.m)) : undefined,
      negDmin: q.negDmin ? write(bytes(q.negDmin)) : undefined,
      mc: q.mc ? write(q.mc) : undefined,
    };
  }

  private async convert(progress: Progress): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    const tmp = path.join(this.dir, `weights.bin.${process.pid}.partial`);
    const fd = fs.openSync(tmp, "w");
    const index: Record<string, IndexEntry> = {};
    let offset = 0;
    const total = [...this.entries.values()].reduce((s, e) => s + e.ref.byteLength, 0);
    let done = 0;
    progress.start("preparing weights (once per model)", total, "bytes");
    const write = (bytes: Uint8Array): Extent => {
      const align = bytes.length >= SMALL ? PAGE : 64;
      offset = Math.ceil(offset / align) * align;
      let written = 0;
      while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written, offset + written);
      const at = { offset, length: bytes.length };
      offset += bytes.length;
      return at;
    };
    const asBytes = (a: Float32Array | Uint8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    // Quantized tensors are repacked ahead by worker threads (repack-pool.ts) while this thread
    // writes the finished ones in order; at most REPACK_AHEAD_BYTES of source blocks are in flight.
    const entries = [...this.entries];
    const quantized = entries.map(([, e]) => keepsQuantized(e, this.dequantize));
    const quantizedBytes = entries.reduce((sum, [, e], i) => sum + (quantized[i] ? e.ref.byteLength : 0), 0);
    const workers = repackWorkerCount(quantizedBytes);
    const pool = workers > 0 ? new RepackPool(workers) : undefined;
    const ahead = new Map<number, Promise<CompactQuantized>>();
    let next = 0;
    let inFlight = 0;
    const startAhead = (from: number) => {
      for (next = Math.max(next, from); pool && next < entries.length && (ahead.size === 0 || inFlight < REPACK_AHEAD_BYTES); next++) {
        const order = quantized[next];
        if (!order) continue;
        const ref = entries[next]![1].ref;
        const [rows, cols] = ref.shape as [number, number];
        const job = pool.repack(ref, rows, cols, order === true ? undefined : order, this.bytePlanes.has(entries[next]![0]));
        job.catch(() => {}); // awaited in order below; a rejection must not go unhandled meanwhile
        ahead.set(next, job);
        inFlight += ref.byteLength;
      }
    };
    try {
      for (const [i, [name, entry]] of entries.entries()) {
        startAhead(i);
        const rowOrder = quantized[i];
        if (rowOrder) {
          const [rows, cols] = entry.ref.shape as [number, number];
          const job = ahead.get(i);
          ahead.delete(i);
          const q = job ? await job : compactRepack(entry.ref.dtype, readTensorBytes(entry.ref), rows, cols, rowOrder === true ? undefined : rowOrder, this.bytePlanes.has(name));
          if (job) inFlight -= entry.ref.byteLength;
          index[name] = { ...write(q.data), shape: [rows, cols], quant: this.writeCodes(q, write) };
        } else if (keepsHalf(entry, this.dequantize)) {
          const order = keepsHalf(entry, this.dequantize);
          const raw = order === true ? readTensorBytes(entry.ref) : reorderRows(readTensorBytes(entry.ref), entry.ref.shape[0]!, order as Int32Array);
          index[name] = { ...write(raw), shape: entry.ref.shape, half: entry.ref.dtype === "F16" ? "float16" : "bfloat16" };
        } else {
          let data = readTensorF32(entry.ref);
          let shape = entry.ref.shape;
          if (entry.transform) ({ data, shape } = entry.transform.apply(data, shape));
          index[name] = { ...write(asBytes(data)), shape };
        }
        done += entry.ref.byteLength;
        progress.update(done);
        // Let the event loop breathe (progress redraws, signals) between big tensors.
        await new Promise((r) => setImmediate(r));
      }
      fs.closeSync(fd);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw e;
    } finally {
      await pool?.close();
    }
    fs.renameSync(tmp, path.join(this.dir, "weights.bin"));
    fs.writeFileSync(path.join(this.dir, "weights.json"), JSON.stringify({ size: fs.statSync(path.join(this.dir, "weights.bin")).size, tensors: index }));
    this.index = new Map(Object.entries(index));
    progress.done(`${(offset / 1048576).toFixed(0)} MiB`);
  }
}
