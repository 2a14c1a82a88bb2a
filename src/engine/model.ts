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
import { externalBytes, sliceGraph, sourceOf } from "../graph/slice.js";
import { checkModelConfig, checkTokenizerFitsModel } from "../formats/sanity.js";
import { recordCompiledSource, sweepStalePartials } from "../sources/cache-admin.js";
import type { WeightSource } from "../architectures/layers.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
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
import { causalMask, inverseFrequencies, rotaryTables } from "./positions.js";

export interface LoadOptions {
  /**
   * Hold every weight as fp32 instead of keeping quantized matrices quantized (the arithmetic of an
   * fp32 model with the same dequantized weights; several times the memory).
   */
  dequantize?: boolean;
  /** Memory budget in bytes for the model's sessions; default 75 % of the memory free now. */
  maxMemory?: number;
  /** Where "loading layers a-b" messages go when the model streams. */
  progress?: Progress;
}

/** 75 % of the memory available now (what a run can take without pushing others out). */
export function defaultMemoryBudget(): number {
  return Math.floor(0.75 * os.freemem());
}

const silent: Progress = { start() {}, update() {}, done() {}, info() {} };

/** Summary for `inspect` and the JSON header. */
export interface ModelInfo {
  name: string;
  source: string;
  format: "gguf" | "safetensors";
  fileSize: number;
  tensorTypes: Record<string, number>;
  parameters: number;
}

/** Per-layer key/value cache, [nKv, past, headDim] each. */
export interface KvCache {
  length: number;
  keys: ort.Tensor[];
  values: ort.Tensor[];
}

export interface ForwardResult {
  hooks: Map<string, Float32Array>;
  logits?: Float32Array;
  cache: KvCache;
}

/** The cache cut back to its first `length` positions (for teacher forcing from an earlier point). */
export function truncateCache(cache: KvCache, length: number): KvCache {
  if (length > cache.length) throw new Error(`cannot truncate a cache of ${cache.length} to ${length}`);
  const cut = (t: ort.Tensor): ort.Tensor => {
    const [heads, past, d] = t.dims as [number, number, number];
    const src = t.data as Float32Array;
    const out = new Float32Array(heads * length * d);
    for (let h = 0; h < heads; h++) out.set(src.subarray(h * past * d, h * past * d + length * d), h * length * d);
    return new runtime.Tensor("float32", out, [heads, length, d]);
  };
  return { length, keys: cache.keys.map(cut), values: cache.values.map(cut) };
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
      v = "scales" in ext ? this.g.quantizedWeight(name, ext) : this.g.weight(name, ext);
      this.values.set(name, v);
    }
    return v;
  }
}

/**
 * One piece of the forward pass: layers [first, end) as their own onnxruntime session (see
 * graph/slice.ts). The embedding rides with the first piece, the final norm and logits with the
 * last. Sessions are opened on demand and closed by the memory budget (LayerBlocks).
 */
interface Piece {
  first: number;
  end: number;
  graph: GraphBuilder;
  /** The residual value the piece starts from (a graph input), absent for the first piece. */
  cutInput?: string;
  /** Weight bytes it maps. */
  bytes: number;
  session?: Promise<ort.InferenceSession>;
  lastUsed: number;
  announced?: boolean;
}

export interface ResidualPatch {
  layer: number;
  position: number;
  vector: Float32Array;
}

export class ForwardSession {
  constructor(
    readonly model: LoadedModel,
    private readonly pieces: Piece[],
    readonly hooks: string[],
    readonly logits: LogitsOutput,
  ) {}

  /** How many blocks of layers the pass runs as (1 when the model fits its memory budget). */
  get pieceCount(): number {
    return this.pieces.length;
  }

  /**
   * Runs `ids` after the cached context (if any). Hooks are [T, hidden] per name. `patches`
   * replace the residual entering layer `layer` (nLayers: the final residual) at `position` (index
   * among these new tokens) with `vector`: activation patching. Each patched layer must be one of
   * the session's `cutsAt`.
   */
  async run(ids: number[], cache?: KvCache, patches: ResidualPatch[] = []): Promise<ForwardResult> {
    const cfg = this.model.config;
    const past = cache?.length ?? 0;
    const T = ids.length;
    if (T === 0) throw new UserError("nothing to run: the token sequence is empty");
    if (past + T > cfg.maxPositions) {
      throw new UserError(`sequence of ${past + T} tokens is longer than the model's context (${cfg.maxPositions})`);
    }
    const feeds: Record<string, ort.Tensor> = {};
    feeds["input_ids"] = new runtime.Tensor("int64", BigInt64Array.from(ids, (i) => BigInt(i)), [T]);
    feeds["position_ids"] = new runtime.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(past + i)), [T]);
    const d = cfg.headDim;
    const global = rotaryTables(this.model.invFreqGlobal, past, T);
    const local = rotaryTables(this.model.invFreqLocal, past, T);
    feeds["rope_cos"] = new runtime.Tensor("float32", global.cos, [T, d]);
    feeds["rope_sin"] = new runtime.Tensor("float32", global.sin, [T, d]);
    feeds["rope_cos_local"] = new runtime.Tensor("float32", local.cos, [T, d]);
    feeds["rope_sin_local"] = new runtime.Tensor("float32", local.sin, [T, d]);
    feeds["mask_full"] = new runtime.Tensor("float32", causalMask(past, T), [T, past + T]);
    feeds["mask_sliding"] = new runtime.Tensor("float32", causalMask(past, T, cfg.slidingWindow), [T, past + T]);
    for (let l = 0; l < cfg.nLayers; l++) {
      feeds[`past_key.${l}`] = cache?.keys[l] ?? new runtime.Tensor("float32", new Float32Array(0), [cfg.nKvHeads, 0, d]);
      feeds[`past_value.${l}`] = cache?.values[l] ?? new runtime.Tensor("float32", new Float32Array(0), [cfg.nKvHeads, 0, d]);
    }
    const out: Record<string, ort.Tensor> = {};
    let resid: ort.Tensor | undefined;
    for (const p of patches) {
      if (!this.pieces.some((piece) => piece.first === p.layer)) throw new UserError(`cannot patch layer ${p.layer}: the forward session was not cut there (cutsAt)`);
      if (!(p.position >= 0 && p.position < T) || p.vector.length !== cfg.hidden) throw new UserError(`patch at layer ${p.layer}: position ${p.position} or vector length ${p.vector.length} does not fit ${T} tokens x ${cfg.hidden}`);
    }
    for (const piece of this.pieces) {
      const mine = patches.filter((p) => p.layer === piece.first);
      if (mine.length) {
        const data = Float32Array.from(resid!.data as Float32Array);
        for (const p of mine) data.set(p.vector, p.position * cfg.hidden);
        resid = new runtime.Tensor("float32", data, [T, cfg.hidden]);
      }
      const session = await this.model.blocks.open(piece, this.pieces.length > 1 ? layerRange(piece, cfg.nLayers) : undefined);
      const pieceFeeds: Record<string, ort.Tensor> = {};
      for (const name of session.inputNames) pieceFeeds[name] = name === piece.cutInput ? resid! : feeds[name]!;
      const result = await runSession(session, pieceFeeds, this.pieces.length > 1 ? `forward graph (${layerRange(piece, cfg.nLayers)})` : "forward graph");
      Object.assign(out, result);
      resid = result["resid_out"];
      this.model.blocks.release(piece);
    }
    const hooks = new Map<string, Float32Array>();
    for (const h of this.hooks) hooks.set(h, out[h]!.data as Float32Array);
    const keys: ort.Tensor[] = [];
    const values: ort.Tensor[] = [];
    for (let l = 0; l < cfg.nLayers; l++) {
      keys.push(out[`present_key.${l}`]!);
      values.push(out[`present_value.${l}`]!);
    }
    return { hooks, logits: this.logits !== "none" ? (out["logits"]!.data as Float32Array) : undefined, cache: { length: past + T, keys, values } };
  }
}

function layerRange(p: { first: number; end: number }, nLayers: number): string {
  const name = (s: number) => (s < 0 ? "embedding" : s >= nLayers ? "final norm" : `layer ${s}`);
  return p.end - p.first === 1 ? name(p.first) : `${name(p.first)} to ${name(p.end - 1)}`;
}

/**
 * Which pieces' sessions stay open, within the memory budget. A piece that does not fit beside
 * the others closes the least recently used ones first; when even all of them closed would not
 * make room, it runs alone (the model streams from disk a block of layers at a time).
 * Session memory is counted as twice the weights it maps: onnxruntime maps the file and keeps a
 * packed copy of every quantized matrix (measured on SmolLM2 and the 8B shape, see BENCHMARKS.md).
 */
export class LayerBlocks {
  private readonly opened = new Set<Piece>();
  private clock = 0;

  constructor(readonly budget: number, private readonly dir: string, private readonly progress: Progress) {}

  /** Bytes a piece is expected to hold in memory once its session is open. */
  static cost(piece: Piece): number {
    return 2 * piece.bytes;
  }

  /** Bytes held by open sessions now. */
  get held(): number {
    let total = 0;
    for (const p of this.opened) total += LayerBlocks.cost(p);
    return total;
  }

  async open(piece: Piece, label?: string): Promise<ort.InferenceSession> {
    piece.lastUsed = ++this.clock;
    if (!piece.session) {
      const need = LayerBlocks.cost(piece);
      const byAge = [...this.opened].sort((a, b) => a.lastUsed - b.lastUsed);
      while (byAge.length && this.held + need > this.budget) await this.close(byAge.shift()!);
      // Said once per piece: a streamed model reloads every piece on every forward pass.
      if (label && !piece.announced) this.progress.info(`running ${label} from disk, a block at a time (${(piece.bytes / 2 ** 20).toFixed(0)} MiB; budget ${(this.budget / 2 ** 30).toFixed(1)} GiB)`);
      piece.announced = true;
      piece.session = createSession(piece.graph, this.dir);
      this.opened.add(piece);
    }
    return piece.session;
  }

  /** After a piece ran: close it at once if it alone is over the budget's share left. */
  release(piece: Piece): void {
    if (this.held > this.budget) void this.close(piece);
  }

  private async close(piece: Piece): Promise<void> {
    const s = piece.session;
    piece.session = undefined;
    this.opened.delete(piece);
    if (s) await (await s).release();
  }
}

/**
 * Cuts a forward graph into pieces of consecutive stages whose weights fit `budget` each (all in
 * one piece when the whole model fits). Stages: -1 the embedding, 0..L-1 the layers, L the final
 * norm and logits. Cuts happen at the residual stream entering a stage ("boundary" 0..L), the only
 * value that crosses from one stage to the next. `cuts` are boundaries where a piece must start
 * (activation patching replaces the residual there).
 */
function cutIntoPieces(g: GraphBuilder, cfg: ModelConfig, hooks: string[], logits: LogitsOutput, budget: number, cuts: ReadonlySet<number>): Piece[] {
  const L = cfg.nLayers;
  const boundary = (b: number) => sourceOf(g, b < L ? blockHook(b, "hook_resid_pre") : blockHook(L - 1, "hook_resid_post"));
  const stageOf = (name: string): number => {
    const m = /^(?:blocks|present_key|present_value)\.(\d+)/.exec(name);
    if (m) return Number(m[1]);
    return name === "hook_embed" || name === "hook_pos_embed" ? -1 : L;
  };
  const outputs = [...hooks, ...(logits !== "none" ? ["logits"] : [])];
  for (let l = 0; l < L; l++) outputs.push(`present_key.${l}`, `present_value.${l}`);
  /** Stages [first, end). */
  const piece = (first: number, end: number): Piece => {
    const keep = outputs.filter((o) => stageOf(o) >= first && stageOf(o) < end);
    const graph = sliceGraph(g, {
      name: `forward-${first}-${end}`,
      keep,
      cut: first >= 0 ? { value: boundary(first), shape: ["T", cfg.hidden] } : undefined,
      expose: end <= L ? [{ value: boundary(end), as: "resid_out" }] : [],
    });
    return { first, end, graph, cutInput: first >= 0 ? boundary(first) : undefined, bytes: externalBytes(graph), lastUsed: 0 };
  };
  if (cuts.size === 0) {
    const whole = piece(-1, L + 1);
    if (LayerBlocks.cost(whole) <= budget) return [whole];
  }
  // Greedy: as many stages per piece as fit (each piece measured as built: the first and last
  // also carry the embedding and the unembedding), never across a required cut.
  const pieces: Piece[] = [];
  let first = -1;
  while (first <= L) {
    let end = first + 1;
    let best = piece(first, end);
    while (end <= L && !cuts.has(end)) {
      const next = piece(first, end + 1);
      if (LayerBlocks.cost(next) > budget) break;
      best = next;
      end++;
    }
    pieces.push(best);
    first = end;
  }
  // A last piece with nothing to give (no logits or final hooks asked for) is not run at all.
  return pieces.filter((p) => p.graph.outputs.length > 0);
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

  /** Opens and converts (once) the model's weights, then returns it ready to run. */
  static async load(source: ModelSource, progress: Progress, options: LoadOptions = {}): Promise<LoadedModel> {
    const files = await openModelFiles(source);
    checkModelConfig(files.config, files.info.name);
    checkTokenizerFitsModel(files.tokenizer, files.config, files.info.name);
    // Partial conversions of processes that were killed would otherwise stay forever.
    sweepStalePartials();
    const store = await WeightStore.open(files.entries, files.files, cacheRoot(), progress, options.dequantize ?? false);
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
      const inputs = standardInputs(g, this.config);
      // The residual at every layer boundary is asked for too, so that the graph can be cut there.
      const boundaries = [...Array.from({ length: this.config.nLayers }, (_, l) => blockHook(l, "hook_resid_pre")), blockHook(this.config.nLayers - 1, "hook_resid_post")];
      FORWARD_BUILDERS[this.config.architecture](g, this.config, new GraphWeights(g, this.store), inputs, { hooks: new Set([...hooks, ...boundaries]), logits });
      // What the lens session will hold beside the forward pieces (the unembedding) is kept aside.
      const lensShare = LayerBlocks.cost({ bytes: this.unembeddingBytes() } as Piece);
      s = new ForwardSession(this, cutIntoPieces(g, this.config, hooks, logits, Math.max(0, this.blocks.budget - lensShare), cuts), hooks, logits);
      this.sessions.set(key, s);
    }
    return Promise.resolve(s);
  }

  private lensMatrix?: ort.Tensor | null;

  /**
   * The unembedding as fp32 for the lens, when it is quantized and small: the lens multiplies it
   * with every layer x position (the hot path), and onnxruntime's fp32 GEMM runs that 1.6x (4-bit)
   * to 3x (8-bit as two planes) faster than MatMulNBits at lens shapes (measured on an AVX2 EPYC,
   * [256 x 4096] @ [4096 x 16384]). Small: at most 1 GiB as fp32 and a quarter of the memory
   * budget (SmolLM2 113 MB, Gemma 3 270M 671 MB; not an 8B's 2.1 GB, which stays quantized). The
   * copy lives in memory only, never in the cache. LOGIT_LENS_LENS_FP32=0 turns it off.
   */
  lensUnembedding(): ort.Tensor | undefined {
    if (this.lensMatrix === undefined) {
      const name = unembeddingOf(this.config).matrix;
      const bytes = this.config.vocabSize * this.config.hidden * 4;
      const wanted = this.store.isQuantized(name) && bytes <= 2 ** 30 && bytes <= this.blocks.budget / 4 && process.env["LOGIT_LENS_LENS_FP32"] !== "0";
      this.lensMatrix = wanted ? new runtime.Tensor("float32", this.store.tensorF32(name).data, [this.config.vocabSize, this.config.hidden]) : null;
    }
    return this.lensMatrix ?? undefined;
  }

  /** Bytes of the final norm and unembedding, which the lens keeps in its own session. */
  unembeddingBytes(): number {
    const g = new GraphBuilder("probe");
    const w = new GraphWeights(g, this.store);
    const u = unembeddingOf(this.config);
    w.get(u.matrix);
    return externalBytes(g);
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
