/**
 * Llama family: Llama 2/3, SmolLM2, Mistral, Qwen2 (q/k/v biases), Qwen3 (per-head q/k RMSNorm).
 * Mirrors transformers' LlamaDecoderLayer: pre-norm attention and gated MLP on a residual stream.
 */
import type { GraphBuilder } from "../graph/builder.js";
import type { ModelConfig } from "./config.js";
import { applyRotary, causalAttention, gatedMlp, mergeHeads, rmsNorm, splitHeads, type WeightSource } from "./layers.js";
import { blockHook, hookPoint, logitRows, type ForwardInputs, type ForwardOptions } from "./forward.js";

export function buildLlama(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, nKvHeads: nKv, headDim: d, normEps: eps } = cfg;
  const bias = (name: string) => (cfg.attentionBias && w.has(name) ? w.get(name) : undefined);

  let x = g.gather(w.get("model.embed_tokens.weight"), inp.inputIds);
  x = hookPoint(g, opts, "hook_embed", x);

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    const sliding = cfg.layerTypes[l] === "sliding";
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    // Attention sub-block
    const h = rmsNorm(g, x, w.get(`${p}.input_layernorm.weight`), eps, false);
    let q = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.q_proj.weight`), bias(`${p}.self_attn.q_proj.bias`)), nHeads, d);
    let k = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.k_proj.weight`), bias(`${p}.self_attn.k_proj.bias`)), nKv, d);
    const v = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.v_proj.weight`), bias(`${p}.self_attn.v_proj.bias`)), nKv, d);
    if (cfg.qkNorm) {
      q = rmsNorm(g, q, w.get(`${p}.self_attn.q_norm.weight`), eps, false);
      k = rmsNorm(g, k, w.get(`${p}.self_attn.k_norm.weight`), eps, false);
    }
    q = applyRotary(g, q, inp.ropeCos, inp.ropeSin, d);
    k = applyRotary(g, k, inp.ropeCos, inp.ropeSin, d);
    const att = causalAttention(g, {
      q, k, v,
      pastK: inp.pastKey[l]!,
      pastV: inp.pastValue[l]!,
      mask: sliding ? inp.maskSliding : inp.maskFull,
      nHeads, nKv, headDim: d,
      scale: 1 / Math.sqrt(d),
    });
    g.output(att.presentK, `present_key.${l}`);
    g.output(att.presentV, `present_value.${l}`);
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), g.linear(mergeHeads(g, att.out, nHeads, d), w.get(`${p}.self_attn.o_proj.weight`)));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    // MLP sub-block
    const h2 = rmsNorm(g, x, w.get(`${p}.post_attention_layernorm.weight`), eps, false);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), gatedMlp(g, h2, w, `${p}.mlp`, cfg.activation));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }

  const normed = hookPoint(g, opts, "ln_final.hook_normalized", rmsNorm(g, x, w.get("model.norm.weight"), eps, false));
  if (opts.logits !== "none") {
    const unembed = cfg.tiedEmbeddings ? w.get("model.embed_tokens.weight") : w.get("lm_head.weight");
    g.output(g.linear(logitRows(g, opts, normed), unembed), "logits");
  }
}
