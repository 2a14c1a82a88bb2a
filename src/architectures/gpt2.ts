/**
 * GPT-2: LayerNorm with bias, learned absolute positions, fused q/k/v projection, and
 * transformers' Conv1D weights stored [in, out] (so x @ W, not x @ W^T). Mirrors GPT2Block.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { ModelConfig } from "./config.js";
import { activation, causalAttention, layerNorm, mergeHeads, splitHeads, type WeightSource } from "./layers.js";
import { blockHook, hookPoint, logitRows, type ForwardInputs, type ForwardOptions } from "./forward.js";

/** transformers' Conv1D: y = x @ W + b with W stored [in, out]. */
function conv1d(g: GraphBuilder, x: Value, w: WeightSource, prefix: string): Value {
  return g.op1("Gemm", [x, w.get(`${prefix}.weight`), w.get(`${prefix}.bias`)]);
}

export function buildGpt2(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inp: ForwardInputs, opts: ForwardOptions): void {
  const { nHeads, headDim: d, hidden, normEps: eps } = cfg;
  const ln = (x: Value, prefix: string) => layerNorm(g, x, w.get(`${prefix}.weight`), w.get(`${prefix}.bias`), eps);

  const tok = hookPoint(g, opts, "hook_embed", g.gather(w.get("transformer.wte.weight"), inp.inputIds));
  const pos = hookPoint(g, opts, "hook_pos_embed", g.gather(w.get("transformer.wpe.weight"), inp.positionIds));
  let x = g.add(tok, pos);

  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `transformer.h.${l}`;
    x = hookPoint(g, opts, blockHook(l, "hook_resid_pre"), x);

    const qkv = conv1d(g, ln(x, `${p}.ln_1`), w, `${p}.attn.c_attn`);
    const [q, k, v] = g.split(qkv, [hidden, hidden, hidden], -1);
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
    const attnOut = hookPoint(g, opts, blockHook(l, "hook_attn_out"), conv1d(g, mergeHeads(g, att.out, nHeads, d), w, `${p}.attn.c_proj`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_mid"), g.add(x, attnOut));

    const hidden4 = activation(g, conv1d(g, ln(x, `${p}.ln_2`), w, `${p}.mlp.c_fc`), cfg.activation);
    const mlpOut = hookPoint(g, opts, blockHook(l, "hook_mlp_out"), conv1d(g, hidden4, w, `${p}.mlp.c_proj`));
    x = hookPoint(g, opts, blockHook(l, "hook_resid_post"), g.add(x, mlpOut));
  }

  const normed = hookPoint(g, opts, "ln_final.hook_normalized", ln(x, "transformer.ln_f"));
  if (opts.logits !== "none") {
    const unembed = cfg.tiedEmbeddings ? w.get("transformer.wte.weight") : w.get("lm_head.weight");
    g.output(g.linear(logitRows(g, opts, normed), unembed), "logits");
  }
}
