/**
 * The compact JSON (`--format json --compact`): the same report, with every token's text and bytes
 * written once in a `vocab` table and each top-k entry reduced to `[id, prob, logit]`. About a third
 * of the size of the self-describing form; `expandReport` turns it back (the HTML viewer could).
 */
import type { LensReport, ReportCell } from "./report.js";
import { fromHex } from "../tokens/render.js";
import { pendingBytes, readInContext } from "../tokens/in-context.js";

export const COMPACT_SCHEMA = "logit-lens/report-compact@1";

type CompactCell = Omit<ReportCell, "top"> & { top: [number, number, number][] };

export interface CompactReport extends Omit<LensReport, "schema" | "layers" | "final"> {
  schema: string;
  /** id -> [display text, bytes hex] for every id in the report. */
  vocab: Record<string, [string, string]>;
  layers: (Omit<LensReport["layers"][number], "positions"> & { positions: CompactCell[] })[];
  final: { positions: CompactCell[]; top1_text: string };
}

export function compactReport(report: LensReport): CompactReport {
  const vocab: Record<string, [string, string]> = {};
  const cell = (c: ReportCell): CompactCell => ({
    ...c,
    top: c.top.map((t) => {
      vocab[String(t.id)] ??= [t.text, t.bytes];
      return [t.id, t.prob, t.logit];
    }),
  });
  for (const t of report.tokens) vocab[String(t.id)] ??= [t.text, t.bytes];
  return {
    ...report,
    schema: COMPACT_SCHEMA,
    layers: report.layers.map((l) => ({ ...l, positions: l.positions.map(cell) })),
    final: { ...report.final, positions: report.final.positions.map(cell) },
    vocab,
  };
}

export function expandReport(compact: CompactReport): LensReport {
  // `in_context` is not stored: it follows from the context's bytes, so it is recomputed here.
  const pendingAt = (p: number) => pendingBytes(compact.tokens.slice(Math.max(0, p - 3), p + 1).map((t) => fromHex(t.bytes)));
  const cell = (c: CompactCell): ReportCell => {
    const pending = pendingAt(c.position);
    return {
      ...c,
      top: c.top.map(([id, prob, logit]) => {
        const [text, bytes] = compact.vocab[String(id)]!;
        const shown = readInContext(pending, fromHex(bytes));
        return shown === undefined ? { id, text, bytes, prob, logit } : { id, text, bytes, prob, logit, in_context: shown };
      }),
    };
  };
  const { vocab: _vocab, ...rest } = compact;
  return {
    ...rest,
    schema: "logit-lens/report@1",
    layers: compact.layers.map((l) => ({ ...l, positions: l.positions.map(cell) })),
    final: { ...compact.final, positions: compact.final.positions.map(cell) },
  };
}
