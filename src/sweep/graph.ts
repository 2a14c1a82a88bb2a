/**
 * The sweep's lens graph: per (position, readout) cell only the numbers the corpus statistics need,
 * computed inside onnxruntime so that the [P, R, V] logits never reach JavaScript:
 *
 *   lse      log-sum-exp of the cell's logits (same formula as src/lens/lens-graph.ts)
 *   kl       KL(final || cell) in nats; the last readout of every position is the final residual
 *   top1     the cell's most likely token (ArgMax), compared with the final row's in JS
 *   ce       cross-entropy against the real next token: lse - logit[next]
 *   target_logprob  log-probability of each tracked id [P, R, M]
 *   family_prob     summed probability of each token set [P, R, F]
 *
 * With `translators`, each readout's residual is first mapped by an affine translator
 * (resid @ A[r] + b[r], A as [in, out]): the linear shortcut lens (linear.ts). The last row (the
 * final residual) must get the identity, so the KL reference stays the model's own output.
 */
import { GraphBuilder, type Value } from "../graph/builder.js";
import type { WeightSource } from "../architectures/layers.js";
import { layerNorm, rmsNorm } from "../architectures/layers.js";
import type { Unembedding } from "../architectures/index.js";

export function buildSweepGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number, vocab: number, opts: { translators: boolean }): GraphBuilder {
  const g = new GraphBuilder(`sweep-lens${opts.translators ? "-translated" : ""}`);
  const weights = w(g);
  const resid = g.input("resid", "float32", ["P", "R", hidden]);
  const nextIds = g.input("next_ids", "int64", ["P", "R", 1]); // the next token, repeated over R
  const tracked = g.input("tracked_ids", "int64", ["M"]); // at least one (callers pad)
  const familyMask = g.input("family_mask", "float32", ["F", vocab]); // at least one row

  let h: Value = resid;
  if (opts.translators) {
    const A = g.input("translator_weight", "float32", ["R", hidden, hidden]);
    const b = g.input("translator_bias", "float32", ["R", hidden]);
    // [P, R, H] -> [R, P, H] @ [R, H, H] -> [R, P, H] + [R, 1, H] -> [P, R, H]
    const rp = g.transpose(resid, [1, 0, 2]);
    h = g.transpose(g.add(g.matmul(rp, A), g.unsqueeze(b, [1])), [1, 0, 2]);
  }
  let x: Value = g.reshape(h, [-1, hidden]);
  x = u.norm === "layernorm" ? layerNorm(g, x, weights.get(u.normWeight), weights.get(u.normBias!), u.eps) : rmsNorm(g, x, weights.get(u.normWeight), u.eps, u.norm === "rms_gemma");
  let logits = g.linear(x, weights.get(u.matrix)); // [P*R, V]
  if (u.softcap) logits = g.mul(g.tanh(g.div(logits, g.scalar(u.softcap))), g.scalar(u.softcap));
  const shapePR = g.slice(g.op1("Shape", [resid]), [0], [2], [0]);
  logits = g.op1("Reshape", [logits, g.concat([shapePR, g.ints([-1])], 0)]); // [P, R, V]

  const p = g.softmax(logits, -1);
  const sumP = g.matmul(p, g.constant(new Float32Array(vocab).fill(1), "float32", [vocab, 1])); // [P, R, 1]
  const top1 = g.op1("ArgMax", [logits], { axis: -1, keepdims: 1 }); // [P, R, 1] int64
  const top1Logit = g.op1("GatherElements", [logits, top1], { axis: 2 });
  const top1Prob = g.op1("GatherElements", [p, top1], { axis: 2 });
  const lse = g.add(g.sub(top1Logit, g.op1("Log", [top1Prob])), g.op1("Log", [sumP])); // [P, R, 1]

  const lastRow = (v: Value) => g.slice(v, [-1], [Number.MAX_SAFE_INTEGER], [1]);
  const dots = g.div(g.matmul(logits, g.transpose(lastRow(p), [0, 2, 1])), lastRow(sumP)); // [P, R, 1]
  const crossFinal = g.sub(lastRow(dots), lastRow(lse));
  const kl = g.sub(crossFinal, g.sub(dots, lse));
  const nextLogit = g.op1("GatherElements", [logits, nextIds], { axis: 2 }); // [P, R, 1]
  const ce = g.sub(lse, nextLogit);
  const targetLogprob = g.sub(g.gather(logits, tracked, 2), lse); // [P, R, M]
  const familyProb = g.div(g.matmul(p, g.transpose(familyMask, [1, 0])), sumP); // [P, R, F]

  g.output(g.reshape(lse, [0, 0]), "lse");
  g.output(g.reshape(kl, [0, 0]), "kl");
  g.output(g.reshape(top1, [0, 0]), "top1", "int64");
  g.output(g.reshape(ce, [0, 0]), "ce");
  g.output(targetLogprob, "target_logprob");
  g.output(familyProb, "family_prob");
  return g;
}
