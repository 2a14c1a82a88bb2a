/**
 * The lens as an onnxruntime graph, so that only compact results cross into JavaScript.
 *
 * Input `resid` [P, R, hidden]: P positions x R readouts; for every position the last readout must
 * be the final layer's residual, so that its distribution is the model's own output (the reference
 * for KL). For each cell: logits = unembed(norm(resid)) with the norm's statistics recomputed from
 * that very residual (not a cached scale: TransformerLens #1076), then top-k, entropy, KL to final
 * and, in the tracking variant, the logit and rank of tracked ids and the mass of token families.
 *
 * This is the hot path (positions x readouts x vocabulary elements, a 262k vocabulary for Gemma),
 * so it is arranged to touch the [P, R, V] logits as few times as possible:
 *   p       = softmax(logits),  lse = logit_top1 - log(p_top1)
 *   entropy = lse - sum(p * logits)
 *   KL_r    = (D_final - lse_final) - (D_r - lse_r),  D_r = sum(p_final * logits_r)
 * where the D are one batched matrix product against the final distribution.
 */
import { GraphBuilder, type Value } from "../graph/builder.js";
import type { WeightSource } from "../architectures/layers.js";
import { layerNorm, rmsNorm } from "../architectures/layers.js";
import type { Unembedding } from "../architectures/index.js";

export type LensVariant = "logit" | "raw";

export interface LensGraphOptions {
  variant: LensVariant;
  /** Add tracked-id logits and ranks and family masses (inputs `tracked_ids`, `family_mask`). */
  tracking: boolean;
}

export function buildLensGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number, vocab: number, opts: LensGraphOptions): GraphBuilder {
  const g = new GraphBuilder(`lens-${opts.variant}${opts.tracking ? "-tracking" : ""}`);
  const weights = w(g);
  const resid = g.input("resid", "float32", ["P", "R", hidden]);
  const k = g.input("k", "int64", [1]);

  let x: Value = g.reshape(resid, [-1, hidden]);
  if (opts.variant === "logit") {
    x =
      u.norm === "layernorm"
        ? layerNorm(g, x, weights.get(u.normWeight), weights.get(u.normBias!), u.eps)
        : rmsNorm(g, x, weights.get(u.normWeight), u.eps, u.norm === "rms_gemma");
  }
  let logits = g.linear(x, weights.get(u.matrix)); // [P*R, V]
  if (u.softcap) logits = g.mul(g.tanh(g.div(logits, g.scalar(u.softcap))), g.scalar(u.softcap));
  const shapePR = g.slice(g.op1("Shape", [resid]), [0], [2], [0]);
  logits = g.op1("Reshape", [logits, g.concat([shapePR, g.ints([-1])], 0)]); // [P, R, V]

  // One fused Softmax gives the probabilities. The log-sum-exp then follows from the top token:
  // p_top = exp(logit_top - lse), so lse = logit_top - log p_top (well conditioned: p_top >= 1/V).
  // Softmax normalises with an fp32 sum over the whole vocabulary; its rounding (1e-4 on a 262k
  // row) is measured and removed by summing p again as a matrix product with a column of ones
  // (the GEMM kernel sums in short blocks, not one 262k-long chain as fp32 ReduceSum would):
  // every use of p below divides by that sum. Only the logits and p ([P, R, V]) are ever alive.
  const p = g.softmax(logits, -1);
  const sumP = g.matmul(p, g.constant(new Float32Array(vocab).fill(1), "float32", [vocab, 1])); // [P, R, 1], ~1
  const [topLogits, topIds] = g.op("TopK", [logits, k], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });
  const top1Logit = g.slice(topLogits!, [0], [1], [2]); // [P, R, 1]
  const top1Prob = g.op1("GatherElements", [p, g.slice(topIds!, [0], [1], [2])], { axis: 2 }); // [P, R, 1]
  const lse = g.add(g.sub(top1Logit, g.op1("Log", [top1Prob])), g.op1("Log", [sumP])); // [P, R, 1]

  // Expected logits, as one batched product per position: G[p] = logits[p] @ p[p]^T, [R, R], with
  // G[r, r'] = sum_v logits_r,v * p_r',v. Its diagonal is each cell's expected logit under its own
  // distribution (for the entropy) and its last column the expected logit under the final
  // distribution (for KL). The R x R product costs R/hidden of the unembedding's (5 % on SmolLM2)
  // and runs as one efficient GEMM; the two [1 x V] @ [V x 1] products per row it replaces ran at
  // a sixteenth of the kernel's speed and took 18 % of the lens graph (profiled on SmolLM2).
  const G = g.op1("MatMul", [logits, g.transpose(p, [0, 2, 1])]); // [P, R, R]
  const shapeP = g.slice(g.op1("Shape", [resid]), [0], [1], [0]); // [1]
  const scalarR = g.reshape(g.slice(g.op1("Shape", [resid]), [1], [2], [0]), []);
  const rowIndex = g.reshape(g.op1("Range", [g.constant([0], "int64", []), scalarR, g.constant([1], "int64", [])]), [1, -1, 1]); // [1, R, 1]
  const diagonal = g.op1("GatherElements", [G, g.op1("Expand", [rowIndex, g.concat([shapeP, g.ints([1, 1])], 0)])], { axis: 2 }); // [P, R, 1]
  const expLogit = g.div(diagonal, sumP); // [P, R, 1]
  const entropy = g.sub(lse, expLogit);
  const lastRow = (x: Value) => g.slice(x, [-1], [Number.MAX_SAFE_INTEGER], [1]);
  const dots = g.div(g.slice(G, [-1], [Number.MAX_SAFE_INTEGER], [2]), lastRow(sumP)); // [P, R, 1]: sum_v p_final * logits_r
  const crossFinal = g.sub(lastRow(dots), lastRow(lse)); // [P, 1, 1]
  const kl = g.sub(crossFinal, g.sub(dots, lse)); // [P, R, 1]

  g.output(topLogits!, "top_logits");
  g.output(topIds!, "top_ids", "int64");
  g.output(g.reshape(lse, [0, 0]), "logsumexp");
  g.output(g.reshape(entropy, [0, 0]), "entropy");
  g.output(g.reshape(kl, [0, 0]), "kl_to_final");

  if (opts.tracking) {
    const tracked = g.input("tracked_ids", "int64", ["M"]); // at least one id (callers pad)
    const familyMask = g.input("family_mask", "float32", ["F", "V"]); // 1 where a token is in the family
    // Tracked ids: their logits, and their rank = how many tokens score strictly higher.
    const trackedLogits = g.gather(logits, tracked, 2); // [P, R, M]
    const higher = g.op1("Greater", [g.unsqueeze(logits, [3]), g.unsqueeze(trackedLogits, [2])]); // [P, R, V, M]
    const rank = g.reduceSum(g.op1("Cast", [higher], { to: 6 /* int32 */ }), [2], 0); // [P, R, M]
    // Families: summed probability of every member, one matrix product for all families.
    const familyProb = g.div(g.matmul(p, g.transpose(familyMask, [1, 0])), sumP); // [P, R, F]
    g.output(trackedLogits, "tracked_logits");
    g.output(rank, "tracked_rank", "int32");
    g.output(familyProb, "family_prob");
  }
  return g;
}
