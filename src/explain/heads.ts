/**
 * Per-head direct logit attribution (issue 10, item 3): a layer's attention output is o_proj applied
 * to the heads' outputs side by side, so it splits into one part per head,
 *   attn_out = sum_h z_h @ W_O[:, h*d:(h+1)*d]^T  (+ the o_proj bias, a part of its own),
 * with z = `blocks.{l}.attn.hook_z` [pos, head, d_head], as TransformerLens's `stack_head_results`.
 * Families that norm the attention output before the residual add (Gemma 2/3, OLMo 2) have that
 * norm's scale frozen at the layer's whole o_proj output, as the final norm's is frozen at the final
 * residual: the same convention, one level down, so the heads still sum to the layer's part.
 *
 * Where each family keeps its output projection is a small table here rather than a family hook:
 * only attribution needs it, and the family modules stay plain model code.
 */
import type { ModelConfig } from "../architectures/config.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";

/** Where a layer's attention output comes from: the output projection and any norm applied after it. */
export interface AttentionOutput {
  /** [hidden, heads*headDim] (transformers' Linear layout). */
  weight: string;
  bias?: string;
  /** A norm applied to o_proj's output before the residual add: its weight and whether it is Gemma's (1 + w). */
  postNorm?: { weight: string; gemma: boolean };
}

export function attentionOutputOf(cfg: ModelConfig, layer: number): AttentionOutput {
  const a = cfg.architecture;
  if (a === "gpt2") return { weight: `transformer.h.${layer}.attn.c_proj.weight`, bias: `transformer.h.${layer}.attn.c_proj.bias` };
  const p = `model.layers.${layer}`;
  const weight = `${p}.self_attn.o_proj.weight`;
  if (a === "gemma2" || a === "gemma3") return { weight, postNorm: { weight: `${p}.post_attention_layernorm.weight`, gemma: true } };
  if (a === "olmo2") return { weight, postNorm: { weight: `${p}.post_attention_layernorm.weight`, gemma: false } };
  if (a === "llama" || a === "mistral" || a === "qwen2" || a === "qwen3" || a === "qwen3moe" || a === "phi3") return { weight };
  throw new UserError(`per-head attribution does not know where a ${a} model keeps its attention output projection`);
}

export interface LayerHeads {
  /** Each head's part of the logit (or logit difference). */
  heads: number[];
  /** The o_proj bias's part (0 where there is none). */
  bias: number;
}

/**
 * The heads' parts of one layer's attention contribution at one position.
 * `z`: that position's hook_z row [heads*headDim]; `direction`: the linear map from a residual part
 * to its logit contribution, as a vector (the final norm's frozen scale and weight, the unembedding
 * row or difference of rows, and LayerNorm's centring already folded in), so part_h . direction.
 */
export function headParts(model: LoadedModel, layer: number, z: Float32Array, direction: Float64Array): LayerHeads {
  const cfg = model.config;
  const H = cfg.hidden;
  const nH = cfg.nHeads;
  const d = cfg.headDim;
  const K = nH * d;
  const out = attentionOutputOf(cfg, layer);
  const W = model.store.tensorF32(out.weight).data; // [H, K]
  const b = out.bias && model.store.has(out.bias) ? model.store.tensorF32(out.bias).data : undefined;
  let f = direction;
  if (out.postNorm) {
    // RMSNorm of o = W z (+ b) is o * s * w with s = 1/rms(o): frozen s makes it linear in each head.
    let ms = 0;
    for (let i = 0; i < H; i++) {
      let o = b ? b[i]! : 0;
      for (let k = 0; k < K; k++) o += W[i * K + k]! * z[k]!;
      ms += o * o;
    }
    const s = 1 / Math.sqrt(ms / H + cfg.normEps);
    const w = model.store.tensorF32(out.postNorm.weight).data;
    f = Float64Array.from(direction, (v, i) => v * s * (out.postNorm!.gemma ? 1 + w[i]! : w[i]!));
  }
  // g = W^T f: head h's part is z_h . g_h (one pass over W, not one per head).
  const g = new Float64Array(K);
  for (let i = 0; i < H; i++) {
    const fi = f[i]!;
    for (let k = 0; k < K; k++) g[k]! += W[i * K + k]! * fi;
  }
  const heads: number[] = [];
  for (let h = 0; h < nH; h++) {
    let s = 0;
    for (let k = h * d; k < (h + 1) * d; k++) s += z[k]! * g[k]!;
    heads.push(s);
  }
  let bias = 0;
  if (b) for (let i = 0; i < H; i++) bias += b[i]! * f[i]!;
  return { heads, bias };
}

