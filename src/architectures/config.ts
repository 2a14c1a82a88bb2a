/**
 * One normalised description of a model's shape and quirks, whatever file it came from
 * (Hugging Face config.json or GGUF metadata). Architecture code reads only this.
 */
import { UserError } from "../errors.js";

export const SUPPORTED_ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

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

function num(cfg: Json, key: string, fallback?: number): number {
  const v = cfg[key];
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (fallback !== undefined) return fallback;
  throw new UserError(`config.json: missing or invalid "${key}"`);
}

function optNum(cfg: Json, key: string): number | undefined {
  const v = cfg[key];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Maps a transformers `model_type` (or a GGUF general.architecture) to ours, or explains the refusal. */
export function architectureOf(modelType: unknown, where: string): Architecture {
  const t = String(modelType ?? "");
  const aliases: Record<string, Architecture> = { gemma3_text: "gemma3" };
  const arch = (aliases[t] ?? t) as Architecture;
  if (!t) throw new UserError(`${where}: the file does not say which architecture it is (no model_type / general.architecture); logit-lens supports ${SUPPORTED_ARCHITECTURES.join(", ")}`);
  if (!SUPPORTED_ARCHITECTURES.includes(arch)) {
    throw new UserError(`${where}: unsupported architecture '${t || "(none)"}'; logit-lens supports ${SUPPORTED_ARCHITECTURES.join(", ")}`);
  }
  return arch;
}

/** Rotary settings from either transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`). */
function ropeFromHf(cfg: Json, arch: Architecture): Pick<ModelConfig, "ropeTheta" | "ropeLocalTheta" | "ropeLlama3" | "ropeLinearFactor"> {
  if (arch === "gpt2") return {};
  const params = cfg["rope_parameters"] as Json | undefined;
  let global: Json = {};
  let local: Json | undefined;
  if (params && typeof params === "object") {
    if ("full_attention" in params) {
      global = params["full_attention"] as Json;
      local = params["sliding_attention"] as Json | undefined;
    } else global = params;
  }
  const scaling = (cfg["rope_scaling"] as Json | null | undefined) ?? undefined;
  const theta = optNum(global, "rope_theta") ?? optNum(cfg, "rope_theta") ?? 10000;
  const localTheta = (local && optNum(local, "rope_theta")) ?? optNum(cfg, "rope_local_base_freq");
  const kind = String(global["rope_type"] ?? scaling?.["rope_type"] ?? scaling?.["type"] ?? "default");
  const src: Json = global["rope_type"] ? global : scaling ?? {};
  const out: ReturnType<typeof ropeFromHf> = { ropeTheta: theta, ropeLocalTheta: localTheta };
  if (kind === "llama3") {
    out.ropeLlama3 = {
      factor: num(src, "factor"),
      lowFreqFactor: num(src, "low_freq_factor"),
      highFreqFactor: num(src, "high_freq_factor"),
      originalMaxPositions: num(src, "original_max_position_embeddings"),
    };
  } else if (kind === "linear") {
    out.ropeLinearFactor = num(src, "factor");
  } else if (kind !== "default") {
    throw new UserError(`config.json: rotary scaling type '${kind}' is not supported (supported: default, linear, llama3)`);
  }
  return out;
}

function layerTypesFromHf(cfg: Json, arch: Architecture, nLayers: number): LayerType[] {
  const given = cfg["layer_types"];
  if (Array.isArray(given) && given.length === nLayers) {
    return given.map((t) => (String(t) === "sliding_attention" ? "sliding" : "full"));
  }
  const window = optNum(cfg, "sliding_window");
  if (arch === "gemma2") return Array.from({ length: nLayers }, (_, i) => ((i + 1) % 2 ? "sliding" : "full"));
  if (arch === "gemma3") {
    const pattern = optNum(cfg, "sliding_window_pattern") ?? 6;
    return Array.from({ length: nLayers }, (_, i) => ((i + 1) % pattern ? "sliding" : "full"));
  }
  if (arch === "mistral" && window) return Array.from({ length: nLayers }, () => "sliding");
  if (arch === "qwen2" && window && cfg["use_sliding_window"]) {
    const maxWindowLayers = optNum(cfg, "max_window_layers") ?? nLayers;
    return Array.from({ length: nLayers }, (_, i) => (i >= maxWindowLayers ? "sliding" : "full"));
  }
  return Array.from({ length: nLayers }, () => "full");
}

/** Reads a transformers config.json (already parsed). */
export function configFromHf(cfg: Json, where = "config.json"): ModelConfig {
  const textConfig = (cfg["text_config"] as Json | undefined) ?? cfg;
  const arch = architectureOf(textConfig["model_type"] ?? cfg["model_type"], where);
  const c = textConfig;
  if (arch === "gpt2") {
    const hidden = num(c, "n_embd");
    const nHeads = num(c, "n_head");
    const nLayers = num(c, "n_layer");
    return {
      architecture: arch,
      nLayers,
      hidden,
      nHeads,
      nKvHeads: nHeads,
      headDim: hidden / nHeads,
      intermediate: optNum(c, "n_inner") ?? 4 * hidden,
      vocabSize: num(c, "vocab_size"),
      maxPositions: num(c, "n_positions"),
      normEps: num(c, "layer_norm_epsilon", 1e-5),
      activation: "gelu_tanh",
      tiedEmbeddings: c["tie_word_embeddings"] !== false,
      attentionBias: true,
      qkNorm: false,
      layerTypes: Array.from({ length: nLayers }, () => "full"),
    };
  }
  const hidden = num(c, "hidden_size");
  const nHeads = num(c, "num_attention_heads");
  const nLayers = num(c, "num_hidden_layers");
  const isGemma = arch === "gemma2" || arch === "gemma3";
  const act = String(c["hidden_activation"] ?? c["hidden_act"] ?? "silu");
  const activation: Activation = act === "silu" ? "silu" : act === "gelu_pytorch_tanh" || act === "gelu_new" ? "gelu_tanh" : act === "gelu" ? "gelu" : (() => {
    throw new UserError(`${where}: activation '${act}' is not supported (silu, gelu, gelu_pytorch_tanh)`);
  })();
  const layerTypes = layerTypesFromHf(c, arch, nLayers);
  return {
    architecture: arch,
    nLayers,
    hidden,
    nHeads,
    nKvHeads: optNum(c, "num_key_value_heads") ?? nHeads,
    headDim: optNum(c, "head_dim") ?? hidden / nHeads,
    intermediate: num(c, "intermediate_size"),
    vocabSize: num(c, "vocab_size"),
    maxPositions: num(c, "max_position_embeddings", 2048),
    normEps: num(c, "rms_norm_eps", 1e-6),
    activation,
    ...ropeFromHf(c, arch),
    // Gemma ties by default; others default to untied unless the config says so (transformers' defaults).
    tiedEmbeddings: c["tie_word_embeddings"] === undefined ? isGemma : c["tie_word_embeddings"] === true,
    attentionBias: arch === "qwen2" ? true : c["attention_bias"] === true,
    qkNorm: arch === "qwen3" || arch === "gemma3",
    slidingWindow: layerTypes.includes("sliding") ? optNum(c, "sliding_window") : undefined,
    layerTypes,
    queryPreAttnScalar: isGemma ? optNum(c, "query_pre_attn_scalar") : undefined,
    attnSoftcap: optNum(c, "attn_logit_softcapping") ?? undefined,
    finalSoftcap: optNum(c, "final_logit_softcapping") ?? undefined,
  };
}
