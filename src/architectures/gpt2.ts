/**
 * GPT-2: LayerNorm with bias, learned absolute positions, fused q/k/v projection. Mirrors GPT2Block.
 *
 * transformers stores GPT-2's projections as Conv1D weights [in, out] (y = x @ W + b); llama.cpp
 * stores them [out, in] like every other linear layer. We use llama.cpp's layout, so that every
 * projection is a plain `linear` (and a quantized GGUF stays as it is): the Hugging Face folder's
 * Conv1D weights are transposed once when converted.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { GgufMeta, HfConfig, ModelConfig } from "./config.js";
import type { WeightEntry } from "../formats/weight-store.js";
import { transpose2d } from "./conversions.js";
import { ggufEntries, ggufRenamer, shapeTable, type Family, type Unembedding } from "./family.js";
import { blockHook, finalLayer, hookPoint, hookZ, standardHookNames, type ForwardInputs, type ForwardOptions } from "./forward.js";
import { activation, causalAttention, layerNorm, mergeHeads, splitHeads, type WeightSource } from "./layers.js";

function forward(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, headDim: d, hidden, normEps: eps } = cfg;
  const ln = (x: Value, prefix: string) => layerNorm(g, x, w.get(`${prefix}.weight`), w.get(`${prefix}.bias`), eps);
  const linear = (x: Value, prefix: string) => g.linear(x, w.get(`${prefix}.weight`), w.get(`${prefix}.bias`));

  const tok = hookPoint(g, opts, "hook_embed", g.gather(w.get("transformer.wte.weight"), inp.inputIds));
  const pos = hookPoint(g, opts, "hook_pos_embed", g.gather(w.get("transformer.wpe.weight"), inp.positionIds));
  let x = g.add(tok, pos);

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `transformer.h.${l}`;
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const [q, k, v] = g.split(linear(ln(x, `${p}.ln_1`), `${p}.attn.c_attn`), [hidden, hidden, hidden], -1);
    // Learned positions: no rotary, so the shared attention core is called without it.
    const att = causalAttention(g, {
      q: splitHeads(g, q!, nHeads, d),
      k: splitHeads(g, k!, nHeads, d),
      v: splitHeads(g, v!, nHeads, d),
      pastK: inp.pastKey[l]!,
      pastV: inp.pastValue[l]!,
      mask: inp.maskFull,
      nHeads, nKv: nHeads, headDim: d,
      scale: 1 / Math.sqrt(d),
    });
    g.output(att.presentK, `present_key.${l}`);
    g.output(att.presentV, `present_value.${l}`);
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), linear(mergeHeads(g, att.out, nHeads, d, hookZ(g, opts, l)), `${p}.attn.c_proj`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const hidden4 = activation(g, linear(ln(x, `${p}.ln_2`), `${p}.mlp.c_fc`), cfg.activation);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), linear(hidden4, `${p}.mlp.c_proj`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }
  finalLayer(g, opts, w, unembedding(cfg), x);
}

function unembedding(cfg: ModelConfig): Unembedding {
  return {
    norm: "layernorm",
    normWeight: "transformer.ln_f.weight",
    normBias: "transformer.ln_f.bias",
    eps: cfg.normEps,
    matrix: cfg.tiedEmbeddings ? "transformer.wte.weight" : "lm_head.weight",
  };
}

const CONV1D = /(c_attn|c_proj|c_fc)\.weight$/;

export const gpt2: Family<ModelConfig, "gpt2"> = {
  name: "gpt2",
  hfModelTypes: ["gpt2"],
  ggufArchitectures: ["gpt2"],

  configFromHf(c: HfConfig): ModelConfig {
    const hidden = c.num("n_embd");
    const nHeads = c.num("n_head");
    const nLayers = c.num("n_layer");
    return {
      architecture: "gpt2",
      nLayers,
      hidden,
      nHeads,
      nKvHeads: nHeads,
      headDim: hidden / nHeads,
      intermediate: c.opt("n_inner") ?? 4 * hidden,
      vocabSize: c.num("vocab_size"),
      maxPositions: c.num("n_positions"),
      normEps: c.num("layer_norm_epsilon", 1e-5),
      activation: "gelu_tanh",
      tiedEmbeddings: c.tied(true),
      attentionBias: true,
      qkNorm: false,
      layerTypes: c.layerTypes(nLayers),
    };
  },

  configFromGguf(m: GgufMeta): ModelConfig {
    const { ropeTheta: _learnedPositions, ...base } = m.decoder("gpt2");
    return {
      ...base,
      // llama.cpp's converter writes feed_forward_length = 4 * n_embd whatever n_inner says: trust the tensor.
      intermediate: m.tensor("blk.0.ffn_up.weight")?.shape[0] ?? base.intermediate,
      normEps: m.num("attention.layer_norm_epsilon", 1e-5),
      activation: "gelu_tanh",
      tiedEmbeddings: !m.tensor("output.weight"),
      attentionBias: true,
      qkNorm: false,
      layerTypes: Array.from({ length: base.nLayers }, () => "full"),
    };
  },

  hfTensors(refs) {
    const entries = new Map<string, WeightEntry>();
    for (const ref of refs) {
      // Attention-mask buffers (`attn.bias`, `attn.masked_bias`) are not weights.
      if (/\.attn\.(masked_)?bias$/.test(ref.name)) continue;
      // The original `gpt2` Hub checkpoint lacks the `transformer.` prefix.
      const name = ref.name.startsWith("transformer.") || ref.name.startsWith("lm_head.") ? ref.name : `transformer.${ref.name}`;
      entries.set(name, { ref, transform: CONV1D.test(name) ? transpose2d : undefined });
    }
    return entries;
  },

  ggufTensors(tensors) {
    const rename = ggufRenamer(
      {
        "token_embd.weight": "transformer.wte.weight",
        "position_embd.weight": "transformer.wpe.weight",
        "output_norm.weight": "transformer.ln_f.weight",
        "output_norm.bias": "transformer.ln_f.bias",
        "output.weight": "lm_head.weight",
      },
      "transformer.h",
      { attn_norm: "ln_1", attn_qkv: "attn.c_attn", attn_output: "attn.c_proj", ffn_norm: "ln_2", ffn_up: "mlp.c_fc", ffn_down: "mlp.c_proj" },
    );
    return ggufEntries(tensors, rename);
  },

  expectedTensors(cfg) {
    const { hidden: h, intermediate: ff, vocabSize: V } = cfg;
    const { m, t } = shapeTable();
    t("transformer.wte.weight", V, h);
    t("transformer.wpe.weight", cfg.maxPositions, h);
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = `transformer.h.${l}`;
      for (const n of ["ln_1", "ln_2"]) { t(`${p}.${n}.weight`, h); t(`${p}.${n}.bias`, h); }
      t(`${p}.attn.c_attn.weight`, 3 * h, h); t(`${p}.attn.c_attn.bias`, 3 * h);
      t(`${p}.attn.c_proj.weight`, h, h); t(`${p}.attn.c_proj.bias`, h);
      t(`${p}.mlp.c_fc.weight`, ff, h); t(`${p}.mlp.c_fc.bias`, ff);
      t(`${p}.mlp.c_proj.weight`, h, ff); t(`${p}.mlp.c_proj.bias`, h);
    }
    t("transformer.ln_f.weight", h);
    t("transformer.ln_f.bias", h);
    if (!cfg.tiedEmbeddings) t("lm_head.weight", V, h);
    return m;
  },

  hookNames: (cfg) => standardHookNames(cfg, { afterEmbed: ["hook_pos_embed"] }),
  forward,
  unembedding,
};
