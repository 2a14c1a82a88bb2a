/**
 * OLMo 2 (AllenAI). Llama-shaped, with two differences that matter to a lens:
 * - the norms come *after* each sub-block, not before: resid + norm(attn(resid)), then
 *   resid + norm(mlp(resid)); so hook_attn_out / hook_mlp_out are the normed outputs;
 * - q and k are RMS-normed over the whole projection (all heads at once, weights [heads*headDim]),
 *   before being split into heads, unlike Qwen3's per-head norm.
 * Mirrors transformers' Olmo2DecoderLayer / Olmo2Attention.
 */
import type { GraphBuilder } from "../graph/builder.js";
import type { GgufMeta, HfConfig, ModelConfig } from "./config.js";
import { ggufEntries, ggufRenamer, shapeTable, type Family } from "./family.js";
import { blockHook, finalLayer, hookPoint, hookZ, type ForwardInputs, type ForwardOptions } from "./forward.js";
import { attention, gatedMlp, rmsNorm, splitHeads, type WeightSource } from "./layers.js";
import { LLAMA_GGUF_BLOCK, LLAMA_GGUF_GLOBALS, llamaUnembedding } from "./llama.js";

function forward(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, nKvHeads: nKv, headDim: d, normEps: eps } = cfg;
  let x = hookPoint(g, opts, "hook_embed", g.gather(w.get("model.embed_tokens.weight"), inp.inputIds));

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    const norm = (v: ReturnType<GraphBuilder["add"]>, name: string) => rmsNorm(g, v, w.get(`${p}.${name}.weight`), eps, false);
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    // Attention on the raw residual; q and k normed over all heads before the split.
    const q = norm(g.linear(x, w.get(`${p}.self_attn.q_proj.weight`)), "self_attn.q_norm");
    const k = norm(g.linear(x, w.get(`${p}.self_attn.k_proj.weight`)), "self_attn.k_norm");
    const v = g.linear(x, w.get(`${p}.self_attn.v_proj.weight`));
    const heads = attention(g, inp, l, splitHeads(g, q, nHeads, d), splitHeads(g, k, nKv, d), splitHeads(g, v, nKv, d), { nHeads, nKv, headDim: d, hookZ: hookZ(g, opts, l) });
    const attn = g.linear(heads, w.get(`${p}.self_attn.o_proj.weight`));
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), norm(attn, "post_attention_layernorm"));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const mlp = gatedMlp(g, x, w, `${p}.mlp`, cfg.activation);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), norm(mlp, "post_feedforward_layernorm"));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }
  finalLayer(g, opts, w, llamaUnembedding(cfg), x);
}

export const olmo2: Family<ModelConfig, "olmo2"> = {
  name: "olmo2",
  hfModelTypes: ["olmo2"],
  ggufArchitectures: ["olmo2"],

  configFromHf(c: HfConfig): ModelConfig {
    const base = c.decoder("olmo2");
    return { ...base, tiedEmbeddings: c.tied(false), attentionBias: false, qkNorm: true, layerTypes: c.layerTypes(base.nLayers) };
  },

  configFromGguf(m: GgufMeta): ModelConfig {
    const base = m.decoder("olmo2");
    return {
      ...base,
      activation: "silu",
      tiedEmbeddings: !m.tensor("output.weight"),
      attentionBias: false,
      qkNorm: true,
      layerTypes: Array.from({ length: base.nLayers }, () => "full"),
    };
  },

  // llama.cpp runs OLMo 2 with NEOX rotary (halves, like transformers): no q/k permutation.
  ggufTensors: (tensors) =>
    ggufEntries(
      tensors,
      ggufRenamer(LLAMA_GGUF_GLOBALS, "model.layers", {
        ...LLAMA_GGUF_BLOCK,
        post_attention_norm: "post_attention_layernorm",
        post_ffw_norm: "post_feedforward_layernorm",
      }),
    ),

  expectedTensors(cfg) {
    const { hidden: h, nHeads, nKvHeads, headDim: d, intermediate: ff, vocabSize: V } = cfg;
    const { m, t } = shapeTable();
    t("model.embed_tokens.weight", V, h);
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = `model.layers.${l}`;
      t(`${p}.self_attn.q_proj.weight`, nHeads * d, h);
      t(`${p}.self_attn.k_proj.weight`, nKvHeads * d, h);
      t(`${p}.self_attn.v_proj.weight`, nKvHeads * d, h);
      t(`${p}.self_attn.o_proj.weight`, h, nHeads * d);
      t(`${p}.self_attn.q_norm.weight`, nHeads * d);
      t(`${p}.self_attn.k_norm.weight`, nKvHeads * d);
      t(`${p}.post_attention_layernorm.weight`, h);
      t(`${p}.mlp.gate_proj.weight`, ff, h);
      t(`${p}.mlp.up_proj.weight`, ff, h);
      t(`${p}.mlp.down_proj.weight`, h, ff);
      t(`${p}.post_feedforward_layernorm.weight`, h);
    }
    t("model.norm.weight", h);
    if (!cfg.tiedEmbeddings) t("lm_head.weight", V, h);
    return m;
  },

  forward,
  unembedding: llamaUnembedding,
};
