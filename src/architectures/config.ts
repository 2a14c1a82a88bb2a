/**
 * One normalised description of a model's shape and quirks, whatever file it came from
 * (Hugging Face config.json or GGUF metadata). Architecture code reads only this.
 *
 * Each family (src/architectures/<family>.ts) reads its own config keys; this module holds what
 * they share: the `ModelConfig` type, small readers for config.json and GGUF metadata that turn a
 * missing key into a one-line error, and the rotary settings, which every rotary family reads the
 * same way.
 */
import { UserError } from "../errors.js";
import { readTensorF32 } from "../formats/dequantize.js";
import type { GgufValue, TensorRef } from "../formats/tensor-ref.js";
import type { Architecture } from "./index.js";

export type { Architecture } from "./index.js";
export type LayerType = "full" | "sliding";
export type Activation = "silu" | "gelu_tanh" | "gelu";

export interface ModelConfig {
  architecture: Architecture;
  nLayers: number;
  hidden: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  intermediate: number;
  vocabSize: number;
  maxPositions: number;
  normEps: number;
  activation: Activation;
  /** Rotary base for full-attention layers (absent for learned positions: gpt2). */
  ropeTheta?: number;
  /** Rotary base for sliding-window layers where it differs (Gemma 3). */
  ropeLocalTheta?: number;
  /** Llama 3 style frequency scaling, as in transformers' `rope_scaling` with rope_type "llama3". */
  ropeLlama3?: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
  /**
   * Per-frequency divisors of the inverse frequencies, as llama.cpp stores Llama 3 scaling in GGUF
   * (`rope_freqs.weight`, written by convert_hf_to_gguf.py from the same llama3 parameters).
   */
  ropeFreqFactors?: number[];
  /**
   * LongRoPE (Phi-3, `rope_type` "longrope" or "su"): inverse frequencies divided by `short`
   * factors, or by `long` ones once the sequence is longer than `originalMaxPositions`; cos and sin
   * multiplied by `attentionFactor`.
   */
  ropeLongrope?: { short: number[]; long: number[]; originalMaxPositions: number; attentionFactor: number };
  /** Linear position scaling (`rope_type: "linear"`), used by Gemma 3's global layers on big models. */
  ropeLinearFactor?: number;
  tiedEmbeddings: boolean;
  /** Biases on q/k/v projections (Qwen2). */
  attentionBias: boolean;
  /** RMSNorm over each head's query and key (Qwen3, Gemma 3). */
  qkNorm: boolean;
  slidingWindow?: number;
  /** Per layer: full or sliding-window attention. */
  layerTypes: LayerType[];
  /** Attention scale is queryPreAttnScalar^-0.5 where set (Gemma), else headDim^-0.5. */
  queryPreAttnScalar?: number;
  attnSoftcap?: number;
  finalSoftcap?: number;
}

type Json = Record<string, unknown>;

/** A parsed config.json (the text config for multimodal checkpoints), with one-line errors. */
export class HfConfig {
  constructor(readonly json: Json, readonly where: string) {}

  num(key: string, fallback?: number): number {
    const v = this.json[key];
    if (typeof v === "number" && Number.isFinite(v)) return v;
    if (fallback !== undefined) return fallback;
    throw new UserError(`${this.where}: missing or invalid "${key}"`);
  }

  opt(key: string): number | undefined {
    const v = this.json[key];
    return typeof v === "number" && Number.isFinite(v) ? v : undefined;
  }

  get(key: string): unknown {
    return this.json[key];
  }

  /** `tie_word_embeddings`, with the family's default when the file does not say. */
  tied(fallback: boolean): boolean {
    const v = this.json["tie_word_embeddings"];
    return v === undefined ? fallback : v === true;
  }

  activation(key = "hidden_act"): Activation {
    const act = String(this.json["hidden_activation"] ?? this.json[key] ?? "silu");
    if (act === "silu") return "silu";
    if (act === "gelu_pytorch_tanh" || act === "gelu_new") return "gelu_tanh";
    if (act === "gelu") return "gelu";
    throw new UserError(`${this.where}: activation '${act}' is not supported (silu, gelu, gelu_pytorch_tanh)`);
  }

  /** Every layer of one type, or the file's own `layer_types`. */
  layerTypes(nLayers: number, fallback: (layer: number) => LayerType = () => "full"): LayerType[] {
    const given = this.json["layer_types"];
    if (Array.isArray(given) && given.length === nLayers) return given.map((t) => (String(t) === "sliding_attention" ? "sliding" : "full"));
    return Array.from({ length: nLayers }, (_, i) => fallback(i));
  }

  /**
   * The fields every decoder with rotary positions reads the same way (transformers' names):
   * shapes, norm epsilon, rotary settings. A family spreads this and adds its own.
   */
  decoder(arch: Architecture): Omit<ModelConfig, "tiedEmbeddings" | "attentionBias" | "qkNorm" | "layerTypes"> {
    const hidden = this.num("hidden_size");
    const nHeads = this.num("num_attention_heads");
    return {
      architecture: arch,
      nLayers: this.num("num_hidden_layers"),
      hidden,
      nHeads,
      nKvHeads: this.opt("num_key_value_heads") ?? nHeads,
      headDim: this.opt("head_dim") ?? hidden / nHeads,
      intermediate: this.num("intermediate_size"),
      vocabSize: this.num("vocab_size"),
      maxPositions: this.num("max_position_embeddings", 2048),
      normEps: this.num("rms_norm_eps", 1e-6),
      activation: this.activation(),
      ...this.rope(),
    };
  }

  /** Rotary settings from either transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`). */
  rope(): Pick<ModelConfig, "ropeTheta" | "ropeLocalTheta" | "ropeLlama3" | "ropeLinearFactor" | "ropeLongrope"> {
    const params = this.json["rope_parameters"] as Json | undefined;
    let global: Json = {};
    let local: Json | undefined;
    if (params && typeof params === "object") {
      if ("full_attention" in params) {
        global = params["full_attention"] as Json;
        local = params["sliding_attention"] as Json | undefined;
      } else global = params;
    }
    const scaling = (this.json["rope_scaling"] as Json | null | undefined) ?? undefined;
    const g = new HfConfig(global, this.where);
    const theta = g.opt("rope_theta") ?? this.opt("rope_theta") ?? 10000;
    const localTheta = (local && new HfConfig(local, this.where).opt("rope_theta")) ?? this.opt("rope_local_base_freq");
    const kind = String(global["rope_type"] ?? scaling?.["rope_type"] ?? scaling?.["type"] ?? "default");
    const src = new HfConfig(global["rope_type"] ? global : scaling ?? {}, this.where);
    const out: ReturnType<HfConfig["rope"]> = { ropeTheta: theta, ropeLocalTheta: localTheta };
    if (kind === "llama3") {
      out.ropeLlama3 = {
        factor: src.num("factor"),
        lowFreqFactor: src.num("low_freq_factor"),
        highFreqFactor: src.num("high_freq_factor"),
        originalMaxPositions: src.num("original_max_position_embeddings"),
      };
    } else if (kind === "linear") {
      out.ropeLinearFactor = src.num("factor");
    } else if (kind === "longrope" || kind === "su") {
      // transformers' _compute_longrope_parameters: the original length may sit at the top level.
      const originalMax = src.opt("original_max_position_embeddings") ?? this.num("original_max_position_embeddings");
      const factor = src.opt("factor") ?? this.num("max_position_embeddings") / originalMax;
      // The factors and the attention factor as float32, the precision they are used in: transformers
      // makes float32 tensors of the factors and scales float32 cos/sin by the attention factor, and
      // a GGUF stores all three as float32 (so both files describe the same model exactly).
      const factors = (key: string) => {
        const v = src.get(key);
        if (!Array.isArray(v) || !v.every((x) => typeof x === "number")) throw new UserError(`${this.where}: rope scaling lacks "${key}"`);
        return (v as number[]).map(Math.fround);
      };
      out.ropeLongrope = {
        short: factors("short_factor"),
        long: factors("long_factor"),
        originalMaxPositions: originalMax,
        attentionFactor: Math.fround(src.opt("attention_factor") ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(originalMax)))),
      };
    } else if (kind !== "default") {
      throw new UserError(`${this.where}: rotary scaling type '${kind}' is not supported (supported: default, linear, llama3, longrope)`);
    }
    return out;
  }
}

/** GGUF metadata and tensor list of one file, as a family reads them (keys under `<arch>.`). */
export class GgufMeta {
  private readonly tensors: Map<string, TensorRef>;
  readonly arch: string;

  constructor(readonly metadata: Map<string, GgufValue>, tensors: TensorRef[], readonly where: string) {
    this.tensors = new Map(tensors.map((t) => [t.name, t]));
    this.arch = String(metadata.get("general.architecture"));
  }

  /** The value of `<arch>.<key>`. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(`${this.arch}.${key}`);
  }

  num(key: string, fallback?: number): number {
    const v = this.get(key);
    if (typeof v === "number") return v;
    if (Array.isArray(v) && typeof v[0] === "number") return v[0]; // per-layer arrays: first entry
    if (fallback !== undefined) return fallback;
    throw new UserError(`${this.where}: GGUF metadata lacks '${this.arch}.${key}'`);
  }

  opt(key: string): number | undefined {
    const v = this.get(key);
    return typeof v === "number" ? v : undefined;
  }

  tensor(name: string): TensorRef | undefined {
    return this.tensors.get(name);
  }

  /** A small tensor's values (rotary factors and the like), read now. */
  values(name: string): number[] | undefined {
    const t = this.tensors.get(name);
    return t ? Array.from(readTensorF32(t)) : undefined;
  }

  /** Fields llama.cpp writes the same way for every decoder (llama-arch.cpp's LLM_KV names). */
  decoder(arch: Architecture): Omit<ModelConfig, "tiedEmbeddings" | "attentionBias" | "qkNorm" | "layerTypes" | "activation"> {
    const embed = this.tensor("token_embd.weight");
    if (!embed) throw new UserError(`${this.where}: missing tensor 'token_embd.weight'`);
    const hidden = this.num("embedding_length");
    const nHeads = this.num("attention.head_count");
    return {
      architecture: arch,
      nLayers: this.num("block_count"),
      hidden,
      nHeads,
      nKvHeads: this.num("attention.head_count_kv", nHeads),
      headDim: this.num("attention.key_length", hidden / nHeads),
      intermediate: this.num("feed_forward_length"),
      vocabSize: embed.shape[0]!,
      maxPositions: this.num("context_length", 2048),
      normEps: this.num("attention.layer_norm_rms_epsilon", 1e-6),
      ...this.rope(),
    };
  }

  /**
   * Rotary settings: base, linear scaling, Llama 3 frequency factors (`rope_freqs.weight`) and
   * LongRoPE factors (`rope_factors_short/long.weight`, Phi-3).
   */
  rope(): Pick<ModelConfig, "ropeTheta" | "ropeLinearFactor" | "ropeFreqFactors" | "ropeLongrope"> {
    const type = this.get("rope.scaling.type");
    const factor = this.opt("rope.scaling.factor");
    const out: ReturnType<GgufMeta["rope"]> = { ropeTheta: this.num("rope.freq_base", 10000) };
    if (type === "linear" && factor && factor !== 1) out.ropeLinearFactor = factor;
    else if (type !== undefined && type !== "none" && type !== "linear") {
      throw new UserError(`${this.where}: rotary scaling '${String(type)}' is not supported (none, linear)`);
    }
    out.ropeFreqFactors = this.values("rope_freqs.weight");
    const short = this.values("rope_factors_short.weight");
    const long = this.values("rope_factors_long.weight");
    if (short && long) {
      out.ropeLongrope = {
        short,
        long,
        originalMaxPositions: this.num("rope.scaling.original_context_length"),
        attentionFactor: this.num("rope.scaling.attn_factor", 1),
      };
    }
    return out;
  }
}
