/**
 * A loaded model: configuration, tokenizer, converted weights, and forward sessions that expose
 * hook points. Loading never runs the network: `resolveModelSource` (sources/resolve.ts) fetches.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type ort from "onnxruntime-node";
import type { ModelConfig } from "../architectures/config.js";
import { FORWARD_BUILDERS, checkTensors, unembeddingOf } from "../architectures/index.js";
import { allHookNames, blockHook, standardInputs, type LogitsOutput } from "../architectures/forward.js";
import { externalBytes } from "../graph/slice.js";
import { checkModelConfig, checkTokenizerFitsModel } from "../formats/sanity.js";
import { recordCompiledSource, sweepStalePartials } from "../sources/cache-admin.js";
import type { WeightSource } from "../architectures/layers.js";
import { GraphBuilder, defaultQuantizedArithmetic, isQuantizedExternal, type QuantizedArithmetic, type Value } from "../graph/builder.js";
import { ort as runtime, type SessionTuning } from "../graph/session.js";
import { readGguf } from "../formats/gguf.js";
import { configFromGguf, ggufDisplayName, weightsFromGguf } from "../formats/gguf-model.js";
import { readHfConfig, weightsFromHfFolder } from "../formats/hf-model.js";
import { WeightStore, type WeightEntry } from "../formats/weight-store.js";
import { cacheRoot } from "../sources/cache.js";
import type { ModelSource } from "../sources/resolve.js";
import type { Progress } from "../progress.js";
import { UserError } from "../errors.js";
import type { LensTokenizer } from "../tokens/tokenizer.js";
import { loadTokenizerFromHfFolder } from "../tokens/tokenizer.js";
import { tokenizerFromGguf } from "../tokens/gguf-tokenizer.js";
import { inverseFrequencies } from "./positions.js";

/** Name of the graph input that carries the lens's fp32 unembedding copy. */
export const LENS_UNEMBEDDING_INPUT = "unembedding_f32";

export interface LoadOptions {
  /**
   * Hold every weight as fp32 instead of keeping quantized matrices quantized (the arithmetic of an
   * fp32 model with the same dequantized weights; several times the memory).
   */
  dequantize?: boolean;
  /** Memory budget in bytes for the model's sessions; default 75 % of the memory free now. */
  maxMemory?: number;
  /** Where the streaming messages go ("running layers a-b from disk", a budget smaller than one block). */
  progress?: Progress;
  /**
   * Multiply quantized matrices with int8 activations (MatMulNBits' int8 path, llama.cpp's trade):
   * about 2x faster decoding on big models, at the cost of exactness (the forward pass's hidden
   * states move; the lens's own products stay fp32). Default: exact fp32 arithmetic, unless
   * LOGIT_LENS_INT8=1.
   */
  int8?: boolean;
}

/** 75 % of the memory available now (what a run can take without pushing others out). */
/** The lens's working buffers beside its unembedding (see unembeddingBytes). */
const LENS_WORKING_BYTES = 384 * 2 ** 20;

export function defaultMemoryBudget(): number {
  return Math.floor(0.75 * os.freemem());
}

const silent: Progress = { start() {}, update() {}, done() {}, info() {} };

import { ForwardSession } from "./forward-session.js";
import { LayerBlocks, cutIntoPieces, type Piece } from "./layer-blocks.js";
export { ForwardSession, truncateCache, type ForwardResult, type KvCache, type ResidualPatch } from "./forward-session.js";

/** Summary for `inspect` and the JSON header. */
export interface ModelInfo {
  name: string;
  source: string;
  format: "gguf" | "safetensors";
  fileSize: number;
  tensorTypes: Record<string, number>;
  parameters: number;
}

class GraphWeights implements WeightSource {
  private values = new Map<string, Value>();
  constructor(private readonly g: GraphBuilder, private readonly store: WeightStore) {}
  has(name: string): boolean {
    return this.store.has(name);
  }
  get(name: string): Value {
    let v = this.values.get(name);
    if (!v) {
      if (!this.store.has(name)) throw new UserError(`model is missing tensor '${name}' needed by the ${this.g.name} graph`);
      const ext = this.store.external(name);
      v = isQuantizedExternal(ext) ? this.g.quantizedWeight(name, ext) : ext.half ? this.g.halfWeight(name, ext, ext.half) : this.g.weight(name, ext);
      this.values.set(name, v);
    }
    return v;
  }
}

export class LoadedModel {
  readonly invFreqGlobal: Float32Array;
  readonly invFreqLocal: Float32Array;
  private sessions = new Map<string, ForwardSession>();
  /** Open forward sessions and the memory budget they share. */
  readonly blocks: LayerBlocks;

  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: LensTokenizer,
    readonly store: WeightStore,
    readonly info: ModelInfo,
    readonly options: LoadOptions,
  ) {
    this.blocks = new LayerBlocks(options.maxMemory ?? defaultMemoryBudget(), store.dir, options.progress ?? silent);
    const theta = config.ropeTheta ?? 10000;
    this.invFreqGlobal = inverseFrequencies(config, theta, true);
    // Gemma 3's local layers use their own base and no scaling.
    this.invFreqLocal = config.ropeLocalTheta ? inverseFrequencies(config, config.ropeLocalTheta, false) : this.invFreqGlobal;
  }

  /** How the forward pass multiplies quantized matrices (LoadOptions.int8). */
  get quantizedArithmetic(): QuantizedArithmetic {
    return this.options.int8 === undefined ? defaultQuantizedArithmetic() : this.options.int8 ? "int8" : "fp32";
  }

  /** Opens and converts (once) the model's weights, then returns it ready to run. */
  static async load(source: ModelSource, progress: Progress, options: LoadOptions = {}): Promise<LoadedModel> {
    const files = await openModelFiles(source);
    checkModelConfig(files.config, files.info.name);
    checkTokenizerFitsModel(files.tokenizer, files.config, files.info.name);
    // Partial conversions of processes that were killed would otherwise stay forever.
    sweepStalePartials();
    // The head in an 8-bit format is stored as one byte plane: it multiplies on the int8 path
    // over exact slices (graph/builder.ts linear), 1.35-1.85x faster than two nibble planes there
    // (measured on the heads of Gemma 3, SmolLM2 and the Llama-3-8B shape).
    const head = new Set([unembeddingOf(files.config).matrix]);
    const store = await WeightStore.open(files.entries, files.files, cacheRoot(), progress, options.dequantize ?? false, head);
    recordCompiledSource(store.dir, files.files, files.info.name); // for `cache list|prune`
    return new LoadedModel(files.config, files.tokenizer, store, files.info, { progress, ...options });
  }

  /**
   * A forward session exposing `hooks` (TransformerLens names) and optionally logits (`true` or
   * "all": every new position; "last": the last one only, as generation needs). Cached.
   */
  forward(hooks: string[], logitsWanted: boolean | LogitsOutput = false, options: { cutsAt?: number[] } = {}): Promise<ForwardSession> {
    const logits: LogitsOutput = logitsWanted === true ? "all" : logitsWanted === false ? "none" : logitsWanted;
    const known = new Set(allHookNames(this.config));
    for (const h of hooks) if (!known.has(h)) throw new UserError(`unknown hook point '${h}' for this ${this.config.nLayers}-layer ${this.config.architecture} model`);
    const cuts = new Set(options.cutsAt ?? []);
    for (const c of cuts) if (!Number.isInteger(c) || c < 0 || c > this.config.nLayers) throw new UserError(`cannot cut at layer ${c}: this model has layers 0-${this.config.nLayers - 1} (${this.config.nLayers} is the final residual)`);
    const key = `${hooks.join(",")}|${logits}|${[...cuts].sort((a, b) => a - b).join(",")}`;
    let s = this.sessions.get(key);
    if (!s) {
      const g = new GraphBuilder("forward");
      g.quantizedArithmetic = this.quantizedArithmetic;
      const inputs = standardInputs(g, this.config);
      // The residual at every layer boundary is asked for too, so that the graph can be cut there.
      const boundaries = [...Array.from({ length: this.config.nLayers }, (_, l) => blockHook(l, "hook_resid_pre")), blockHook(this.config.nLayers - 1, "hook_resid_post")];
      FORWARD_BUILDERS[this.config.architecture](g, this.config, new GraphWeights(g, this.store), inputs, { hooks: new Set([...hooks, ...boundaries]), logits });
      // What the lens session will hold beside the forward pieces (the unembedding) is kept aside.
      const lensShare = LayerBlocks.cost({ bytes: this.unembeddingBytes() } as Piece);
      const pieces = cutIntoPieces(g, this.config, hooks, logits, Math.max(0, this.blocks.budget - lensShare), cuts);
      this.blocks.noteFloor(pieces, this.config.nLayers);
      s = new ForwardSession(this, pieces, hooks, logits);
      this.sessions.set(key, s);
    }
    return Promise.resolve(s);
  }

  /** Closes a forward session's onnxruntime sessions and forgets it (for one-off cuts, as a patching sweep makes). */
  async release(session: ForwardSession): Promise<void> {
    for (const [key, s] of this.sessions) if (s === session) this.sessions.delete(key);
    await session.close();
  }

  private lensMatrix?: ort.Tensor | null;

  /**
   * The unembedding as fp32, when it is quantized (or 16-bit) and at most 1 GiB as fp32 (SmolLM2
   * 113 MB, Gemma 3 270M 671 MB; not an 8B's 2.1 GB), for the graphs that multiply it with many
   * rows at once over the whole vocabulary (the exact-KL view, the tuned lens, sweeps,
   * attribution): onnxruntime's fp32 GEMM runs that 1.6x (4-bit) to 3x (8-bit as two planes)
   * faster than MatMulNBits at lens shapes (measured on an AVX2 EPYC, [256 x 4096] @ [4096 x
   * 16384]). The lens itself reads the unembedding a tile at a time and keeps such a copy only
   * when it is small (`smallLensUnembedding`). The rule depends on the model only, never on the
   * memory budget, so a streamed run gives exactly the in-memory run's numbers. It lives in memory
   * only, never in the cache. LOGIT_LENS_LENS_FP32=0 turns it off.
   */
  lensUnembedding(): ort.Tensor | undefined {
    if (this.lensMatrix === undefined) {
      const name = unembeddingOf(this.config).matrix;
      const bytes = this.config.vocabSize * this.config.hidden * 4;
      const wanted = (this.store.isQuantized(name) || this.store.isHalf(name)) && bytes <= 2 ** 30 && process.env["LOGIT_LENS_LENS_FP32"] !== "0";
      this.lensMatrix = wanted ? new runtime.Tensor("float32", this.store.tensorF32(name).data, [this.config.vocabSize, this.config.hidden]) : null;
    }
    return this.lensMatrix ?? undefined;
  }

  /**
   * Whether the lens's tiles read the fp32 copy (`lensUnembedding`) rather than dequantizing each
   * tile from the stored form: only when the copy is at most 256 MiB (SmolLM2's 113 MB: its tiles
   * then cost one copy instead of a dozen dequantizing passes, 10 % of its lens), so that a big
   * vocabulary (Gemma 3's 671 MB copy, more than the rest of that model) is never held twice.
   */
  smallLensUnembedding(): boolean {
    return this.config.vocabSize * this.config.hidden * 4 <= 256 * 2 ** 20 && this.lensUnembedding() !== undefined;
  }

  /**
   * The model's weights for a graph that reads the unembedding as the lens does: the fp32 copy
   * (`lensUnembedding`) as the graph input LENS_UNEMBEDDING_INPUT when there is one, else the
   * weights file. Such a graph is fed `lensFeeds()` and opened with `lensTuning()`.
   */
  lensWeightsFor(g: GraphBuilder): WeightSource {
    const w = this.weightsFor(g);
    if (!this.lensUnembedding()) return w;
    const matrix = unembeddingOf(this.config).matrix;
    const input = g.input(LENS_UNEMBEDDING_INPUT, "float32", [this.config.vocabSize, this.config.hidden]);
    return { has: (name) => w.has(name), get: (name) => (name === matrix ? input : w.get(name)) };
  }

  /** Inputs a `lensWeightsFor` graph needs besides its own. */
  lensFeeds(): Record<string, ort.Tensor> {
    const fed = this.lensUnembedding();
    return fed ? { [LENS_UNEMBEDDING_INPUT]: fed } : {};
  }

  /**
   * Session options for a `lensWeightsFor` graph. A quantized unembedding needs prepacking
   * (MatMulNBits without its packed form is 6x slower); an fp32 one is read unpacked, which spares
   * a transient second copy of it (measured: Gemma's 262k x 640, peak 1.9 GB -> 1.4 GB).
   */
  lensTuning(): SessionTuning {
    return { disablePrepacking: this.lensUnembedding() !== undefined || !this.store.isQuantized(unembeddingOf(this.config).matrix) };
  }

  /**
   * Bytes the lens holds beside the forward pieces: the unembedding as stored (the lens reads it a
   * tile of the vocabulary at a time, dequantizing each tile once per pass: lens/logit-lens.ts)
   * and its working buffers (a 64 MiB fp32 tile, the file's bytes for it, the product's packed
   * copy of it, and 32 MiB of [rows x tile] buffers per run).
   */
  unembeddingBytes(): number {
    if (this.smallLensUnembedding()) return this.config.vocabSize * this.config.hidden * 4 + LENS_WORKING_BYTES;
    const g = new GraphBuilder("probe");
    g.quantizedArithmetic = this.quantizedArithmetic;
    new GraphWeights(g, this.store).get(unembeddingOf(this.config).matrix);
    return externalBytes(g) + LENS_WORKING_BYTES;
  }

  /** Graph weights bound to a new builder (used by the lens graph). */
  weightsFor(g: GraphBuilder): WeightSource {
    return new GraphWeights(g, this.store);
  }
}

/** What a model's files say, read from headers only (no tensor data): enough for `inspect`. */
export interface ModelFiles {
  config: ModelConfig;
  entries: Map<string, WeightEntry>;
  files: string[];
  tokenizer: LensTokenizer;
  info: ModelInfo;
}

export async function openModelFiles(source: ModelSource): Promise<ModelFiles> {
  const files = await readModelFiles(source);
  // Shapes as they will be after conversion (GPT-2's GGUF projections are transposed back).
  const shapes = new Map<string, { shape: number[]; source: string }>();
  for (const [name, e] of files.entries) {
    const shape = e.transform?.id === "transpose" ? [...e.ref.shape].reverse() : e.ref.shape;
    shapes.set(name, { shape, source: e.ref.name });
  }
  checkTensors(files.config, shapes, source.kind === "gguf" ? source.path : source.dir);
  return files;
}

async function readModelFiles(source: ModelSource): Promise<ModelFiles> {
  if (source.kind === "gguf") {
    const gguf = readGguf(source.path);
    const config = configFromGguf(gguf);
    return {
      config,
      entries: weightsFromGguf(gguf, config),
      files: [source.path],
      tokenizer: tokenizerFromGguf(gguf.metadata),
      info: {
        name: source.displayName ?? ggufDisplayName(gguf) ?? path.basename(source.path, ".gguf"),
        source: source.path,
        format: "gguf",
        fileSize: gguf.fileSize,
        tensorTypes: countTypes(gguf.tensors.map((t) => t.dtype)),
        parameters: gguf.tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0),
      },
    };
  }
  const config = readHfConfig(source.dir);
  const { entries, files } = weightsFromHfFolder(source.dir, config);
  return {
    config,
    entries,
    files,
    tokenizer: await loadTokenizerFromHfFolder(source.dir),
    info: {
      name: source.displayName ?? path.basename(source.dir),
      source: source.dir,
      format: "safetensors",
      fileSize: files.reduce((s, f) => s + fs.statSync(f).size, 0),
      tensorTypes: countTypes([...entries.values()].map((e) => e.ref.dtype)),
      parameters: [...entries.values()].reduce((s, e) => s + e.ref.shape.reduce((a, b) => a * b, 1), 0),
    },
  };
}

function countTypes(types: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of types) out[t] = (out[t] ?? 0) + 1;
  return out;
}
