/**
 * Llama-shaped decoders: Llama 2/3.x, SmolLM2, Mistral (and Mistral-Nemo-style head_dim that is
 * not hidden / heads), Qwen2 / Qwen2.5 (q/k/v biases), Qwen3 (per-head q/k RMSNorm).
 * Mirrors transformers' LlamaDecoderLayer: pre-norm attention and gated MLP on a residual stream.
 * The four differ only in data (defaults and which tensors exist), so they share this file.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { GgufMeta, HfConfig, LayerType, ModelConfig } from "./config.js";
import { unpermuteRows } from "./conversions.js";
import { ggufEntries, ggufRenamer, shapeTable, type Family, type Unembedding } from "./family.js";
import { blockHook, finalLayer, hookPoint, hookZ, type ForwardInputs, type ForwardOptions } from "./forward.js";
import { attention, gatedMlp, rmsNorm, splitHeads, type WeightSource } from "./layers.js";

type Name = "llama" | "mistral" | "qwen2" | "qwen3";

/** llama.cpp's names for the tensors of Llama-shaped models (llama-arch.cpp), ours on the right. */
export const LLAMA_GGUF_GLOBALS: Record<string, string> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
};
export const LLAMA_GGUF_BLOCK: Record<string, string> = {
  attn_norm: "input_layernorm",
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  attn_q_norm: "self_attn.q_norm",
  attn_k_norm: "self_attn.k_norm",
  // transformers' "post_attention_layernorm" is the norm *before* the MLP: llama.cpp's ffn_norm.
  ffn_norm: "post_attention_layernorm",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
};

/** The attention tensors of a Llama-shaped block (shared with the families built on it). */
export function llamaAttentionShapes(t: (name: string, ...shape: number[]) => void, cfg: ModelConfig, p: string): void {
  const { hidden: h, nHeads, nKvHeads, headDim: d } = cfg;
  t(`${p}.self_attn.q_proj.weight`, nHeads * d, h);
  t(`${p}.self_attn.k_proj.weight`, nKvHeads * d, h);
  t(`${p}.self_attn.v_proj.weight`, nKvHeads * d, h);
  t(`${p}.self_attn.o_proj.weight`, h, nHeads * d);
  if (cfg.attentionBias) {
    t(`${p}.self_attn.q_proj.bias`, nHeads * d);
    t(`${p}.self_attn.k_proj.bias`, nKvHeads * d);
    t(`${p}.self_attn.v_proj.bias`, nKvHeads * d);
  }
  if (cfg.qkNorm) {
    t(`${p}.self_attn.q_norm.weight`, d);
    t(`${p}.self_attn.k_norm.weight`, d);
  }
}

/**
 * Self-attention of a Llama-shaped block, from the normed input `h` to o_proj's output: q/k/v
 * projections (with biases where the checkpoint has them: Qwen2), Qwen3's per-head q/k RMSNorm
 * before rotary, then the shared attention core.
 */
export function llamaSelfAttention(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions, l: number, h: Value): Value {
  const { nHeads, nKvHeads: nKv, headDim: d, normEps: eps } = cfg;
  const p = `model.layers.${l}.self_attn`;
  const bias = (name: string) => (cfg.attentionBias && w.has(name) ? w.get(name) : undefined);
  let q = splitHeads(g, g.linear(h, w.get(`${p}.q_proj.weight`), bias(`${p}.q_proj.bias`)), nHeads, d);
  let k = splitHeads(g, g.linear(h, w.get(`${p}.k_proj.weight`), bias(`${p}.k_proj.bias`)), nKv, d);
  const v = splitHeads(g, g.linear(h, w.get(`${p}.v_proj.weight`), bias(`${p}.v_proj.bias`)), nKv, d);
  if (cfg.qkNorm) {
    q = rmsNorm(g, q, w.get(`${p}.q_norm.weight`), eps, false);
    k = rmsNorm(g, k, w.get(`${p}.k_norm.weight`), eps, false);
  }
  const sliding = cfg.layerTypes[l] === "sliding";
  return g.linear(attention(g, inp, l, q, k, v, { nHeads, nKv, headDim: d, sliding, hookZ: hookZ(g, opts, l) }), w.get(`${p}.o_proj.weight`));
}

export function llamaUnembedding(cfg: ModelConfig): Unembedding {
  return { norm: "rms", normWeight: "model.norm.weight", eps: cfg.normEps, matrix: cfg.tiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight" };
}

function forward(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const eps = cfg.normEps;
  let x = hookPoint(g, opts, "hook_embed", g.gather(w.get("model.embed_tokens.weight"), inp.inputIds));

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const h = rmsNorm(g, x, w.get(`${p}.input_layernorm.weight`), eps, false);
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), llamaSelfAttention(g, cfg, w, inp, opts, l, h));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const h2 = rmsNorm(g, x, w.get(`${p}.post_attention_layernorm.weight`), eps, false);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), gatedMlp(g, h2, w, `${p}.mlp`, cfg.activation));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }
  finalLayer(g, opts, w, llamaUnembedding(cfg), x);
}

function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  const { hidden: h, intermediate: ff, vocabSize: V } = cfg;
  const { m, t } = shapeTable();
  t("model.embed_tokens.weight", V, h);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    t(`${p}.input_layernorm.weight`, h);
    t(`${p}.post_attention_layernorm.weight`, h);
    llamaAttentionShapes(t, cfg, p);
    t(`${p}.mlp.gate_proj.weight`, ff, h);
    t(`${p}.mlp.up_proj.weight`, ff, h);
    t(`${p}.mlp.down_proj.weight`, h, ff);
  }
  t("model.norm.weight", h);
  if (!cfg.tiedEmbeddings) t("lm_head.weight", V, h);
  return m;
}

/** Which layers slide, from config.json (transformers' per-family rules). */
function hfLayerTypes(name: Name, c: HfConfig, nLayers: number): LayerType[] {
  const window = c.opt("sliding_window");
  if (name === "mistral" && window) return c.layerTypes(nLayers, () => "sliding");
  if (name === "qwen2" && window && c.get("use_sliding_window")) {
    const maxWindowLayers = c.opt("max_window_layers") ?? nLayers;
    return c.layerTypes(nLayers, (i) => (i >= maxWindowLayers ? "sliding" : "full"));
  }
  return c.layerTypes(nLayers);
}

function llamaLike<N extends Name>(name: N, hfModelTypes: string[]): Family<ModelConfig, N> {
  return {
    name,
    hfModelTypes,
    ggufArchitectures: [name],

    configFromHf(c: HfConfig): ModelConfig {
      const base = c.decoder(name);
      const layerTypes = hfLayerTypes(name, c, base.nLayers);
      return {
        ...base,
        tiedEmbeddings: c.tied(false),
        // Qwen2 always has q/k/v biases; others say so with attention_bias (Llama variants, Qwen3).
        attentionBias: name === "qwen2" ? true : c.get("attention_bias") === true,
        qkNorm: name === "qwen3",
        slidingWindow: layerTypes.includes("sliding") ? c.opt("sliding_window") : undefined,
        layerTypes,
      };
    },

    configFromGguf(m: GgufMeta): ModelConfig {
      const base = m.decoder(name);
      const window = m.opt("attention.sliding_window");
      const layerTypes: LayerType[] = Array.from({ length: base.nLayers }, () => (window ? "sliding" : "full"));
      return {
        ...base,
        activation: "silu",
        tiedEmbeddings: !m.tensor("output.weight"),
        attentionBias: !!m.tensor("blk.0.attn_q.bias"),
        qkNorm: !!m.tensor("blk.0.attn_q_norm.weight"),
        slidingWindow: window || undefined,
        layerTypes,
      };
    },

    ggufTensors(tensors, cfg) {
      // llama.cpp runs Llama and Mistral with interleaved rotary, so its converter permuted their
      // q/k rows (and biases); Qwen uses NEOX rotary (halves, like transformers) and is stored as is.
      const permuted = name === "llama" || name === "mistral";
      return ggufEntries(tensors, ggufRenamer(LLAMA_GGUF_GLOBALS, "model.layers", LLAMA_GGUF_BLOCK), (n) => {
        if (!permuted || !/self_attn\.[qk]_proj\.(weight|bias)$/.test(n)) return undefined;
        return unpermuteRows(n.includes("q_proj") ? cfg.nHeads : cfg.nKvHeads);
      });
    },

    expectedTensors,
    forward,
    unembedding: llamaUnembedding,
  };
}

export const llama = llamaLike("llama", ["llama"]);
export const mistral = llamaLike("mistral", ["mistral"]);
export const qwen2 = llamaLike("qwen2", ["qwen2"]);
export const qwen3 = llamaLike("qwen3", ["qwen3"]);
