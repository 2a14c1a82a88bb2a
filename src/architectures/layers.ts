/**
 * Building blocks shared by the architectures: norms, rotary embeddings, causal attention with a
 * KV cache, MLPs. Each reads like the PyTorch it mirrors; the comments name the transformers code.
 *
 * Shapes: a sequence is processed as one batch; activations are [T, hidden] (T = new tokens),
 * per-head tensors are [heads, T, headDim].
 */
import type { GraphBuilder, LinearOptions, Value } from "../graph/builder.js";
import type { Activation } from "./config.js";
import type { Unembedding } from "./family.js";
import type { ForwardInputs } from "./forward.js";

/** Model code asks for weights by their Hugging Face names; the store returns graph values. */
export interface WeightSource {
  get(name: string): Value;
  has(name: string): boolean;
}

/** RMSNorm: x / sqrt(mean(x^2) + eps) * scale. Gemma's scale is (1 + w), the others' is w. */
export function rmsNorm(g: GraphBuilder, x: Value, weight: Value, eps: number, gemmaStyle: boolean): Value {
  const scale = gemmaStyle ? g.add(g.scalar(1), weight) : weight;
  // transformers computes in fp32 and Gemma multiplies by (1 + w) after normalising: same here.
  return g.op1("RMSNormalization", [x, scale], { axis: -1, epsilon: { float: eps }, stash_type: 1 });
}

/** Soft-capping (Gemma 2): cap * tanh(x / cap), a smooth clamp of scores or logits to (-cap, cap). */
export function softcap(g: GraphBuilder, x: Value, cap: number): Value {
  return g.mul(g.tanh(g.div(x, g.scalar(cap))), g.scalar(cap));
}

export function layerNorm(g: GraphBuilder, x: Value, weight: Value, bias: Value, eps: number): Value {
  return g.op1("LayerNormalization", [x, weight, bias], { axis: -1, epsilon: { float: eps } });
}

export function activation(g: GraphBuilder, x: Value, kind: Activation): Value {
  if (kind === "silu") return g.mul(x, g.sigmoid(x));
  if (kind === "gelu") return g.op1("Gelu", [x]);
  return g.op1("Gelu", [x], { approximate: "tanh" });
}

/** Gated MLP (Llama, Gemma): down(act(gate(x)) * up(x)). */
export function gatedMlp(g: GraphBuilder, x: Value, w: WeightSource, prefix: string, act: Activation): Value {
  const gate = g.linear(x, w.get(`${prefix}.gate_proj.weight`));
  const up = g.linear(x, w.get(`${prefix}.up_proj.weight`));
  return g.linear(g.mul(activation(g, gate, act), up), w.get(`${prefix}.down_proj.weight`));
}

/**
 * Rotary embedding, transformers' `rotate_half` convention: x * cos + rotate_half(x) * sin, with
 * cos/sin given as graph inputs of shape [T, headDim] (computed in JS for the actual positions).
 */
export function applyRotary(g: GraphBuilder, x: Value, cos: Value, sin: Value, headDim: number): Value {
  const half = headDim / 2;
  const [x1, x2] = g.split(x, [half, half], -1);
  const rotated = g.concat([g.neg(x2!), x1!], -1);
  return g.add(g.mul(x, cos), g.mul(rotated, sin));
}

/** [T, heads*headDim] -> [heads, T, headDim] */
export function splitHeads(g: GraphBuilder, x: Value, heads: number, headDim: number): Value {
  return g.transpose(g.reshape(x, [-1, heads, headDim]), [1, 0, 2]);
}

/**
 * [heads, T, headDim] -> [T, heads*headDim]. The [T, heads, headDim] value in between is
 * TransformerLens's `attn.hook_z` (each head's output before the output projection): `hookZ` may
 * expose it (per-head direct logit attribution reads it).
 */
export function mergeHeads(g: GraphBuilder, x: Value, heads: number, headDim: number, hookZ: (z: Value) => Value = (z) => z): Value {
  return g.reshape(hookZ(g.transpose(x, [1, 0, 2])), [-1, heads * headDim]);
}

export interface AttentionInputs {
  q: Value; // [nHeads, T, headDim], rotary already applied
  k: Value; // [nKv, T, headDim]
  v: Value; // [nKv, T, headDim]
  pastK: Value; // [nKv, P, headDim]
  pastV: Value;
  /** Additive mask [T, P+T]: 0 where a query may look, -inf elsewhere (causal, maybe windowed). */
  mask: Value;
  nHeads: number;
  nKv: number;
  headDim: number;
  scale: number;
  softcap?: number;
}

/**
 * Scaled dot-product attention with grouped KV heads and a KV cache. Returns the per-head output
 * [nHeads, T, headDim] and the updated cache (present K/V, [nKv, P+T, headDim]).
 */
export function causalAttention(g: GraphBuilder, a: AttentionInputs): { out: Value; presentK: Value; presentV: Value } {
  const presentK = g.concat([a.pastK, a.k], 1);
  const presentV = g.concat([a.pastV, a.v], 1);
  // Query heads h = kv * group + j share kv head `kv`: fold the group into the row dimension so
  // one batched MatMul per KV head serves all its query heads (no K/V repetition needed).
  const q = g.reshape(g.mul(a.q, g.scalar(a.scale)), [a.nKv, -1, a.headDim]); // [nKv, group*T, d]
  let scores = g.matmul(q, g.transpose(presentK, [0, 2, 1])); // [nKv, group*T, P+T]
  if (a.softcap) scores = softcap(g, scores, a.softcap);
  scores = g.reshape(scores, [a.nHeads, -1, 0]); // [nHeads, T, P+T] (0 copies the input dim)
  const probs = g.softmax(g.add(scores, a.mask), -1);
  const out = g.matmul(g.reshape(probs, [a.nKv, -1, 0]), presentV); // [nKv, group*T, d]
  return { out: g.reshape(out, [a.nHeads, -1, a.headDim]), presentK, presentV };
}

export interface AttentionOptions {
  nHeads: number;
  nKv: number;
  headDim: number;
  /** Multiplies q.k; default headDim^-0.5. */
  scale?: number;
  softcap?: number;
  /** Sliding-window layer: the windowed mask and the local rotary tables. */
  sliding?: boolean;
  /** Exposes the per-head output z [T, heads, headDim] (`blocks.{l}.attn.hook_z`; see mergeHeads). */
  hookZ?: (z: Value) => Value;
}

/**
 * The attention core every rotary family shares: rotary on q and k, causal attention over the
 * cache plus the new tokens, the layer's updated cache as graph outputs `present_key.{l}` /
 * `present_value.{l}`, and the heads merged back to [T, nHeads*headDim] (before o_proj).
 * q: [nHeads, T, headDim], k and v: [nKv, T, headDim] (see splitHeads).
 */
export function attention(g: GraphBuilder, inp: ForwardInputs, layer: number, q: Value, k: Value, v: Value, o: AttentionOptions): Value {
  const d = o.headDim;
  const cos = o.sliding ? inp.ropeCosLocal : inp.ropeCos;
  const sin = o.sliding ? inp.ropeSinLocal : inp.ropeSin;
  const att = causalAttention(g, {
    q: applyRotary(g, q, cos, sin, d),
    k: applyRotary(g, k, cos, sin, d),
    v,
    pastK: inp.pastKey[layer]!,
    pastV: inp.pastValue[layer]!,
    mask: o.sliding ? inp.maskSliding : inp.maskFull,
    nHeads: o.nHeads,
    nKv: o.nKv,
    headDim: d,
    scale: o.scale ?? 1 / Math.sqrt(d),
    softcap: o.softcap,
  });
  g.output(att.presentK, `present_key.${layer}`);
  g.output(att.presentV, `present_value.${layer}`);
  return mergeHeads(g, att.out, o.nHeads, d, o.hookZ);
}

/** The final norm of an Unembedding description (statistics from `x` itself). */
export function finalNorm(g: GraphBuilder, w: WeightSource, u: Unembedding, x: Value): Value {
  if (u.norm === "layernorm") return layerNorm(g, x, w.get(u.normWeight), w.get(u.normBias!), u.eps);
  return rmsNorm(g, x, w.get(u.normWeight), u.eps, u.norm === "rms_gemma");
}

/** Logits from already-normed rows: unembedding matrix, then soft-cap where the family has one. */
export function unembed(g: GraphBuilder, w: WeightSource, u: Unembedding, normed: Value, options: LinearOptions = {}): Value {
  const logits = g.linear(normed, w.get(u.matrix), undefined, options);
  return u.softcap ? softcap(g, logits, u.softcap) : logits;
}
