/**
 * The lens report: one plain JSON-able document that every output format renders (terminal, json,
 * csv, html, svg, png) and that the web front-end reads. Schema documented in docs/lens-json.md;
 * keep the two in step. Compact by design: top-k and tracked values per cell, never full-vocabulary
 * logits; numbers rounded to 4 significant digits.
 */
import type { LoadedModel } from "../engine/model.js";
import type { LensCell } from "../lens/logit-lens.js";
import type { LensJobResult } from "../lens/job.js";
import type { TextTarget, TokenFamily } from "../lens/targets.js";
import { hex, reassemble, renderToken } from "../tokens/render.js";
import { pendingBytes, readInContext } from "../tokens/in-context.js";

export const REPORT_SCHEMA = "logit-lens/report@1";

export interface ReportToken {
  id: number;
  /** Display text: whitespace made visible, partial UTF-8 as ⟨F0 9F⟩. */
  text: string;
  /** Raw bytes, lowercase hex. */
  bytes: string;
}

export interface ReportTopEntry extends ReportToken {
  prob: number;
  logit: number;
  /**
   * Present when the context up to this position ends inside a UTF-8 character and this token
   * finishes it: the pending bytes and this token read together (⟨A0⟩ after F0 9F 90 → "🐠").
   */
  in_context?: string;
}

export interface ReportTargetValue {
  prob: number;
  /** 0 = the top token. */
  rank: number;
  logit: number;
  /**
   * Multi-token targets only: the probability of the whole token sequence at this readout, the
   * product of this layer's lens probabilities of each token, teacher-forced (src/lens/chain.ts).
   */
  sequence_prob?: number;
}

export interface ReportCell {
  position: number;
  top: ReportTopEntry[];
  entropy: number;
  kl_to_final: number;
  /** One per entry of `targets`, in order (first token of each). */
  targets?: ReportTargetValue[];
  /** One summed probability per entry of `families`. */
  families?: number[];
}

export interface ReportLayer {
  hook: string;
  /** Block index; -1 for hook_embed. */
  layer: number;
  /** resid_post, resid_pre, resid_mid, attn_out, mlp_out or embed. */
  point: string;
  positions: ReportCell[];
  /** The top-1 tokens of this row joined and decoded, so multi-token characters read whole. */
  top1_text: string;
}

export interface LensReport {
  schema: string;
  model: { name: string; architecture: string; n_layers: number; hidden_size: number; vocab_size: number; source: string; int8_activations?: true };
  /** `translator`: "linear" or "tuned" when a trained translator maps each residual first (--lens KIND:FILE). */
  lens: { variant: "logit" | "raw"; translator?: "linear" | "tuned"; description: string; top_k: number; points: string[] };
  prompt: string;
  chat: boolean;
  /** Every token of the context: the prompt, then generated tokens. */
  tokens: (ReportToken & { token: string; generated: boolean; special: boolean })[];
  prompt_length: number;
  /** The prompt and generation decoded as one byte string (multi-token characters whole). */
  text: string;
  /** The generated part alone, decoded the same way; absent without generation. */
  generated_text?: string;
  /** Characters with the token range they came from: " 🐠" from tokens [5, 7]. */
  spans: { text: string; tokens: [number, number]; complete: boolean }[];
  /** Positions read (indices into tokens). Position p predicts token p + 1. */
  positions: number[];
  targets: { label: string; ids: number[]; tokens: ReportToken[]; sequence_probs: number[] }[];
  families: { label: string; description: string; size: number }[];
  layers: ReportLayer[];
  final: { positions: ReportCell[]; top1_text: string };
  generation?: { max_new_tokens: number; temperature: number; top_p: number; seed: number; stop_reason: string };
  /** Raw vocabulary string of every token id that appears in the report ("12520": "ĠðŁ"). */
  token_strings: Record<string, string>;
}

export function round(x: number, digits = 4): number {
  if (!Number.isFinite(x)) return x;
  return Number(x.toPrecision(digits));
}

export function reportToken(model: LoadedModel, id: number): ReportToken {
  const bytes = model.tokenizer.tokenBytes(id);
  return { id, text: renderToken(bytes).text, bytes: hex(bytes) };
}

function pointOf(hook: string): string {
  if (hook === "hook_embed") return "embed";
  return hook.replace(/^blocks\.\d+\.hook_/, "");
}

export interface ReportInputs {
  prompt: string;
  chat: boolean;
  job: LensJobResult;
  targets: TextTarget[];
  families: TokenFamily[];
  topK: number;
  points: string[];
  generation?: { maxNewTokens: number; temperature: number; topP: number; seed: number };
}

export function buildReport(model: LoadedModel, inp: ReportInputs): LensReport {
  const { job } = inp;
  const tok = model.tokenizer;
  const bytesOf = (id: number) => tok.tokenBytes(id);
  const tokenCache = new Map<number, ReportToken>();
  const token = (id: number): ReportToken => {
    let t = tokenCache.get(id);
    if (!t) tokenCache.set(id, (t = reportToken(model, id)));
    return t;
  };
  // The unfinished character (if any) that the context up to each position ends with.
  const pending = new Map<number, Uint8Array>();
  const pendingAt = (position: number): Uint8Array => {
    let b = pending.get(position);
    if (!b) pending.set(position, (b = pendingBytes(job.ids.slice(Math.max(0, position - 3), position + 1).map(bytesOf))));
    return b;
  };
  /** chain(t, i): the target's whole-sequence probability at this row and read position i. */
  const cell = (c: LensCell, position: number, withKl: boolean, chain: (t: number) => number): ReportCell => {
    const out: ReportCell = {
      position,
      top: c.topIds.map((id, k) => {
        const e: ReportTopEntry = { ...token(id), prob: round(Math.exp(c.topLogprobs[k]!)), logit: round(c.topLogits[k]!) };
        const shown = readInContext(pendingAt(position), bytesOf(id));
        if (shown !== undefined) e.in_context = shown;
        return e;
      }),
      entropy: round(c.entropy),
      kl_to_final: withKl ? round(c.klToFinal) : 0,
    };
    if (inp.targets.length) {
      out.targets = c.trackedLogprobs.map((lp, t) => {
        const v: ReportTargetValue = { prob: round(Math.exp(lp)), rank: c.trackedRanks[t]!, logit: round(c.trackedLogits[t]!) };
        if (inp.targets[t]!.ids.length > 1) v.sequence_prob = round(chain(t));
        return v;
      });
    }
    if (inp.families.length) out.families = c.familyProbs.map((p) => round(p));
    return out;
  };
  const top1Text = (cells: LensCell[]) => reassemble(cells.map((c) => bytesOf(c.topIds[0]!))).text;
  const all = reassemble(job.ids.map(bytesOf));
  const cfg = model.config;
  const report: LensReport = {
    schema: REPORT_SCHEMA,
    model: { name: model.info.name, architecture: cfg.architecture, n_layers: cfg.nLayers, hidden_size: cfg.hidden, vocab_size: cfg.vocabSize, source: model.info.source, ...(model.quantizedArithmetic === "int8" ? { int8_activations: true as const } : {}) },
    lens: {
      variant: job.result.variant,
      description:
        job.result.variant === "logit"
          ? "logit lens: the final norm (statistics recomputed from each residual), then the unembedding"
          : "raw unembedding of each residual, without the final norm",
      top_k: inp.topK,
      points: inp.points,
    },
    prompt: inp.prompt,
    chat: inp.chat,
    tokens: job.ids.map((id, i) => ({ ...token(id), token: tok.tokenString(id), generated: i >= job.promptLength, special: tok.isSpecial(id) })),
    prompt_length: job.promptLength,
    text: all.text,
    spans: all.spans.map((s) => ({ text: s.text, tokens: s.tokens, complete: s.complete })),
    positions: job.result.positions,
    targets: inp.targets.map((t, i) => ({ label: t.label, ids: t.ids, tokens: t.ids.map(token), sequence_probs: job.sequenceProbs[i]!.map((p) => round(p)) })),
    families: inp.families.map((f) => ({ label: f.label, description: f.description, size: f.size })),
    layers: job.result.readouts.map((r, ri) => ({
      hook: r.hook,
      layer: r.layer,
      point: pointOf(r.hook),
      positions: r.cells.map((c, i) => cell(c, job.result.positions[i]!, true, (t) => job.chainProbs.layers[t]![i]![ri]!)),
      top1_text: top1Text(r.cells),
    })),
    final: { positions: job.result.final.map((c, i) => cell(c, job.result.positions[i]!, false, (t) => job.chainProbs.final[t]![i]!)), top1_text: top1Text(job.result.final) },
    token_strings: {},
  };
  // Filled last: every id that went through token() above, once.
  for (const id of [...tokenCache.keys()].sort((a, b) => a - b)) report.token_strings[String(id)] = tok.tokenString(id);
  if (job.ids.length > job.promptLength) report.generated_text = reassemble(job.ids.slice(job.promptLength).map(bytesOf)).text;
  if (inp.generation) {
    report.generation = {
      max_new_tokens: inp.generation.maxNewTokens,
      temperature: inp.generation.temperature,
      top_p: inp.generation.topP,
      seed: inp.generation.seed,
      stop_reason: job.stopReason ?? "max-new-tokens",
    };
  }
  return report;
}
