/**
 * Gemma 2 and Gemma 3 (text). Differences from Llama, each a known trap for lens tools:
 * - RMSNorm scales by (1 + w), and every sub-block is sandwiched: a norm before and after it;
 * - embeddings are multiplied by sqrt(hidden) (rounded to the activation dtype, fp32 here);
 * - attention is scaled by query_pre_attn_scalar^-0.5, alternates sliding-window and global layers,
 *   Gemma 2 soft-caps attention scores and final logits with tanh, Gemma 3 normalises q and k per
 *   head and uses a different rotary base on its sliding layers.
 * Mirrors transformers' Gemma2DecoderLayer / Gemma3DecoderLayer.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { GgufMeta, HfConfig, LayerType, ModelConfig } from "./config.js";
import { minusOne } from "./conversions.js";
import { ggufEntries, ggufRenamer, shapeTable, type Family, type Unembedding } from "./family.js";
import { blockHook, finalLayer, hookPoint, hookZ, type ForwardInputs, type ForwardOptions } from "./forward.js";
import { attention, gatedMlp, rmsNorm, splitHeads, type WeightSource } from "./layers.js";
import { LLAMA_GGUF_BLOCK, LLAMA_GGUF_GLOBALS, llamaAttentionShapes } from "./llama.js";

type Name = "gemma2" | "gemma3";

function forward(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, nKvHeads: nKv, headDim: d, normEps: eps } = cfg;
  const norm = (x: Value, name: string) => rmsNorm(g, x, w.get(name), eps, true);

  let x = g.gather(w.get("model.embed_tokens.weight"), inp.inputIds);
  x = g.mul(x, g.scalar(Math.fround(Math.sqrt(cfg.hidden))));
  x = hookPoint(g, opts, "hook_embed", x);

  const scale = 1 / Math.sqrt(cfg.queryPreAttnScalar ?? d);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const h = norm(x, `${p}.input_layernorm.weight`);
    let q = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.q_proj.weight`)), nHeads, d);
    let k = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.k_proj.weight`)), nKv, d);
    const v = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.v_proj.weight`)), nKv, d);
    if (cfg.qkNorm) {
      q = norm(q, `${p}.self_attn.q_norm.weight`);
      k = norm(k, `${p}.self_attn.k_norm.weight`);
    }
    const heads = attention(g, inp, l, q, k, v, { nHeads, nKv, headDim: d, scale, softcap: cfg.attnSoftcap, sliding: cfg.layerTypes[l] === "sliding", hookZ: hookZ(g, opts, l) });
    const attnProj = g.linear(heads, w.get(`${p}.self_attn.o_proj.weight`));
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), norm(attnProj, `${p}.post_attention_layernorm.weight`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const h2 = norm(x, `${p}.pre_feedforward_layernorm.weight`);
    const mlp = gatedMlp(g, h2, w, `${p}.mlp`, cfg.activation);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), norm(mlp, `${p}.post_feedforward_layernorm.weight`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }
  finalLayer(g, opts, w, unembedding(cfg), x);
}

function unembedding(cfg: ModelConfig): Unembedding {
  return {
    norm: "rms_gemma",
    normWeight: "model.norm.weight",
    eps: cfg.normEps,
    matrix: cfg.tiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
    softcap: cfg.finalSoftcap,
  };
}

function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  const { hidden: h, intermediate: ff, vocabSize: V } = cfg;
  const { m, t } = shapeTable();
  t("model.embed_tokens.weight", V, h);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    for (const n of ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"]) t(`${p}.${n}.weight`, h);
    llamaAttentionShapes(t, cfg, p);
    t(`${p}.mlp.gate_proj.weight`, ff, h);
    t(`${p}.mlp.up_proj.weight`, ff, h);
    t(`${p}.mlp.down_proj.weight`, h, ff);
  }
  t("model.norm.weight", h);
  if (!cfg.tiedEmbeddings) t("lm_head.weight", V, h);
  return m;
}

/** Gemma 2: every other layer slides; Gemma 3: five local layers to one global. */
function slidingPattern(name: Name, given: number | undefined): number {
  return given ?? (name === "gemma2" ? 2 : 6);
}

function gemma<N extends Name>(name: N, hfModelTypes: string[]): Family<ModelConfig, N> {
  return {
    name,
    hfModelTypes,
    ggufArchitectures: [name],

    configFromHf(c: HfConfig): ModelConfig {
      const base = c.decoder(name);
      const pattern = slidingPattern(name, c.opt("sliding_window_pattern"));
      const layerTypes = c.layerTypes(base.nLayers, (i) => ((i + 1) % pattern ? "sliding" : "full"));
      return {
        ...base,
        tiedEmbeddings: c.tied(true),
        attentionBias: c.get("attention_bias") === true,
        qkNorm: name === "gemma3",
        slidingWindow: layerTypes.includes("sliding") ? c.opt("sliding_window") : undefined,
        layerTypes,
        queryPreAttnScalar: c.opt("query_pre_attn_scalar"),
        attnSoftcap: c.opt("attn_logit_softcapping"),
        finalSoftcap: c.opt("final_logit_softcapping"),
      };
    },

    configFromGguf(m: GgufMeta): ModelConfig {
      const base = m.decoder(name);
      // llama.cpp hard-codes these patterns: every other layer (Gemma 2), five local to one global (Gemma 3).
      const pattern = slidingPattern(name, m.opt("attention.sliding_window_pattern"));
      const layerTypes: LayerType[] = Array.from({ length: base.nLayers }, (_, i) => ((i + 1) % pattern ? "sliding" : "full"));
      return {
        ...base,
        activation: "gelu_tanh",
        // llama.cpp uses base 10000 on Gemma 3's local layers (freq_base_swa), not stored in the file.
        ropeLocalTheta: name === "gemma3" ? m.num("rope.freq_base_swa", 10000) : undefined,
        tiedEmbeddings: !m.tensor("output.weight"),
        attentionBias: false,
        qkNorm: !!m.tensor("blk.0.attn_q_norm.weight"),
        slidingWindow: m.opt("attention.sliding_window"),
        layerTypes,
        // llama.cpp: Gemma 2/3 scale queries by 1/sqrt(head_dim), except the 27B models (hidden / heads).
        queryPreAttnScalar: base.nLayers === 46 || base.nLayers === 62 ? base.hidden / base.nHeads : base.headDim,
        attnSoftcap: m.opt("attn_logit_softcapping") || undefined,
        finalSoftcap: m.opt("final_logit_softcapping") || undefined,
      };
    },

    ggufTensors(tensors) {
      const block = {
        ...LLAMA_GGUF_BLOCK,
        ffn_norm: "pre_feedforward_layernorm", // Gemma has a norm on both sides of each sub-block
        post_attention_norm: "post_attention_layernorm",
        post_ffw_norm: "post_feedforward_layernorm",
      };
      // transformers stores Gemma norm weights as w (applied as 1 + w); llama.cpp stores 1 + w.
      return ggufEntries(tensors, ggufRenamer(LLAMA_GGUF_GLOBALS, "model.layers", block), (n) => (/norm\.weight$/.test(n) ? minusOne : undefined));
    },

    expectedTensors,
    forward,
    unembedding,
  };
}

export const gemma2 = gemma("gemma2", ["gemma2"]);
export const gemma3 = gemma("gemma3", ["gemma3", "gemma3_text"]);
