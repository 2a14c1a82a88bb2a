/**
 * The model's weights as onnxruntime will see them: every tensor fp32, in its Hugging Face name and
 * layout, in one file `weights.bin` inside the model's compiled directory, referenced by the graphs
 * as external data (onnxruntime maps it; nothing is held twice in JS).
 *
 * Why a converted file: onnxruntime only accepts external data by relative path inside the model's
 * own directory (absolute paths and symlinks out of it are refused), and quantized GGUF blocks,
 * F16/BF16 and layout fixes (llama.cpp's permuted q/k rows) need conversion anyway. The conversion
 * runs once per source file and is reused on later loads (keyed by path, size and mtime).
 */
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import type { TensorRef } from "./tensor-ref.js";
import { readTensorF32 } from "./dequantize.js";
import type { ExternalWeight } from "../graph/builder.js";
import type { Progress } from "../progress.js";
import { UserError } from "../errors.js";

/** Bump when the conversion changes, so stale converted files are not reused. */
const FORMAT_VERSION = 1;
const ALIGN = 4096;

export interface TensorTransform {
  /** Identifies the transform in the cache key. */
  id: string;
  apply(data: Float32Array, shape: number[]): { data: Float32Array; shape: number[] };
}

export interface WeightEntry {
  ref: TensorRef;
  transform?: TensorTransform;
}

interface IndexEntry {
  offset: number;
  length: number;
  shape: number[];
}

export class WeightStore {
  private index = new Map<string, IndexEntry>();

  private constructor(readonly dir: string, private readonly entries: Map<string, WeightEntry>) {}

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

  external(name: string): ExternalWeight {
    const e = this.index.get(name);
    if (!e) throw new UserError(`model is missing tensor '${name}'`);
    return { location: "weights.bin", offset: e.offset, length: e.length, shape: e.shape };
  }

  /**
   * Converts (once) and indexes the weights. `sources` are the files the weights come from: their
   * identity (path, size, mtime) keys the cache directory under `cacheRoot/compiled/`.
   */
  static async open(entries: Map<string, WeightEntry>, sources: string[], cacheRoot: string, progress: Progress): Promise<WeightStore> {
    const key = crypto.createHash("sha256");
    key.update(`v${FORMAT_VERSION}\n`);
    for (const file of sources) {
      const real = fs.realpathSync(file);
      const st = fs.statSync(real);
      key.update(`${real}\n${st.size}\n${st.mtimeMs}\n`);
    }
    for (const [name, e] of [...entries].sort(([a], [b]) => (a < b ? -1 : 1))) {
      key.update(`${name}:${e.ref.name}:${e.ref.dtype}:${e.transform?.id ?? ""}\n`);
    }
    const dir = path.join(cacheRoot, "compiled", key.digest("hex").slice(0, 24));
    const store = new WeightStore(dir, entries);
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

  private async convert(progress: Progress): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    const tmp = path.join(this.dir, `weights.bin.${process.pid}.partial`);
    const fd = fs.openSync(tmp, "w");
    const index: Record<string, IndexEntry> = {};
    let offset = 0;
    const total = [...this.entries.values()].reduce((s, e) => s + e.ref.byteLength, 0);
    let done = 0;
    progress.start("converting weights to fp32 (once per model)", total, "bytes");
    try {
      for (const [name, entry] of this.entries) {
        let data = readTensorF32(entry.ref);
        let shape = entry.ref.shape;
        if (entry.transform) ({ data, shape } = entry.transform.apply(data, shape));
        offset = Math.ceil(offset / ALIGN) * ALIGN;
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        let written = 0;
        while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written, offset + written);
        index[name] = { offset, length: bytes.length, shape };
        offset += bytes.length;
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
    }
    fs.renameSync(tmp, path.join(this.dir, "weights.bin"));
    fs.writeFileSync(path.join(this.dir, "weights.json"), JSON.stringify({ size: fs.statSync(path.join(this.dir, "weights.bin")).size, tensors: index }));
    this.index = new Map(Object.entries(index));
    progress.done(`${(offset / 1048576).toFixed(0)} MiB`);
  }
}
