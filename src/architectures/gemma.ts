/**
 * Gemma 2 and Gemma 3 (text). Differences from Llama, each a known trap for lens tools:
 * - RMSNorm scales by (1 + w), and every sub-block is sandwiched: a norm before and after it;
 * - embeddings are multiplied by sqrt(hidden) (rounded to the activation dtype, fp32 here);
 * - attention is scaled by query_pre_attn_scalar^-0.5, alternates sliding-window and global layers,
 *   Gemma 2 soft-caps attention scores and final logits with tanh, Gemma 3 normalises q and k per
 *   head and uses a different rotary base on its sliding layers.
 * Mirrors transformers' Gemma2DecoderLayer / Gemma3DecoderLayer.
 */
import type { GraphBuilder } from "../graph/builder.js";
import type { ModelConfig } from "./config.js";
import { applyRotary, causalAttention, gatedMlp, mergeHeads, rmsNorm, splitHeads, type WeightSource } from "./layers.js";
import { blockHook, hookPoint, logitRows, type ForwardInputs, type ForwardOptions } from "./forward.js";

export function buildGemma(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, nKvHeads: nKv, headDim: d, normEps: eps } = cfg;
  const norm = (x: ReturnType<GraphBuilder["add"]>, name: string) => rmsNorm(g, x, w.get(name), eps, true);

  let x = g.gather(w.get("model.embed_tokens.weight"), inp.inputIds);
  x = g.mul(x, g.scalar(Math.fround(Math.sqrt(cfg.hidden))));
  x = hookPoint(g, opts, "hook_embed", x);

  const scale = 1 / Math.sqrt(cfg.queryPreAttnScalar ?? d);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}`;
    const sliding = cfg.layerTypes[l] === "sliding";
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const h = norm(x, `${p}.input_layernorm.weight`);
    let q = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.q_proj.weight`)), nHeads, d);
    let k = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.k_proj.weight`)), nKv, d);
    const v = splitHeads(g, g.linear(h, w.get(`${p}.self_attn.v_proj.weight`)), nKv, d);
    if (cfg.qkNorm) {
      q = norm(q, `${p}.self_attn.q_norm.weight`);
      k = norm(k, `${p}.self_attn.k_norm.weight`);
    }
    const cos = sliding ? inp.ropeCosLocal : inp.ropeCos;
    const sin = sliding ? inp.ropeSinLocal : inp.ropeSin;
    q = applyRotary(g, q, cos, sin, d);
    k = applyRotary(g, k, cos, sin, d);
    const att = causalAttention(g, {
      q, k, v,
      pastK: inp.pastKey[l]!,
      pastV: inp.pastValue[l]!,
      mask: sliding ? inp.maskSliding : inp.maskFull,
      nHeads, nKv, headDim: d,
      scale,
      softcap: cfg.attnSoftcap,
    });
    g.output(att.presentK, `present_key.${l}`);
    g.output(att.presentV, `present_value.${l}`);
    const attnProj = g.linear(mergeHeads(g, att.out, nHeads, d), w.get(`${p}.self_attn.o_proj.weight`));
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), norm(attnProj, `${p}.post_attention_layernorm.weight`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const h2 = norm(x, `${p}.pre_feedforward_layernorm.weight`);
    const mlp = gatedMlp(g, h2, w, `${p}.mlp`, cfg.activation);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), norm(mlp, `${p}.post_feedforward_layernorm.weight`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }

  const normed = hookPoint(g, opts, "ln_final.hook_normalized", norm(x, "model.norm.weight"));
  if (opts.logits !== "none") {
    const unembed = cfg.tiedEmbeddings ? w.get("model.embed_tokens.weight") : w.get("lm_head.weight");
    let logits = g.linear(logitRows(g, opts, normed), unembed);
    if (cfg.finalSoftcap) logits = g.mul(g.tanh(g.div(logits, g.scalar(cfg.finalSoftcap))), g.scalar(cfg.finalSoftcap));
    g.output(logits, "logits");
  }
}
