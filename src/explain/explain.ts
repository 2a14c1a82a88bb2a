/**
 * `logit-lens explain`: the snap, at one cell (issue 10, item 2). For the residual after layer L at
 * position P, put through the final norm as the lens does (what the unembedding reads):
 * - its top tokens by logit and by cosine. They differ because a logit is |u_v| |x| cos: rows with
 *   big norms win logits at a smaller angle, and that is part of how a "seahorse + emoji" direction
 *   snaps to an existing token;
 * - a non-negative least-squares decomposition onto token directions (concepts the user names plus
 *   the cell's top tokens), with the fraction of the residual's squared norm it explains;
 * - vector arithmetic through the unembedding (`U[ sea] + U[ horse] - resid ...`);
 * - nearest tokens within a family (`--family emoji`): which real emoji a direction is closest to.
 * Logits here are the dot products before any soft-cap (Gemma 2): the cap is monotone, so rankings
 * are the lens's.
 */
import { blockHook } from "../architectures/forward.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import type { TokenFamily } from "../lens/targets.js";
import { hex, renderToken } from "../tokens/render.js";
import { nnls } from "./nnls.js";
import { finalNormOf, rowNorms, unembeddingProducts } from "./unembedding.js";

export interface TokenScore {
  id: number;
  text: string;
  bytes: string;
  logit: number;
  cosine: number;
}

export interface Reading {
  /** |x| of the vector read (after the final norm for a residual). */
  norm: number;
  by_logit: TokenScore[];
  by_cosine: TokenScore[];
  /** Nearest members of the family by cosine, when a family was given. */
  family_nearest?: TokenScore[];
}

export interface ExplainResult {
  hook: string;
  layer: number;
  position: number;
  /** The token at that position (the cell predicts the next one). */
  input: { id: number; text: string };
  residual: Reading & { raw_norm: number };
  decomposition: { terms: { id: number; text: string; source: "concept" | "top"; weight: number; cosine: number }[]; explained: number; residual_norm: number };
  vector?: Reading & { expression: string };
  family?: { label: string; size: number };
}

export interface ExplainOptions {
  layer: number;
  position: number;
  topK?: number;
  /** Concept tokens for the decomposition (texts, raw vocabulary strings or #ids). */
  concepts?: string[];
  /** How many of the cell's top tokens (by logit) join the decomposition (default 5). */
  decomposeTop?: number;
  vector?: string;
  family?: TokenFamily;
}

/**
 * One token from what a user typed: `#123` (an id), an exact vocabulary string (`ĠðŁ`), or a text
 * that tokenizes to exactly one token (` sea`).
 */
export function resolveToken(model: LoadedModel, spec: string): number {
  const tok = model.tokenizer;
  const m = /^#(\d+)$/.exec(spec.trim());
  if (m) {
    const id = Number(m[1]);
    if (id >= model.config.vocabSize) throw new UserError(`token #${id} is outside the vocabulary (0..${model.config.vocabSize - 1})`);
    return id;
  }
  const exact = tok.tokenId(spec);
  if (exact !== undefined) return exact;
  if (spec.length === 0) throw new UserError("an empty token text");
  const ids = tok.encode(spec, { addSpecialTokens: false });
  if (ids.length === 1) return ids[0]!;
  const shown = ids.map((id) => `#${id} ${JSON.stringify(tok.tokenString(id))}`).join(", ");
  throw new UserError(`${JSON.stringify(spec)} is ${ids.length} tokens (${shown}), not one: name one of them (#id or its vocabulary string)`);
}

/** A parsed `--vector` expression: a sum of coefficient x (token row | the cell's residual). */
export interface VectorTerm {
  coef: number;
  token?: number;
  resid?: boolean;
}

/** `U[ sea] + 0.5*U[#123] - resid`: terms joined by + and -, each an optional `c*` then `U[...]` or `resid`. */
export function parseVector(model: LoadedModel, expr: string): VectorTerm[] {
  const terms: VectorTerm[] = [];
  let i = 0;
  const fail = (why: string): never => {
    throw new UserError(`--vector ${JSON.stringify(expr)}: ${why} at character ${i + 1} (expected terms like U[ sea], 0.5*U[#123], resid, joined by + or -)`);
  };
  const skip = () => {
    while (i < expr.length && expr[i] === " ") i++;
  };
  let sign = 1;
  skip();
  if (expr[i] === "-" || expr[i] === "+") {
    sign = expr[i] === "-" ? -1 : 1;
    i++;
  }
  for (;;) {
    skip();
    let coef = sign;
    const num = /^(\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?\s*\*/i.exec(expr.slice(i));
    if (num) {
      coef *= Number(num[1]);
      i += num[0].length;
      skip();
    }
    if (expr.startsWith("U[", i)) {
      const end = expr.indexOf("]", i + 2);
      if (end < 0) fail("U[ is not closed");
      terms.push({ coef, token: resolveToken(model, expr.slice(i + 2, end)) });
      i = end + 1;
    } else if (expr.startsWith("resid", i)) {
      terms.push({ coef, resid: true });
      i += 5;
    } else fail("a term was expected");
    skip();
    if (i >= expr.length) break;
    if (expr[i] !== "+" && expr[i] !== "-") fail("+ or - was expected");
    sign = expr[i] === "-" ? -1 : 1;
    i++;
  }
  if (terms.length === 0) fail("no terms");
  return terms;
}

function norm(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

/** Top k indices by value, among those allowed. */
function topIndices(values: Float32Array | Float64Array, k: number, allowed?: Float32Array): number[] {
  const best: number[] = [];
  for (let v = 0; v < values.length; v++) {
    if (allowed && allowed[v] !== 1) continue;
    const x = values[v]!;
    if (!Number.isFinite(x)) continue;
    if (best.length < k || x > values[best[best.length - 1]!]!) {
      let j = best.length < k ? best.length : k - 1;
      best[j] = v;
      while (j > 0 && values[best[j - 1]!]! < x) {
        best[j] = best[j - 1]!;
        best[j - 1] = v;
        j--;
      }
    }
  }
  return best;
}

function reading(model: LoadedModel, dots: Float32Array, rowNorm: Float32Array, xNorm: number, k: number, family?: TokenFamily): Reading {
  const cos = new Float32Array(dots.length);
  for (let v = 0; v < dots.length; v++) cos[v] = rowNorm[v]! > 0 && xNorm > 0 ? dots[v]! / (rowNorm[v]! * xNorm) : 0;
  const score = (id: number): TokenScore => {
    const b = model.tokenizer.tokenBytes(id);
    return { id, text: renderToken(b).text, bytes: hex(b), logit: dots[id]!, cosine: cos[id]! };
  };
  const r: Reading = { norm: xNorm, by_logit: topIndices(dots, k).map(score), by_cosine: topIndices(cos, k).map(score) };
  if (family) r.family_nearest = topIndices(cos, k, family.mask).map(score);
  return r;
}

export async function explainCell(model: LoadedModel, ids: number[], o: ExplainOptions): Promise<ExplainResult> {
  const cfg = model.config;
  const k = o.topK ?? 10;
  if (!Number.isInteger(o.layer) || o.layer < 0 || o.layer >= cfg.nLayers) throw new UserError(`--layer ${o.layer} is out of range: this model has layers 0..${cfg.nLayers - 1}`);
  const position = o.position < 0 ? ids.length + o.position : o.position;
  if (!Number.isInteger(position) || position < 0 || position >= ids.length) throw new UserError(`--position ${o.position} is out of range for ${ids.length} tokens (0..${ids.length - 1}, or -1..-${ids.length})`);
  const hook = blockHook(o.layer, "hook_resid_post");
  const run = await (await model.forward([hook])).run(ids.slice(0, position + 1));
  const H = cfg.hidden;
  const raw = run.hooks.get(hook)!.slice(position * H, (position + 1) * H);
  const { normed } = finalNormOf(model, raw);

  const concepts = (o.concepts ?? []).map((c) => resolveToken(model, c));
  const terms = o.vector ? parseVector(model, o.vector) : [];
  const termIds = terms.filter((t) => t.token !== undefined).map((t) => t.token!);
  const norms = await rowNorms(model);
  // First pass: the residual's reading (and the rows the decomposition and vector need).
  const first = await unembeddingProducts(model, normed, [...concepts, ...termIds]);
  const residual = reading(model, first.dots, norms, norm(normed), k, o.family);

  // Decomposition onto concepts + the cell's top tokens by logit.
  const top = residual.by_logit.slice(0, o.decomposeTop ?? 5).map((s) => s.id);
  const dirIds: { id: number; source: "concept" | "top" }[] = [];
  for (const id of concepts) if (!dirIds.some((d) => d.id === id)) dirIds.push({ id, source: "concept" });
  for (const id of top) if (!dirIds.some((d) => d.id === id)) dirIds.push({ id, source: "top" });
  const dirs = new Float32Array(dirIds.length * H);
  const rowOf = new Map<number, Float32Array>();
  [...concepts, ...termIds].forEach((id, i) => rowOf.set(id, first.rows.subarray(i * H, (i + 1) * H)));
  const missing = dirIds.filter((d) => !rowOf.has(d.id)).map((d) => d.id);
  if (missing.length) {
    const more = await unembeddingProducts(model, new Float32Array(H), missing);
    missing.forEach((id, i) => rowOf.set(id, more.rows.subarray(i * H, (i + 1) * H)));
  }
  dirIds.forEach((d, i) => dirs.set(rowOf.get(d.id)!, i * H));
  const fit = nnls(dirs, normed);
  const text = (id: number) => renderToken(model.tokenizer.tokenBytes(id)).text;
  const decomposition = {
    terms: dirIds.map((d, i) => ({ id: d.id, text: text(d.id), source: d.source, weight: fit.weights[i]!, cosine: first.dots[d.id]! / (norms[d.id]! * residual.norm) })),
    explained: fit.explained,
    residual_norm: fit.residualNorm,
  };

  const result: ExplainResult = {
    hook,
    layer: o.layer,
    position,
    input: { id: ids[position]!, text: text(ids[position]!) },
    residual: { ...residual, raw_norm: norm(raw) },
    decomposition,
  };
  if (o.family) result.family = { label: o.family.label, size: o.family.size };
  if (o.vector) {
    const v = new Float32Array(H);
    for (const t of terms) {
      const src = t.resid ? normed : rowOf.get(t.token!)!;
      for (let i = 0; i < H; i++) v[i]! += t.coef * src[i]!;
    }
    const vr = await unembeddingProducts(model, v, []);
    result.vector = { expression: o.vector, ...reading(model, vr.dots, norms, norm(v), k, o.family) };
  }
  return result;
}

/** The explanation as text for the terminal. */
export function explainText(r: ExplainResult): string {
  const f = (x: number, d = 3) => (Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(d));
  const list = (xs: TokenScore[], key: "logit" | "cosine") => xs.map((s) => `${JSON.stringify(s.text)} ${f(s[key])}`).join(", ");
  const lines = [
    `${r.hook} at position ${r.position} (input ${JSON.stringify(r.input.text)}); residual |x| ${f(r.residual.raw_norm)}, after the final norm ${f(r.residual.norm)}`,
    `  top by logit:  ${list(r.residual.by_logit, "logit")}`,
    `  top by cosine: ${list(r.residual.by_cosine, "cosine")}`,
  ];
  if (r.residual.family_nearest) lines.push(`  nearest in family ${r.family!.label} (${r.family!.size} tokens), by cosine: ${list(r.residual.family_nearest, "cosine")}`);
  lines.push(`  non-negative decomposition onto token rows (explains ${(100 * r.decomposition.explained).toFixed(1)} % of |x|^2):`);
  for (const t of [...r.decomposition.terms].sort((a, b) => b.weight - a.weight)) {
    lines.push(`    ${t.weight.toFixed(4).padStart(9)} x U[${JSON.stringify(t.text)}]  (${t.source}, cosine ${f(t.cosine)})`);
  }
  if (r.vector) {
    lines.push(`vector ${r.vector.expression} (|v| ${f(r.vector.norm)}), read through the unembedding:`);
    lines.push(`  top by logit:  ${list(r.vector.by_logit, "logit")}`);
    lines.push(`  top by cosine: ${list(r.vector.by_cosine, "cosine")}`);
    if (r.vector.family_nearest) lines.push(`  nearest in family ${r.family!.label}, by cosine: ${list(r.vector.family_nearest, "cosine")}`);
  }
  return lines.join("\n");
}
