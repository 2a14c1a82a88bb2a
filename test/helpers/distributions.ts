/**
 * Next-token distributions in float64, for the checks against the references (transformers,
 * llama.cpp): log-softmax of a row of logits and KL between two log-probability vectors.
 */
import assert from "node:assert/strict";

/** log-softmax (float64) of one row of logits. */
export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v]! > max) max = row[v]!;
  let sum = 0;
  for (let v = 0; v < row.length; v++) sum += Math.exp(row[v]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

/** Smallest float32 log (a subnormal): a float32 softmax (llama.cpp's) cannot go lower. */
const FLOAT32_MIN_LOG = Math.log(1.4e-45);

/**
 * KL(p || q) in nats over the whole vocabulary, both given as log-probabilities; q is clamped to
 * FLOAT32_MIN_LOG so a probability that underflowed in float32 stays finite.
 */
export function klDivergence(logp: Float64Array, logq: Float64Array): number {
  assert.equal(logp.length, logq.length, "distributions over different vocabularies");
  let kl = 0;
  for (let i = 0; i < logp.length; i++) {
    const p = Math.exp(logp[i]!);
    if (p > 0) kl += p * (logp[i]! - Math.max(logq[i]!, FLOAT32_MIN_LOG));
  }
  return kl;
}
