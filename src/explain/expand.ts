/**
 * Expanding a candidate that starts a character (issue 10, item 5). A byte-level model writes 🐠 as
 * ` ðŁ` (20 F0 9F), then `Ĳ` (90), then `ł` (A0): at the cell where ` ðŁ` is a candidate, the
 * lens shows bytes that are not yet a character. Here the prompt is extended with the candidate
 * (teacher-forced) and the model's own output is followed until the character is finished:
 * - greedy: the most probable next token each step, while it continues the character;
 * - top-k: a beam over the tokens that continue the character, each path's probability the product
 *   of the model's conditional probabilities, and the finished characters ranked ("🐠 56 %").
 * Probabilities are conditional on the candidate having been written; paths that leave the
 * character (a token that is not a valid continuation) are summed as `other`, paths the beam
 * dropped or left unfinished as `unexplored`, characters found beyond the k reported as `rest`:
 * the parts add to 1.
 */
import type { KvCache } from "../engine/forward-session.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { pendingBytes } from "../tokens/in-context.js";
import { hex, renderToken, utf8Segments } from "../tokens/render.js";

export interface CharacterCompletion {
  /** The character the bytes become (🐠). */
  character: string;
  /** P(this character | prompt, candidate), summed over the token paths found that make it. */
  probability: number;
  /** The most probable token path found (the tokens after the candidate). */
  tokens: { id: number; text: string }[];
}

export interface Expansion {
  /** The position whose next token the candidate is. */
  position: number;
  candidate: { id: number; text: string; bytes: string; probability: number };
  /** The unfinished character's bytes after the candidate, in hex ("f09f"). */
  pending: string;
  mode: "greedy" | "top-k";
  completions: CharacterCompletion[];
  /** Probability that the next tokens leave the character unfinished (not a valid continuation). */
  other: number;
  /** Probability on paths the search did not follow to the end (dropped by the beam). */
  unexplored: number;
  /** Probability of the characters found beyond the k reported: completions + rest + other + unexplored = 1. */
  rest: number;
}

export interface ExpandOptions {
  /** 1: greedy; more: a beam of that width, that many characters reported (default 5). */
  k?: number;
}

/** Tokens whose bytes begin with a UTF-8 continuation byte (80-BF): the only ones that can continue a character. */
const continuations = new WeakMap<LoadedModel, number[]>();
function continuationTokens(model: LoadedModel): number[] {
  let c = continuations.get(model);
  if (!c) {
    c = [];
    for (let id = 0; id < model.config.vocabSize; id++) {
      const b = model.tokenizer.tokenBytes(id);
      if (b.length > 0 && b[0]! >= 0x80 && b[0]! <= 0xbf) c.push(id);
    }
    continuations.set(model, c);
  }
  return c;
}

function softmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** What `pending + token` is: a finished first character, still one unfinished character, or neither. */
function classify(pending: Uint8Array, token: Uint8Array): { kind: "done"; character: string } | { kind: "more"; bytes: Uint8Array } | { kind: "off" } {
  const joined = concat(pending, token);
  const segs = utf8Segments(joined);
  const first = segs[0]!;
  if (first.kind === "char" && first.end > pending.length) return { kind: "done", character: first.text };
  if (segs.length === 1 && first.kind === "invalid" && first.reason === "truncated") return { kind: "more", bytes: joined };
  return { kind: "off" };
}

/** Whether the candidate, written after the context, leaves a character unfinished (so it can be expanded). */
export function startsCharacter(model: LoadedModel, contextIds: number[], candidate: number): boolean {
  const tok = model.tokenizer;
  return pendingBytes([...contextIds.slice(-3), candidate].map((id) => tok.tokenBytes(id))).length > 0;
}

interface Node {
  p: number;
  bytes: Uint8Array;
  path: number[];
  logits: Float32Array;
  cache: KvCache;
}

/**
 * Expands `candidate` as the token after `position` of `ids`: which characters the model would
 * finish it into. Throws a UserError when the candidate does not leave a character unfinished.
 */
export async function expandCandidate(model: LoadedModel, ids: number[], position: number, candidate: number, o: ExpandOptions = {}): Promise<Expansion> {
  const k = o.k ?? 5;
  if (!Number.isInteger(k) || k < 1 || k > 50) throw new UserError(`--expand-k must be from 1 (greedy) to 50, got ${k}`);
  const P = position < 0 ? ids.length + position : position;
  if (!Number.isInteger(P) || P < 0 || P >= ids.length) throw new UserError(`--position ${position} is out of range for ${ids.length} tokens (0..${ids.length - 1}, or -1..-${ids.length})`);
  const tok = model.tokenizer;
  const context = ids.slice(0, P + 1);
  const text = (id: number) => renderToken(tok.tokenBytes(id)).text;
  const pending = pendingBytes([...context.slice(-3), candidate].map((id) => tok.tokenBytes(id)));
  if (pending.length === 0) throw new UserError(`${JSON.stringify(text(candidate))} does not start a character after this context (it leaves no UTF-8 character unfinished): nothing to expand`);
  if (context.length + 4 > model.config.maxPositions) throw new UserError("the prompt is too close to the model's context length to expand a candidate");

  const session = await model.forward([], "last");
  const before = await session.run(context);
  const probability = softmax(before.logits!)[candidate]!;
  const start = await session.run([candidate], before.cache);
  const V = model.config.vocabSize;
  const conts = continuationTokens(model);
  const found = new Map<string, CharacterCompletion & { best: number }>();
  let other = 0;
  let unexplored = 0;
  let frontier: Node[] = [{ p: 1, bytes: pending, path: [], logits: start.logits!.subarray(start.logits!.length - V), cache: start.cache }];
  const beam = k === 1 ? 1 : Math.max(2 * k, 8);
  // A character is at most 4 bytes and the candidate gave at least one: 3 more tokens at most.
  for (let step = 0; step < 3 && frontier.length > 0; step++) {
    const next: { p: number; bytes: Uint8Array; path: number[]; parent: Node }[] = [];
    for (const node of frontier) {
      const probs = softmax(node.logits);
      let valid = 0;
      const choices = k === 1 ? [probs.reduce((best, v, i) => (v > probs[best]! ? i : best), 0)] : conts;
      for (const id of choices) {
        const q = probs[id]!;
        const c = classify(node.bytes, tok.tokenBytes(id));
        if (c.kind === "off") {
          if (k === 1) other += node.p * q; // the greedy path leaves the character here
          continue;
        }
        valid += q;
        const p = node.p * q;
        const path = [...node.path, id];
        if (c.kind === "done") {
          const have = found.get(c.character);
          if (!have) found.set(c.character, { character: c.character, probability: p, tokens: path.map((t) => ({ id: t, text: text(t) })), best: p });
          else {
            have.probability += p;
            if (p > have.best) Object.assign(have, { best: p, tokens: path.map((t) => ({ id: t, text: text(t) })) });
          }
        } else next.push({ p, bytes: c.bytes, path, parent: node });
      }
      if (k > 1) other += node.p * Math.max(0, 1 - valid);
    }
    next.sort((a, b) => b.p - a.p);
    for (const dropped of next.slice(beam)) unexplored += dropped.p;
    frontier = [];
    for (const n of next.slice(0, beam)) {
      const r = await session.run([n.path.at(-1)!], n.parent.cache);
      frontier.push({ p: n.p, bytes: n.bytes, path: n.path, logits: r.logits!.subarray(r.logits!.length - V), cache: r.cache });
    }
  }
  for (const n of frontier) unexplored += n.p;
  const ranked = [...found.values()].sort((a, b) => b.probability - a.probability);
  const completions = ranked.slice(0, k).map(({ character, probability: p, tokens }) => ({ character, probability: p, tokens }));
  const rest = ranked.slice(k).reduce((sum, c) => sum + c.probability, 0);
  // Greedy follows one path: what it did not take is neither "other" nor found, but not looked at.
  if (k === 1) unexplored = Math.max(0, 1 - other - completions.reduce((s, c) => s + c.probability, 0));
  return {
    position: P,
    candidate: { id: candidate, text: text(candidate), bytes: hex(tok.tokenBytes(candidate)), probability },
    pending: hex(pending),
    mode: k === 1 ? "greedy" : "top-k",
    completions,
    other,
    unexplored,
    rest,
  };
}

/** The model's top `topK` candidates at `position` that start a character, each expanded. */
export async function expandTopCandidates(model: LoadedModel, ids: number[], position: number, topK: number, o: ExpandOptions = {}): Promise<Expansion[]> {
  const P = position < 0 ? ids.length + position : position;
  if (!Number.isInteger(P) || P < 0 || P >= ids.length) throw new UserError(`--position ${position} is out of range for ${ids.length} tokens (0..${ids.length - 1}, or -1..-${ids.length})`);
  const context = ids.slice(0, P + 1);
  const r = await (await model.forward([], "last")).run(context);
  const V = model.config.vocabSize;
  const row = r.logits!.subarray(r.logits!.length - V);
  const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]!).slice(0, topK);
  const out: Expansion[] = [];
  for (const id of order) if (startsCharacter(model, context, id)) out.push(await expandCandidate(model, ids, P, id, o));
  return out;
}

/** "🐠 56.0 %, 🐴 12.1 %" lines for the terminal. */
export function expansionText(xs: Expansion[]): string {
  if (xs.length === 0) return "no candidate to expand: none of the top candidates starts a character";
  const pct = (p: number) => `${(100 * p).toFixed(p < 0.001 ? 3 : 1)} %`;
  const lines = [`candidates that start a character, expanded under the model's output (${xs[0]!.mode}; probabilities given the candidate):`];
  for (const x of xs) {
    const shown = x.completions.map((c) => `${c.character} ${pct(c.probability)}`).join(", ") || "(no character)";
    lines.push(`  position ${x.position}: ${JSON.stringify(x.candidate.text)} (${pct(x.candidate.probability)}) → ${shown}; not a character ${pct(x.other)}, not followed ${pct(x.unexplored)}`);
  }
  return lines.join("\n");
}
