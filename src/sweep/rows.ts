/**
 * The sweep's rows, one per (prompt, position or target, layer), and their Parquet encoding
 * (hyparquet-writer: pure JS, no native code; 1M rows x 3 columns in about 1 s measured here).
 *
 * Columns: unit, prompt (index in the data), prompt_id, lens, kind ("position", "target",
 * "token_set"), position, label (the next token's vocabulary string for position rows; the
 * target or token-set label otherwise), token (next token id; null for the last position and for
 * target rows), layer, then the metrics asked for: kl, ce, top1 (position rows; null elsewhere),
 * prob (target and token-set rows). kl and ce in nats.
 */
import { parquetWriteBuffer } from "hyparquet-writer";
import type { LensTokenizer } from "../tokens/tokenizer.js";
import type { SweepPrompt } from "./data.js";
import type { PromptEval } from "./evaluate.js";
import type { PromptStats } from "./stats.js";

export const METRICS = ["kl", "ce", "top1", "targets"] as const;
export type Metric = (typeof METRICS)[number];

export class RowBuffer {
  unit: number[] = [];
  prompt: number[] = [];
  promptId: string[] = [];
  lens: string[] = [];
  kind: string[] = [];
  position: number[] = [];
  label: string[] = [];
  token: (number | null)[] = [];
  layer: number[] = [];
  kl: (number | null)[] = [];
  ce: (number | null)[] = [];
  top1: (boolean | null)[] = [];
  prob: (number | null)[] = [];

  constructor(readonly metrics: ReadonlySet<Metric>) {}

  get length(): number {
    return this.layer.length;
  }

  private push(unit: number, p: SweepPrompt, lens: string, kind: string, position: number, label: string, token: number | null, layer: number, kl: number | null, ce: number | null, top1: boolean | null, prob: number | null): void {
    this.unit.push(unit);
    this.prompt.push(p.index);
    this.promptId.push(p.id);
    this.lens.push(lens);
    this.kind.push(kind);
    this.position.push(position);
    this.label.push(label);
    this.token.push(token);
    this.layer.push(layer);
    this.kl.push(kl);
    this.ce.push(ce);
    this.top1.push(top1);
    this.prob.push(prob);
  }

  /** Adds one prompt's evaluation (every lens); returns its statistics for the summary. */
  add(unit: number, p: SweepPrompt, evals: PromptEval[], tok: LensTokenizer): PromptStats {
    const m = this.metrics;
    const stats: PromptStats = {};
    for (const ev of evals) {
      const L = ev.kl.length;
      const posMetrics = m.has("kl") || m.has("ce") || m.has("top1");
      if (posMetrics) {
        ev.positions.forEach((pos, i) => {
          const next = pos + 1 < p.ids.length ? p.ids[pos + 1]! : null;
          const label = next === null ? "" : tok.tokenString(next);
          for (let l = 0; l < L; l++) {
            const ce = ev.ce[l]![i]!;
            this.push(unit, p, ev.lens, "position", pos, label, next, l, m.has("kl") ? ev.kl[l]![i]! : null, m.has("ce") && !Number.isNaN(ce) ? ce : null, m.has("top1") ? ev.top1Agree[l]![i] === 1 : null, null);
          }
        });
        const series = (name: string, get: (l: number, i: number) => number, skip: (i: number) => boolean) => {
          const sum = new Array<number>(L).fill(0);
          let n = 0;
          ev.positions.forEach((_, i) => {
            if (skip(i)) return;
            n++;
            for (let l = 0; l < L; l++) sum[l] += get(l, i);
          });
          if (n > 0) stats[`${ev.lens}\t${name}`] = { sum, n };
        };
        if (m.has("kl")) series("kl", (l, i) => ev.kl[l]![i]!, () => false);
        if (m.has("ce")) series("ce", (l, i) => ev.ce[l]![i]!, (i) => Number.isNaN(ev.ce[0]![i]!));
        if (m.has("top1")) series("top1", (l, i) => ev.top1Agree[l]![i]!, () => false);
      }
      if (m.has("targets")) {
        const last = p.ids.length - 1;
        // Tracked ids are the targets' ids in order, then the token sets (evaluate.ts' request).
        let k = 0;
        for (const t of p.targets) {
          const sum = new Array<number>(L).fill(0);
          for (let l = 0; l < L; l++) for (let j = 0; j < t.ids.length; j++) sum[l] += ev.targetProb[l]![k + j]!;
          k += t.ids.length;
          for (let l = 0; l < L; l++) this.push(unit, p, ev.lens, "target", last, t.label, null, l, null, null, null, sum[l]!);
          stats[`${ev.lens}\ttarget:${t.label}`] = { sum, n: 1 };
        }
        p.tokenSets.forEach((s, f) => {
          const sum = Array.from({ length: L }, (_, l) => ev.familyProb[l]![f]!);
          for (let l = 0; l < L; l++) this.push(unit, p, ev.lens, "token_set", last, s.label, null, l, null, null, null, sum[l]!);
          stats[`${ev.lens}\tset:${s.label}`] = { sum, n: 1 };
        });
      }
    }
    return stats;
  }

  toParquet(): Uint8Array {
    const m = this.metrics;
    const columns = [
      { name: "unit", data: Int32Array.from(this.unit), type: "INT32" as const, nullable: false },
      { name: "prompt", data: Int32Array.from(this.prompt), type: "INT32" as const, nullable: false },
      { name: "prompt_id", data: this.promptId, type: "STRING" as const, nullable: false },
      { name: "lens", data: this.lens, type: "STRING" as const, nullable: false },
      { name: "kind", data: this.kind, type: "STRING" as const, nullable: false },
      { name: "position", data: Int32Array.from(this.position), type: "INT32" as const, nullable: false },
      { name: "label", data: this.label, type: "STRING" as const, nullable: false },
      { name: "token", data: this.token, type: "INT32" as const },
      { name: "layer", data: Int32Array.from(this.layer), type: "INT32" as const, nullable: false },
      ...(m.has("kl") ? [{ name: "kl", data: this.kl, type: "FLOAT" as const }] : []),
      ...(m.has("ce") ? [{ name: "ce", data: this.ce, type: "FLOAT" as const }] : []),
      ...(m.has("top1") ? [{ name: "top1", data: this.top1, type: "BOOLEAN" as const }] : []),
      ...(m.has("targets") ? [{ name: "prob", data: this.prob, type: "DOUBLE" as const }] : []),
    ];
    return new Uint8Array(parquetWriteBuffer({ columnData: columns }));
  }
}
