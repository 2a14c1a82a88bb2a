/**
 * The lens as an onnxruntime graph, so that only compact results cross into JavaScript.
 *
 * Input `resid` [R, P, hidden]: R readouts x P positions; the last readout must be the final
 * layer's residual, so that its distribution is the model's own output (the reference for KL).
 * For each cell: logits = unembed(norm(resid)) with the norm's statistics recomputed from that
 * very residual (not a cached scale: TransformerLens #1076), then top-k, entropy, KL to final,
 * the logit and rank of tracked token ids, and the summed probability of token families.
 */
import { GraphBuilder, type Value } from "../graph/builder.js";
import type { WeightSource } from "../architectures/layers.js";
import { layerNorm, rmsNorm } from "../architectures/layers.js";
import type { Unembedding } from "../architectures/index.js";

export type LensVariant = "logit" | "raw";

export function buildLensGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number, variant: LensVariant): GraphBuilder {
  const g = new GraphBuilder(`lens-${variant}`);
  const weights = w(g);
  const resid = g.input("resid", "float32", ["R", "P", hidden]);
  const k = g.input("k", "int64", [1]);
  const tracked = g.input("tracked_ids", "int64", ["M"]); // at least one id (callers pad)
  const familyMask = g.input("family_mask", "float32", ["F", "V"]); // 1 where a token is in the family

  let x: Value = g.reshape(resid, [-1, hidden]);
  if (variant === "logit") {
    x =
      u.norm === "layernorm"
        ? layerNorm(g, x, weights.get(u.normWeight), weights.get(u.normBias!), u.eps)
        : rmsNorm(g, x, weights.get(u.normWeight), u.eps, u.norm === "rms_gemma");
  }
  let logits = g.linear(x, weights.get(u.matrix)); // [R*P, V]
  if (u.softcap) logits = g.mul(g.tanh(g.div(logits, g.scalar(u.softcap))), g.scalar(u.softcap));
  // Back to [R, P, V], taking R and P from the input's shape.
  const shapeRP = g.slice(g.op1("Shape", [resid]), [0], [2], [0]);
  logits = g.op1("Reshape", [logits, g.concat([shapeRP, g.ints([-1])], 0)]);

  // log-sum-exp over the vocabulary with the sum in float64: onnxruntime's fp32 reductions add a
  // 262k-long row sequentially, which shifts every log-probability by up to 5e-4.
  const max = g.op1("ReduceMax", [logits, g.ints([-1])], { keepdims: 1 }); // [R, P, 1]
  const sumExp = g.reduceSum(g.op1("Cast", [g.exp(g.sub(logits, max))], { to: 11 /* double */ }), [-1], 1);
  const lse = g.add(max, g.op1("Cast", [g.op1("Log", [sumExp])], { to: 1 /* float */ })); // [R, P, 1]
  const logp = g.sub(logits, lse);
  const p = g.exp(logp);
  const entropy = g.neg(g.reduceSum(g.mul(p, logp), [-1], 0)); // [R, P]
  const finalLogp = g.slice(logp, [-1], [Number.MAX_SAFE_INTEGER], [0]); // [1, P, V]
  const kl = g.reduceSum(g.mul(g.exp(finalLogp), g.sub(finalLogp, logp)), [-1], 0); // [R, P]
  const [topLogits, topIds] = g.op("TopK", [logits, k], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });

  // Tracked ids: their logits, and their rank = how many tokens score strictly higher.
  const trackedLogits = g.gather(logits, tracked, 2); // [R, P, M]
  const higher = g.op1("Greater", [g.unsqueeze(logits, [3]), g.unsqueeze(trackedLogits, [2])]); // [R, P, V, M]
  const rank = g.reduceSum(g.op1("Cast", [higher], { to: 6 /* int32 */ }), [2], 0); // [R, P, M]
  // Families: summed probability of every token in the family, one matrix product for all.
  const familyProb = g.matmul(p, g.transpose(familyMask, [1, 0])); // [R, P, F]

  g.output(topLogits!, "top_logits");
  g.output(topIds!, "top_ids", "int64");
  g.output(g.reshape(lse, [0, 0]), "logsumexp");
  g.output(entropy, "entropy");
  g.output(kl, "kl_to_final");
  g.output(trackedLogits, "tracked_logits");
  g.output(rank, "tracked_rank", "int32");
  g.output(familyProb, "family_prob");
  return g;
}
