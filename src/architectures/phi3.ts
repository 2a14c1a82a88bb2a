/**
 * Phi-3 / Phi-3.5 / Phi-4 (`phi3`). Llama-shaped, but q, k and v come from one fused projection
 * (`qkv_proj`, rows q | k | v) and the MLP's gate and up from another (`gate_up_proj`, rows
 * gate | up); long-context models use LongRoPE (`longrope`, formerly `su`) scaling, which
 * positions.ts applies. Mirrors transformers' Phi3DecoderLayer.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import { UserError } from "../errors.js";
import type { GgufMeta, HfConfig, LayerType, ModelConfig } from "./config.js";
import { ggufEntries, ggufRenamer, shapeTable, type Family } from "./family.js";
import { blockHook, finalLayer, hookPoint, hookZ, type ForwardInputs, type ForwardOptions } from "./forward.js";
import { activation, attention, rmsNorm, splitHeads, type WeightSource } from "./layers.js";
import { LLAMA_GGUF_GLOBALS, llamaUnembedding } from "./llama.js";

function forward(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, nKvHeads: nKv, headDim: d, normEps: eps, intermediate: ff } = cfg;
  let x = hookPoint(g, opts, "hook_embed", g.gather(w.get("model.embed_tokens.weight"), inp.inputIds));

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const h = rmsNorm(g, x, w.get(`${p}.input_layernorm.weight`), eps, false);
    const [q, k, v] = g.split(g.linear(h, w.get(`${p}.self_attn.qkv_proj.weight`)), [nHeads * d, nKv * d, nKv * d], -1) as [Value, Value, Value];
    const heads = attention(g, inp, l, splitHeads(g, q, nHeads, d), splitHeads(g, k, nKv, d), splitHeads(g, v, nKv, d), {
      nHeads, nKv, headDim: d, sliding: cfg.layerTypes[l] === "sliding", hookZ: hookZ(g, opts, l),
    });
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), g.linear(heads, w.get(`${p}.self_attn.o_proj.weight`)));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const h2 = rmsNorm(g, x, w.get(`${p}.post_attention_layernorm.weight`), eps, false);
    const [gate, up] = g.split(g.linear(h2, w.get(`${p}.mlp.gate_up_proj.weight`)), [ff, ff], -1) as [Value, Value];
    const mlp = g.linear(g.mul(up, activation(g, gate, cfg.activation)), w.get(`${p}.mlp.down_proj.weight`));
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), mlp);
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }
  finalLayer(g, opts, w, llamaUnembedding(cfg), x);
}

function slidingLayers(n: number, window: number | undefined): LayerType[] {
  return Array.from({ length: n }, () => (window ? "sliding" : "full"));
}

export const phi3: Family<ModelConfig, "phi3"> = {
  name: "phi3",
  hfModelTypes: ["phi3"],
  ggufArchitectures: ["phi3"],

  configFromHf(c: HfConfig): ModelConfig {
    const params = (c.get("rope_parameters") ?? c.get("rope_scaling") ?? {}) as Record<string, unknown>;
    const partial = params["partial_rotary_factor"] ?? c.get("partial_rotary_factor");
    if (typeof partial === "number" && partial !== 1) throw new UserError(`${c.where}: partial rotary embeddings (partial_rotary_factor ${partial}, Phi-4-mini) are not supported yet`);
    const base = c.decoder("phi3");
    // transformers applies Phi-3's sliding window (Phi-3-mini: 2047) to every layer when set.
    const window = c.opt("sliding_window");
    return { ...base, tiedEmbeddings: c.tied(false), attentionBias: false, qkNorm: false, slidingWindow: window, layerTypes: slidingLayers(base.nLayers, window) };
  },

  configFromGguf(m: GgufMeta): ModelConfig {
    const base = m.decoder("phi3");
    if (m.opt("rope.dimension_count") !== undefined && m.opt("rope.dimension_count") !== base.headDim) {
      throw new UserError(`${m.where}: partial rotary embeddings (Phi-4-mini) are not supported yet`);
    }
    // llama.cpp writes sliding_window 0 for models without one (Phi-4).
    const window = m.opt("attention.sliding_window") || undefined;
    return { ...base, activation: "silu", tiedEmbeddings: !m.tensor("output.weight"), attentionBias: false, qkNorm: false, slidingWindow: window, layerTypes: slidingLayers(base.nLayers, window) };
  },

  // llama.cpp keeps both fused projections as they are (its ffn_up holds gate | up) and uses NEOX
  // rotary: nothing to undo.
  ggufTensors: (tensors) =>
    ggufEntries(
      tensors,
      ggufRenamer(LLAMA_GGUF_GLOBALS, "model.layers", {
        attn_norm: "input_layernorm",
        attn_qkv: "self_attn.qkv_proj",
        attn_output: "self_attn.o_proj",
        ffn_norm: "post_attention_layernorm",
        ffn_up: "mlp.gate_up_proj",
        ffn_down: "mlp.down_proj",
      }),
    ),

  expectedTensors(cfg) {
    const { hidden: h, nHeads, nKvHeads, headDim: d, intermediate: ff, vocabSize: V } = cfg;
    const { m, t } = shapeTable();
    t("model.embed_tokens.weight", V, h);
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = `model.layers.${l}`;
      t(`${p}.input_layernorm.weight`, h);
      t(`${p}.self_attn.qkv_proj.weight`, (nHeads + 2 * nKvHeads) * d, h);
      t(`${p}.self_attn.o_proj.weight`, h, nHeads * d);
      t(`${p}.post_attention_layernorm.weight`, h);
      t(`${p}.mlp.gate_up_proj.weight`, 2 * ff, h);
      t(`${p}.mlp.down_proj.weight`, h, ff);
    }
    t("model.norm.weight", h);
    if (!cfg.tiedEmbeddings) t("lm_head.weight", V, h);
    return m;
  },

  forward,
  unembedding: llamaUnembedding,
};
