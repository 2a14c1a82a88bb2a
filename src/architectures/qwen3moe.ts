/**
 * Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention (per-head q/k RMSNorm) with a
 * mixture-of-experts MLP. A router (`mlp.gate`, [experts, hidden]) scores every expert for every
 * token; the softmax's top k are kept (renormalised to sum to 1 where `norm_topk_prob`), and the
 * MLP output is the sum of those experts' gated MLPs weighted by them. Mirrors transformers'
 * Qwen3MoeSparseMoeBlock.
 *
 * The router's choices are hook points in TransformerLens's names, [T, k] each, so a lens report
 * can show which experts every layer used: `blocks.{l}.mlp.hook_expert_indices` (expert ids, as
 * floats) and `blocks.{l}.mlp.hook_expert_weights` (their weights).
 *
 * Every expert runs on every token and the unchosen ones are weighted 0: exact, simple, and each
 * expert's matrices stay plain `linear`s (so they can stay quantized); it costs experts/k times the
 * MLP compute of a sparse dispatch, which matters for big models and not for correctness.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import { UserError } from "../errors.js";
import type { TensorRef } from "../formats/tensor-ref.js";
import type { WeightEntry } from "../formats/weight-store.js";
import type { GgufMeta, HfConfig, ModelConfig } from "./config.js";
import { expertSlice } from "./conversions.js";
import { ggufEntries, ggufRenamer, shapeTable, type Family } from "./family.js";
import { blockHook, finalLayer, hookPoint, standardHookNames, type ForwardInputs, type ForwardOptions } from "./forward.js";
import { gatedMlp, rmsNorm, type WeightSource } from "./layers.js";
import { LLAMA_GGUF_BLOCK, LLAMA_GGUF_GLOBALS, llamaAttentionShapes, llamaSelfAttention, llamaUnembedding } from "./llama.js";

export interface Qwen3MoeConfig extends ModelConfig {
  nExperts: number;
  /** Experts used per token (k). */
  topK: number;
  /** Renormalise the k chosen weights to sum to 1. */
  normTopK: boolean;
  /** Each expert's MLP width. */
  expertIntermediate: number;
}

const routerHooks = (l: number) => [`blocks.${l}.mlp.hook_expert_indices`, `blocks.${l}.mlp.hook_expert_weights`];

/** The sparse MLP of layer `l` on normed input h [T, hidden]. */
function moeMlp(g: GraphBuilder, cfg: Qwen3MoeConfig, w: WeightSource, opts: ForwardOptions, l: number, h: Value): Value {
  const p = `model.layers.${l}.mlp`;
  const probs = g.softmax(g.linear(h, w.get(`${p}.gate.weight`)), -1); // [T, experts]
  const [topWeights, topIds] = g.op("TopK", [probs, g.ints([cfg.topK])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 }) as [Value, Value];
  const weights = cfg.normTopK ? g.div(topWeights, g.reduceSum(topWeights, [-1])) : topWeights;
  const [idsHook, weightsHook] = routerHooks(l) as [string, string];
  hookPoint(g, opts, idsHook, g.op1("Cast", [topIds], { to: 1 /* float */ }));
  hookPoint(g, opts, weightsHook, weights);
  // Every expert's weight per token: the chosen ones', 0 elsewhere.
  const dense = g.op1("ScatterElements", [g.mul(probs, g.scalar(0)), topIds, weights], { axis: 1 }); // [T, experts]
  let out: Value | undefined;
  for (let e = 0; e < cfg.nExperts; e++) {
    const y = g.mul(gatedMlp(g, h, w, `${p}.experts.${e}`, cfg.activation), g.slice(dense, [e], [e + 1], [1]));
    out = out ? g.add(out, y) : y;
  }
  return out!;
}

function forward(g: GraphBuilder, cfg: Qwen3MoeConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const eps = cfg.normEps;
  let x = hookPoint(g, opts, "hook_embed", g.gather(w.get("model.embed_tokens.weight"), inp.inputIds));

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const h = rmsNorm(g, x, w.get(`${p}.input_layernorm.weight`), eps, false);
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), llamaSelfAttention(g, cfg, w, inp, opts, l, h));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const h2 = rmsNorm(g, x, w.get(`${p}.post_attention_layernorm.weight`), eps, false);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), moeMlp(g, cfg, w, opts, l, h2));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }
  finalLayer(g, opts, w, llamaUnembedding(cfg), x);
}

/** llama.cpp stacks each layer's experts into one [experts, rows, cols] tensor: one entry per expert here. */
function ggufTensors(tensors: TensorRef[], cfg: Qwen3MoeConfig): Map<string, WeightEntry> {
  const entries = ggufEntries(tensors, ggufRenamer(LLAMA_GGUF_GLOBALS, "model.layers", { ...LLAMA_GGUF_BLOCK, ffn_gate_inp: "mlp.gate" }));
  for (const ref of tensors) {
    const m = /^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$/.exec(ref.name);
    if (!m) continue;
    for (let e = 0; e < cfg.nExperts; e++) entries.set(`model.layers.${m[1]}.mlp.experts.${e}.${m[2]}_proj.weight`, { ref: expertSlice(ref, e) });
  }
  return entries;
}

export const qwen3moe: Family<Qwen3MoeConfig, "qwen3moe"> = {
  name: "qwen3moe",
  hfModelTypes: ["qwen3_moe"],
  ggufArchitectures: ["qwen3moe"],

  configFromHf(c: HfConfig): Qwen3MoeConfig {
    const base = c.decoder("qwen3moe");
    // Layers listed in mlp_only_layers, or off the decoder_sparse_step grid, would have a dense MLP:
    // no released Qwen3-MoE has one, so they are refused rather than guessed.
    const step = c.opt("decoder_sparse_step") ?? 1;
    const dense = c.get("mlp_only_layers");
    if (step !== 1 || (Array.isArray(dense) && dense.length > 0)) throw new UserError(`${c.where}: Qwen3-MoE with dense MLP layers (mlp_only_layers, decoder_sparse_step) is not supported yet`);
    return {
      ...base,
      tiedEmbeddings: c.tied(false),
      attentionBias: c.get("attention_bias") === true,
      qkNorm: true,
      layerTypes: c.layerTypes(base.nLayers),
      nExperts: c.opt("num_experts") ?? c.num("num_local_experts"),
      topK: c.num("num_experts_per_tok"),
      normTopK: c.get("norm_topk_prob") === true,
      expertIntermediate: c.num("moe_intermediate_size"),
    };
  },

  configFromGguf(m: GgufMeta): Qwen3MoeConfig {
    const base = m.decoder("qwen3moe");
    return {
      ...base,
      activation: "silu",
      tiedEmbeddings: !m.tensor("output.weight"),
      attentionBias: !!m.tensor("blk.0.attn_q.bias"),
      qkNorm: true,
      layerTypes: Array.from({ length: base.nLayers }, () => "full"),
      nExperts: m.num("expert_count"),
      topK: m.num("expert_used_count"),
      // llama.cpp's qwen3moe graph always renormalises the chosen weights (as every Qwen3-MoE does).
      normTopK: m.get("expert_weights_norm") !== false,
      expertIntermediate: m.num("expert_feed_forward_length"),
    };
  },

  ggufTensors,

  expectedTensors(cfg) {
    const { hidden: h, vocabSize: V, expertIntermediate: ff } = cfg;
    const { m, t } = shapeTable();
    t("model.embed_tokens.weight", V, h);
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = `model.layers.${l}`;
      t(`${p}.input_layernorm.weight`, h);
      t(`${p}.post_attention_layernorm.weight`, h);
      llamaAttentionShapes(t, cfg, p);
      t(`${p}.mlp.gate.weight`, cfg.nExperts, h);
      for (let e = 0; e < cfg.nExperts; e++) {
        t(`${p}.mlp.experts.${e}.gate_proj.weight`, ff, h);
        t(`${p}.mlp.experts.${e}.up_proj.weight`, ff, h);
        t(`${p}.mlp.experts.${e}.down_proj.weight`, h, ff);
      }
    }
    t("model.norm.weight", h);
    if (!cfg.tiedEmbeddings) t("lm_head.weight", V, h);
    return m;
  },

  hookNames: (cfg) => standardHookNames(cfg, { perBlock: routerHooks }),
  forward,
  unembedding: llamaUnembedding,
};
