/**
 * Direct logit attribution (issue 10, item 3), layer level. The final residual is a sum of parts:
 * the embedding (the residual entering block 0) plus every block's attention and MLP outputs. With
 * the final norm's scale frozen at the final residual (the standard convention, as TransformerLens's
 * `apply_ln_to_stack` with the cached final scale), the logit of token t, u_t . norm(x), splits
 * exactly into one term per part:
 *   RMSNorm:   part_k . (w (.) u_t) * s,            s = 1 / rms(x_final)
 *   LayerNorm: (part_k - mean(part_k)) . (w (.) u_t) * s  + b . u_t   (each part centred; the bias its own term)
 * For a logit difference (t vs t2) use u_t - u_t2. Logits are before any soft-cap (Gemma 2), which
 * is not linear. The parts sum to the model's logit up to float rounding; the result carries the gap.
 * Each layer's attention part is further split into heads (heads.ts, from `blocks.{l}.attn.hook_z`).
 */
import { attnHookZ, blockHook } from "../architectures/forward.js";
import { unembeddingOf } from "../architectures/index.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { pendingBytes, readInContext } from "../tokens/in-context.js";
import { renderToken } from "../tokens/render.js";
import { headParts } from "./heads.js";
import { finalNormOf, unembeddingProducts } from "./unembedding.js";

export interface AttributionPart {
  /** "embed", "attn", "mlp" or "final_norm_bias". */
  kind: "embed" | "attn" | "mlp" | "final_norm_bias";
  /** Block index; -1 for embed and the bias. */
  layer: number;
  value: number;
}

/** A token as shown: its text, and the character it completes after the context where it does (⟨A0⟩ → 🐠). */
export interface ShownToken {
  id: number;
  text: string;
  in_context?: string;
}

/** The context's token bytes up to and including `position`, read for candidates at that position. */
export function shownToken(model: LoadedModel, contextIds: number[], id: number): ShownToken {
  const tok = model.tokenizer;
  const t: ShownToken = { id, text: renderToken(tok.tokenBytes(id)).text };
  const inContext = readInContext(pendingBytes(contextIds.slice(-4).map((i) => tok.tokenBytes(i))), tok.tokenBytes(id));
  if (inContext !== undefined) t.in_context = inContext;
  return t;
}

export interface Attribution {
  position: number;
  target: ShownToken;
  versus?: ShownToken;
  /** What the parts add up to: the target's logit, or the difference of the two. */
  logit: number;
  /** The model's own value (the normed final residual through the unembedding). */
  model_logit: number;
  parts: AttributionPart[];
  /**
   * The attention parts split into heads: heads[l][h] is head h of layer l, head_bias[l] the
   * output projection's bias (0 where none); heads[l] plus head_bias[l] sum to layer l's "attn" part.
   */
  heads?: number[][];
  head_bias?: number[];
  convention: string;
}

export const ATTRIBUTION_CONVENTION =
  "direct logit attribution: the final residual split into embedding + each block's attention and MLP outputs; final norm scale frozen at the final residual; LayerNorm parts centred, its bias a part of its own; logits before any soft-cap";
export const HEADS_CONVENTION =
  "heads: attention output split per head as z_h @ W_O[:, h]^T (TransformerLens attn.hook_z), the o_proj bias its own part; a norm after o_proj (Gemma, OLMo 2) has its scale frozen at the layer's o_proj output";

export async function attribute(model: LoadedModel, ids: number[], position: number, target: number, versus?: number, options: { heads?: boolean } = {}): Promise<Attribution> {
  const wantHeads = options.heads ?? true;
  const cfg = model.config;
  const L = cfg.nLayers;
  const P = position < 0 ? ids.length + position : position;
  if (!Number.isInteger(P) || P < 0 || P >= ids.length) throw new UserError(`--position ${position} is out of range for ${ids.length} tokens (0..${ids.length - 1}, or -1..-${ids.length})`);
  const hooks = [blockHook(0, "hook_resid_pre"), blockHook(L - 1, "hook_resid_post")];
  for (let l = 0; l < L; l++) hooks.push(blockHook(l, "hook_attn_out"), blockHook(l, "hook_mlp_out"));
  if (wantHeads) for (let l = 0; l < L; l++) hooks.push(attnHookZ(l));
  const run = await (await model.forward(hooks)).run(ids.slice(0, P + 1));
  const H = cfg.hidden;
  const at = (h: string) => run.hooks.get(h)!.subarray(P * H, (P + 1) * H);
  const final = at(blockHook(L - 1, "hook_resid_post"));
  const { normed, scale } = finalNormOf(model, final);

  const u = unembeddingOf(cfg);
  const { rows, dots } = await unembeddingProducts(model, normed, versus === undefined ? [target] : [target, versus]);
  const d = Float64Array.from(rows.subarray(0, H));
  if (versus !== undefined) for (let i = 0; i < H; i++) d[i]! -= rows[H + i]!;
  const w = model.store.tensorF32(u.normWeight).data;
  const gemma = u.norm === "rms_gemma";
  const e = Float64Array.from(d, (v, i) => v * (gemma ? 1 + w[i]! : w[i]!) * scale);
  const layerNorm = u.norm === "layernorm";
  // A part's contribution is linear in it: (part - mean(part)) . e = part . (e - mean(e)) for LayerNorm.
  let eMean = 0;
  if (layerNorm) eMean = e.reduce((a, v) => a + v, 0) / H;
  const direction = Float64Array.from(e, (v) => v - eMean);
  const contribution = (part: Float32Array): number => {
    let s = 0;
    for (let i = 0; i < H; i++) s += part[i]! * direction[i]!;
    return s;
  };
  const parts: AttributionPart[] = [{ kind: "embed", layer: -1, value: contribution(at(blockHook(0, "hook_resid_pre"))) }];
  for (let l = 0; l < L; l++) {
    parts.push({ kind: "attn", layer: l, value: contribution(at(blockHook(l, "hook_attn_out"))) });
    parts.push({ kind: "mlp", layer: l, value: contribution(at(blockHook(l, "hook_mlp_out"))) });
  }
  if (layerNorm) {
    const b = model.store.tensorF32(u.normBias!).data;
    let s = 0;
    for (let i = 0; i < H; i++) s += b[i]! * d[i]!;
    parts.push({ kind: "final_norm_bias", layer: -1, value: s });
  }
  const context = ids.slice(0, P + 1);
  const out: Attribution = {
    position: P,
    target: shownToken(model, context, target),
    logit: parts.reduce((a, p) => a + p.value, 0),
    model_logit: versus === undefined ? dots[target]! : dots[target]! - dots[versus]!,
    parts,
    convention: ATTRIBUTION_CONVENTION,
  };
  if (versus !== undefined) out.versus = shownToken(model, context, versus);
  if (wantHeads) {
    const K = cfg.nHeads * cfg.headDim;
    const split = Array.from({ length: L }, (_, l) => headParts(model, l, run.hooks.get(attnHookZ(l))!.subarray(P * K, (P + 1) * K), direction));
    out.heads = split.map((s) => s.heads);
    out.head_bias = split.map((s) => s.bias);
    out.convention = `${ATTRIBUTION_CONVENTION}; ${HEADS_CONVENTION}`;
  }
  return out;
}

/** Terminal view: one line per block with attention and MLP bars (█ positive, ░ negative). */
export function attributionText(a: Attribution, width = 30): string {
  const shown = (t: ShownToken) => JSON.stringify(t.text) + (t.in_context !== undefined ? ` (→ ${t.in_context})` : "");
  const what = a.versus ? `logit(${shown(a.target)}) - logit(${shown(a.versus)})` : `logit(${shown(a.target)})`;
  const max = Math.max(1e-9, ...a.parts.map((p) => Math.abs(p.value)));
  const bar = (v: number) => {
    const n = Math.round((Math.abs(v) / max) * width);
    return (v >= 0 ? "█" : "░").repeat(n).padEnd(width);
  };
  const num = (v: number) => (v >= 0 ? "+" : "") + v.toFixed(3);
  const lines = [`${what} at position ${a.position} = ${a.logit.toFixed(4)} (model: ${a.model_logit.toFixed(4)})`, `(${a.convention}; █ pushes toward, ░ away)`];
  const embed = a.parts.find((p) => p.kind === "embed")!;
  lines.push(`${"embed".padEnd(6)} ${num(embed.value).padStart(9)} ${bar(embed.value)}`);
  const layers = Math.max(...a.parts.map((p) => p.layer)) + 1;
  for (let l = 0; l < layers; l++) {
    const at = a.parts.find((p) => p.kind === "attn" && p.layer === l)!;
    const ml = a.parts.find((p) => p.kind === "mlp" && p.layer === l)!;
    lines.push(`L${String(l).padEnd(5)} attn ${num(at.value).padStart(9)} ${bar(at.value)}  mlp ${num(ml.value).padStart(9)} ${bar(ml.value)}`);
  }
  const bias = a.parts.find((p) => p.kind === "final_norm_bias");
  if (bias) lines.push(`final norm bias ${num(bias.value)}`);
  if (a.heads) {
    const all = a.heads.flatMap((row, l) => row.map((v, h) => ({ l, h, v })));
    const top = all.sort((x, y) => Math.abs(y.v) - Math.abs(x.v)).slice(0, 10);
    lines.push(`heads with the largest parts (of ${all.length}): ${top.map((t) => `L${t.l}.H${t.h} ${num(t.v)}`).join(", ")}`);
    const biases = a.head_bias!.filter((v) => v !== 0);
    if (biases.length) lines.push(`o_proj biases: ${a.head_bias!.map((v, l) => `L${l} ${num(v)}`).join(", ")}`);
  }
  return lines.join("\n");
}
