/**
 * A GGUF file seen as a Hugging Face model: its metadata turned into a ModelConfig and its tensors
 * renamed to transformers' names, with the conversions llama.cpp applied undone:
 * - Llama q/k rows are permuted for ggml's interleaved rotary: put back to `rotate_half` order;
 * - Gemma norm weights are stored as (1 + w): subtract 1 (the graph adds it back, as transformers);
 * - GPT-2 projections are stored [out, in]: transpose back to Conv1D's [in, out].
 */
import { UserError } from "../errors.js";
import { architectureOf, type Architecture, type LayerType, type ModelConfig } from "../architectures/config.js";
import type { GgufFile } from "./gguf.js";
import type { GgufValue, TensorRef } from "./tensor-ref.js";
import type { TensorTransform, WeightEntry } from "./weight-store.js";

function meta(file: GgufFile, key: string): GgufValue | undefined {
  return file.metadata.get(key);
}

function metaNum(file: GgufFile, key: string, fallback?: number): number {
  const v = meta(file, key);
  if (typeof v === "number") return v;
  if (Array.isArray(v) && typeof v[0] === "number") return v[0]; // per-layer arrays: first entry
  if (fallback !== undefined) return fallback;
  throw new UserError(`${file.path}: GGUF metadata lacks '${key}'`);
}

export function ggufArchitecture(file: GgufFile): Architecture {
  return architectureOf(meta(file, "general.architecture"), file.path);
}

export function configFromGguf(file: GgufFile): ModelConfig {
  const arch = ggufArchitecture(file);
  const a = String(meta(file, "general.architecture"));
  const k = (s: string) => `${a}.${s}`;
  const tensors = new Map(file.tensors.map((t) => [t.name, t]));
  const embed = tensors.get("token_embd.weight");
  if (!embed) throw new UserError(`${file.path}: missing tensor 'token_embd.weight'`);
  const hidden = metaNum(file, k("embedding_length"));
  const nHeads = metaNum(file, k("attention.head_count"));
  const nLayers = metaNum(file, k("block_count"));
  const isGemma = arch === "gemma2" || arch === "gemma3";
  const headDim = metaNum(file, k("attention.key_length"), hidden / nHeads);
  const slidingWindow = meta(file, k("attention.sliding_window")) as number | undefined;
  let layerTypes: LayerType[] = Array.from({ length: nLayers }, () => "full");
  if (arch === "gemma2" || arch === "gemma3") {
    // llama.cpp hard-codes these patterns: every other layer (Gemma 2), five local to one global (Gemma 3).
    const pattern = metaNum(file, k("attention.sliding_window_pattern"), arch === "gemma2" ? 2 : 6);
    layerTypes = layerTypes.map((_, i) => ((i + 1) % pattern ? "sliding" : "full"));
  } else if (slidingWindow) {
    layerTypes = layerTypes.map(() => "sliding");
  }
  const scalingType = meta(file, k("rope.scaling.type"));
  const scalingFactor = meta(file, k("rope.scaling.factor")) as number | undefined;
  if (tensors.has("rope_freqs.weight")) {
    throw new UserError(`${file.path}: Llama 3.1 style rotary frequency factors (rope_freqs) are not supported yet`);
  }
  if (scalingType !== undefined && scalingType !== "none" && scalingType !== "linear") {
    throw new UserError(`${file.path}: rotary scaling '${String(scalingType)}' is not supported (none, linear)`);
  }
  const cfg: ModelConfig = {
    architecture: arch,
    nLayers,
    hidden,
    nHeads,
    nKvHeads: metaNum(file, k("attention.head_count_kv"), nHeads),
    headDim,
    intermediate: metaNum(file, k("feed_forward_length")),
    vocabSize: embed.shape[0]!,
    maxPositions: metaNum(file, k("context_length"), 2048),
    normEps: arch === "gpt2" ? metaNum(file, k("attention.layer_norm_epsilon"), 1e-5) : metaNum(file, k("attention.layer_norm_rms_epsilon"), 1e-6),
    activation: isGemma || arch === "gpt2" ? "gelu_tanh" : "silu",
    ropeTheta: arch === "gpt2" ? undefined : metaNum(file, k("rope.freq_base"), 10000),
    // llama.cpp uses base 10000 on Gemma 3's local layers (freq_base_swa), not stored in the file.
    ropeLocalTheta: arch === "gemma3" ? metaNum(file, k("rope.freq_base_swa"), 10000) : undefined,
    ropeLinearFactor: scalingType === "linear" && scalingFactor && scalingFactor !== 1 ? scalingFactor : undefined,
    tiedEmbeddings: !tensors.has("output.weight"),
    attentionBias: tensors.has("blk.0.attn_q.bias"),
    qkNorm: tensors.has("blk.0.attn_q_norm.weight"),
    slidingWindow: layerTypes.includes("sliding") ? slidingWindow : undefined,
    layerTypes,
    // llama.cpp: Gemma 2/3 scale queries by 1/sqrt(head_dim), except the 27B models (hidden / heads).
    queryPreAttnScalar: isGemma ? (nLayers === 46 || nLayers === 62 ? hidden / nHeads : headDim) : undefined,
    attnSoftcap: (meta(file, k("attn_logit_softcapping")) as number | undefined) || undefined,
    finalSoftcap: (meta(file, k("final_logit_softcapping")) as number | undefined) || undefined,
  };
  return cfg;
}

/** Undo llama.cpp's q/k row permutation (convert_hf_to_gguf.py `permute`, transformers' `reverse_permute`). */
function unpermuteRows(heads: number): TensorTransform {
  return {
    id: `unpermute${heads}`,
    apply(data, shape) {
      const rows = shape[0]!;
      const cols = data.length / rows;
      const half = rows / heads / 2;
      const out = new Float32Array(data.length);
      for (let h = 0; h < heads; h++) {
        for (let j = 0; j < 2; j++) {
          for (let i = 0; i < half; i++) {
            const from = h * 2 * half + i * 2 + j; // GGUF row: pairs interleaved
            const to = h * 2 * half + j * half + i; // HF row: halves
            out.set(data.subarray(from * cols, (from + 1) * cols), to * cols);
          }
        }
      }
      return { data: out, shape };
    },
  };
}

const minusOne: TensorTransform = {
  id: "minus1",
  apply(data, shape) {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = data[i]! - 1;
    return { data: out, shape };
  },
};

const transpose2d: TensorTransform = {
  id: "transpose",
  apply(data, shape) {
    const [rows, cols] = shape as [number, number];
    const out = new Float32Array(data.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
    return { data: out, shape: [cols, rows] };
  },
};

/** GGUF tensor name -> transformers name, per architecture family. */
function hfName(arch: Architecture, gguf: string): string | undefined {
  const global: Record<string, string> =
    arch === "gpt2"
      ? { "token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight", "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias", "output.weight": "lm_head.weight" }
      : { "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight" };
  if (gguf in global) return global[gguf];
  const m = /^blk\.(\d+)\.(.+)$/.exec(gguf);
  if (!m) return undefined;
  const [, l, rest] = m;
  const isGemma = arch === "gemma2" || arch === "gemma3";
  const block: Record<string, string> =
    arch === "gpt2"
      ? {
          "attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
          "ffn_norm": "ln_2", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj",
        }
      : {
          "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
          "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
          // Llama's pre-MLP norm is transformers' post_attention_layernorm; Gemma has both.
          "ffn_norm": isGemma ? "pre_feedforward_layernorm" : "post_attention_layernorm",
          "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
        };
  const dot = rest!.lastIndexOf(".");
  const mapped = block[rest!.slice(0, dot)];
  if (!mapped) return undefined;
  return `${arch === "gpt2" ? "transformer.h" : "model.layers"}.${l}.${mapped}${rest!.slice(dot)}`;
}

/** The weight entries of a GGUF model, in transformers' names and layouts. */
export function weightsFromGguf(file: GgufFile, cfg: ModelConfig): Map<string, WeightEntry> {
  const entries = new Map<string, WeightEntry>();
  const isGemma = cfg.architecture === "gemma2" || cfg.architecture === "gemma3";
  for (const ref of file.tensors) {
    const name = hfName(cfg.architecture, ref.name);
    if (!name) continue; // e.g. rope_freqs, unused extras
    let transform: TensorTransform | undefined;
    if ((cfg.architecture === "llama" || cfg.architecture === "mistral") && /self_attn\.[qk]_proj\.(weight|bias)$/.test(name)) {
      transform = unpermuteRows(name.includes("q_proj") ? cfg.nHeads : cfg.nKvHeads);
    } else if (isGemma && /norm\.weight$/.test(name)) {
      transform = minusOne;
    } else if (cfg.architecture === "gpt2" && /(c_attn|c_proj|c_fc)\.weight$/.test(name)) {
      transform = transpose2d;
    }
    entries.set(name, { ref, transform });
  }
  return entries;
}

export function ggufDisplayName(file: GgufFile): string | undefined {
  const n = meta(file, "general.name");
  return typeof n === "string" ? n : undefined;
}

export type { TensorRef };
