/**
 * A loaded model: configuration, tokenizer, converted weights, and forward sessions that expose
 * hook points. Loading never runs the network: `resolveModelSource` (loading/resolve.ts) fetches.
 */
import fs from "node:fs";
import path from "node:path";
import type ort from "onnxruntime-node";
import type { ModelConfig } from "../architectures/config.js";
import { FORWARD_BUILDERS, checkTensors } from "../architectures/index.js";
import { allHookNames, standardInputs, type LogitsOutput } from "../architectures/forward.js";
import type { WeightSource } from "../architectures/layers.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { readGguf, type GgufFile } from "../loading/gguf.js";
import { configFromGguf, ggufDisplayName, weightsFromGguf } from "../loading/gguf-model.js";
import { readHfConfig, weightsFromHfFolder } from "../loading/hf-model.js";
import { WeightStore, type WeightEntry } from "../loading/weight-store.js";
import { cacheRoot } from "../loading/cache.js";
import type { Progress } from "../progress.js";
import { UserError } from "../errors.js";
import type { LensTokenizer } from "../tokens/tokenizer.js";
import { loadTokenizerFromHfFolder } from "../tokens/tokenizer.js";
import { tokenizerFromGguf } from "../tokens/gguf-tokenizer.js";
import { causalMask, inverseFrequencies, rotaryTables } from "./positions.js";

export type ModelSource = { kind: "gguf"; path: string; displayName?: string } | { kind: "hf-folder"; dir: string; displayName?: string };

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

export class ForwardSession {
  constructor(readonly model: LoadedModel, private readonly session: ort.InferenceSession, readonly hooks: string[], readonly logits: LogitsOutput) {}

  /** Runs `ids` after the cached context (if any). Hooks are [T, hidden] per name. */
  async run(ids: number[], cache?: KvCache): Promise<ForwardResult> {
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
    const out = await runSession(this.session, feeds, "forward graph");
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

export class LoadedModel {
  readonly invFreqGlobal: Float32Array;
  readonly invFreqLocal: Float32Array;
  private sessions = new Map<string, Promise<ForwardSession>>();

  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: LensTokenizer,
    readonly store: WeightStore,
    readonly info: ModelInfo,
    readonly gguf?: GgufFile,
  ) {
    const theta = config.ropeTheta ?? 10000;
    this.invFreqGlobal = inverseFrequencies(config, theta, true);
    // Gemma 3's local layers use their own base and no scaling.
    this.invFreqLocal = config.ropeLocalTheta ? inverseFrequencies(config, config.ropeLocalTheta, false) : this.invFreqGlobal;
  }

  /** Opens and converts (once) the model's weights, then returns it ready to run. */
  /**
   * `dequantize`: hold every weight as fp32 instead of keeping quantized matrices quantized (the
   * arithmetic of an fp32 model with the same dequantized weights; several times the memory).
   */
  static async load(source: ModelSource, progress: Progress, options: { dequantize?: boolean } = {}): Promise<LoadedModel> {
    const files = await openModelFiles(source);
    const store = await WeightStore.open(files.entries, files.files, cacheRoot(), progress, options.dequantize ?? false);
    return new LoadedModel(files.config, files.tokenizer, store, files.info, files.gguf);
  }

  /**
   * A forward session exposing `hooks` (TransformerLens names) and optionally logits (`true` or
   * "all": every new position; "last": the last one only, as generation needs). Cached.
   */
  forward(hooks: string[], logitsWanted: boolean | LogitsOutput = false): Promise<ForwardSession> {
    const logits: LogitsOutput = logitsWanted === true ? "all" : logitsWanted === false ? "none" : logitsWanted;
    const known = new Set(allHookNames(this.config));
    for (const h of hooks) if (!known.has(h)) throw new UserError(`unknown hook point '${h}' for this ${this.config.nLayers}-layer ${this.config.architecture} model`);
    const key = `${hooks.join(",")}|${logits}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = (async () => {
        const g = new GraphBuilder("forward");
        const inputs = standardInputs(g, this.config);
        FORWARD_BUILDERS[this.config.architecture](g, this.config, new GraphWeights(g, this.store), inputs, { hooks: new Set(hooks), logits });
        return new ForwardSession(this, await createSession(g, this.store.dir), hooks, logits);
      })();
      this.sessions.set(key, s);
    }
    return s;
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
  gguf?: GgufFile;
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
      gguf,
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
