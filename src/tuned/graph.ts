/**
 * The tuned lens's training step as two onnxruntime graphs, the backward pass written by hand.
 *
 * Why by hand, in onnxruntime: the model is tiny next to its readout. Per token and layer the cost
 * is two [hidden x vocab] products (logits forward, their gradient back to the residual); the
 * rest (a norm, a softmax, an [H, H] map) is small. onnxruntime already runs those products
 * multi-threaded with its MLAS kernels for the lens itself, so the gradient stays in the same
 * engine, with the same fp32 unembedding the lens reads through (`lensWeightsFor`), and the whole
 * backward pass is eight lines of algebra (below) with a finite-difference test
 * (test/tuned/gradient.test.ts). onnxruntime-training has no Node package, and the JS autodiff
 * libraries (TensorFlow.js on tfjs-node) would hold a second copy of the unembedding and run
 * the same two MatMuls through another kernel library; docs/tuned-lens.md has the measurement.
 *
 * `target` graph:  final residual [N, H] -> log p = log_softmax(final logits) [N, V], computed
 *                  once per batch and fed to every `step` call of that batch.
 * `step` graph:    residuals [R, N, H] of R layers, their translators A [R, H, H] ([in, out]),
 *                  b [R, H] ->
 *   h'   = h + h A + b                   (tuned-lens's residual parametrisation: A = 0 is identity)
 *   x    = norm(h')                      (the model's final norm, recomputed per row)
 *   z    = x U^T (+ softcap)             (U [V, H], the unembedding)
 *   loss = mean_n sum_v p (log p - log_softmax z)        per layer: KL(final || lens), nats
 * and its gradient:
 *   dz   = (softmax z - p) / N           (softcap: times 1 - (z / cap)^2)
 *   dx   = dz U
 *   dh'  = norm backward of dx           RMS: r (g - x^ mean(g x^)), g = dx * scale, x^ = h' r
 *                                        LayerNorm: r (g - mean(g) - x^ mean(g x^))
 *   dA   = h^T dh',  db = sum_n dh'
 */
import { GraphBuilder, type Value } from "../graph/builder.js";
import type { WeightSource } from "../architectures/layers.js";
import type { Unembedding } from "../architectures/index.js";

interface Normalized {
  /** The normalised rows x^ (before scale and shift). */
  xhat: Value;
  /** 1 / sqrt(var + eps) per row [.., 1]. */
  r: Value;
  /** The per-channel scale the norm multiplies by (w, or 1 + w for Gemma). */
  scale: Value;
  /** norm(h) */
  y: Value;
}

function normForward(g: GraphBuilder, h: Value, w: WeightSource, u: Unembedding): Normalized {
  const weight = w.get(u.normWeight);
  const scale = u.norm === "rms_gemma" ? g.add(g.scalar(1), weight) : weight;
  let centered = h;
  if (u.norm === "layernorm") centered = g.sub(h, g.reduceMean(h, [-1]));
  const variance = g.reduceMean(g.mul(centered, centered), [-1]);
  const r = g.div(g.scalar(1), g.sqrt(g.add(variance, g.scalar(u.eps))));
  const xhat = g.mul(centered, r);
  let y = g.mul(xhat, scale);
  if (u.norm === "layernorm") y = g.add(y, w.get(u.normBias!));
  return { xhat, r, scale, y };
}

function normBackward(g: GraphBuilder, n: Normalized, dy: Value, u: Unembedding): Value {
  const gx = g.mul(dy, n.scale);
  let inner = g.sub(gx, g.mul(n.xhat, g.reduceMean(g.mul(gx, n.xhat), [-1])));
  if (u.norm === "layernorm") inner = g.sub(inner, g.reduceMean(gx, [-1]));
  return g.mul(inner, n.r);
}

/** Logits of rows x [..., H] -> [..., V]: Gemm on the [rows, H] view, as the lens reads U. */
function logits(g: GraphBuilder, x: Value, w: WeightSource, u: Unembedding, hidden: number, leading: Value): { z: Value; capped?: Value } {
  const flat = g.linear(g.reshape(x, [-1, hidden]), w.get(u.matrix));
  const raw = g.op1("Reshape", [flat, g.concat([leading, g.ints([-1])], 0)]);
  if (!u.softcap) return { z: raw };
  const capped = g.tanh(g.div(raw, g.scalar(u.softcap)));
  return { z: g.mul(capped, g.scalar(u.softcap)), capped };
}

/**
 * Final residual [N, H] -> the target's parts: log p [N, V] (needed only with a softcap), p U
 * [N, H] and sum_v p log p [N, 1] (all the step graph needs without one: see buildStepGraph).
 */
export function buildTargetGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number): GraphBuilder {
  const g = new GraphBuilder(`tuned-lens-target-${hidden}`);
  const weights = w(g);
  const final = g.input("final", "float32", ["N", hidden]);
  const leading = g.slice(g.op1("Shape", [final]), [0], [1], [0]);
  const { z } = logits(g, normForward(g, final, weights, u).y, weights, u, hidden, leading);
  const logp = g.logSoftmax(z, -1);
  const p = g.exp(logp);
  if (u.softcap) g.output(logp, "target_logp");
  g.output(g.matmul(p, weights.get(u.matrix)), "target_pu"); // [N, H]
  g.output(g.reduceSum(g.mul(p, logp), [-1]), "target_neg_entropy"); // [N, 1]
  return g;
}

/**
 * One training step's loss and gradient for R layers at once (see the module comment). The
 * [R, N, V] tensors dominate the time (each pass over them reads or writes R N V floats), so the
 * graph keeps them to z and softmax z when there is no softcap, using that z is linear in x:
 *   sum_v p z  = x . (p U)              (p U [N, H] computed once per batch by the target graph)
 *   loss       = sum_v p log p - x . (p U) + logsumexp z
 *   dx         = (softmax(z) U - p U) / N
 * logsumexp z comes from the softmax at the argmax (z_max - log q_max), as in src/sweep/graph.ts.
 * With a softcap (Gemma 2) z is not linear in x: the plain formulas, with log p fed in.
 */
export function buildStepGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number): GraphBuilder {
  const g = new GraphBuilder(`tuned-lens-step-${hidden}`);
  const weights = w(g);
  const U = weights.get(u.matrix);
  const h = g.input("resid", "float32", ["R", "N", hidden]);
  const A = g.input("weight", "float32", ["R", hidden, hidden]); // [in, out]
  const b = g.input("bias", "float32", ["R", hidden]);
  const pU = g.input("target_pu", "float32", ["N", hidden]);
  const negEntropy = g.input("target_neg_entropy", "float32", ["N", 1]);
  // 1 / (tokens in the whole batch): a batch is fed in token chunks whose sums add up.
  const scale = g.input("scale", "float32", [1]);

  const translated = g.add(g.add(h, g.matmul(h, A)), g.unsqueeze(b, [1])); // [R, N, H]
  const norm = normForward(g, translated, weights, u);
  const { z, capped } = logits(g, norm.y, weights, u, hidden, g.slice(g.op1("Shape", [h]), [0], [2], [0])); // [R, N, V]
  const q = g.softmax(z, -1);
  let perToken: Value; // [R, N, 1]: KL(p || q) per token
  let dx: Value; // [R, N, H]
  if (!capped) {
    const top = g.op1("ArgMax", [z], { axis: -1, keepdims: 1 });
    const lse = g.sub(g.op1("GatherElements", [z, top], { axis: 2 }), g.op1("Log", [g.op1("GatherElements", [q, top], { axis: 2 })]));
    const pz = g.reduceSum(g.mul(norm.y, pU), [-1]); // x . (p U)
    perToken = g.add(g.sub(negEntropy, pz), lse);
    dx = g.mul(g.sub(g.matmul(q, U), pU), scale);
  } else {
    const logp = g.input("target_logp", "float32", ["N", "V"]);
    const p = g.exp(logp);
    perToken = g.reduceSum(g.mul(p, g.sub(logp, g.logSoftmax(z, -1))), [-1]);
    const dz = g.mul(g.mul(g.sub(q, p), scale), g.sub(g.scalar(1), g.mul(capped, capped)));
    dx = g.matmul(dz, U);
  }
  g.output(g.mul(g.reduceSum(perToken, [1, 2], 0), scale), "loss"); // [R]
  const dh = normBackward(g, norm, dx, u);
  g.output(g.matmul(g.transpose(h, [0, 2, 1]), dh), "grad_weight"); // [R, H, H] as [in, out]
  g.output(g.reduceSum(dh, [1], 0), "grad_bias"); // [R, H]
  return g;
}
