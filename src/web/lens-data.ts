/**
 * What the viewer reads from a lens report (src/outputs/report.ts): rows, cells, what a cell's
 * colour stands for, commitment layers of generated tokens, and the difference of two reports.
 * No DOM here, so tests and the server could use it as well.
 */
import type { LensReport, ReportCell, ReportLayer } from "../outputs/report.js";
import { entropyT, klT, POINT_ORDER, probT, rankT } from "../outputs/presentation.js";

/** A heatmap row: an index into report.layers, or the model's output. */
export type RowKey = number | "final";

/** What colours the cells. */
export type ColorBy = "prob" | "entropy" | "kl" | `target:${number}` | `rank:${number}` | `family:${number}` | "diff" | `rankdiff:${number}`;

/** Colour modes that compare A with B (drawn on the diverging or red scale, need a second report). */
export function isDiff(by: ColorBy): boolean {
  return by === "diff" || by.startsWith("rankdiff:");
}

/**
 * The exact per-cell KL of two runs over the whole vocabulary, as POST /api/kl answers it
 * (docs/serve-api.md): rows by index into A's report.layers (-1: the output), the first `columns`
 * columns, both directions in nats.
 */
export interface ExactKl {
  layers: number[];
  columns: number;
  kl_ab: number[][];
  kl_ba: number[][];
}

/** The exact KL at a cell, both directions; undefined where the two runs do not share the cell. */
export function exactKlAt(exact: ExactKl | undefined, row: RowKey, col: number): { ab: number; ba: number } | undefined {
  if (!exact || col >= exact.columns) return undefined;
  const i = exact.layers.indexOf(row === "final" ? -1 : row);
  if (i < 0) return undefined;
  return { ab: exact.kl_ab[i]![col]!, ba: exact.kl_ba[i]![col]! };
}

/** The rank change of target i from A to B at a cell (B's rank minus A's; negative: B ranks it higher). */
export function rankChange(a: ReportCell | undefined, b: ReportCell | undefined, i: number): number {
  const ra = a?.targets?.[i]?.rank;
  const rb = b?.targets?.[i]?.rank;
  return ra === undefined || rb === undefined ? NaN : rb - ra;
}

/** A rank change on the diverging scale: 0.5 = unchanged, 0 = B ranks it ~V places higher, 1 = ~V lower. */
export function rankChangeT(delta: number, vocabSize: number): number {
  if (!Number.isFinite(delta)) return NaN;
  return 0.5 + (0.5 * Math.sign(delta) * Math.log10(1 + Math.abs(delta))) / Math.log10(Math.max(2, vocabSize));
}

export function cellAt(report: LensReport, row: RowKey, col: number): ReportCell | undefined {
  return row === "final" ? report.final.positions[col] : report.layers[row]?.positions[col];
}

export function layerOf(report: LensReport, row: RowKey): ReportLayer | undefined {
  return row === "final" ? undefined : report.layers[row];
}

/** The readout points present, in forward order. */
export function pointsOf(report: LensReport): string[] {
  const seen = new Set(report.layers.map((l) => l.point));
  return [...POINT_ORDER.filter((p) => seen.has(p)), ...[...seen].filter((p) => !(POINT_ORDER as readonly string[]).includes(p))];
}

/** Rows in display order: the output on top (or at the bottom), then the readouts of `point`. */
export function displayRows(report: LensReport, point: string, outputOnTop: boolean): RowKey[] {
  const rows: RowKey[] = [];
  report.layers.forEach((l, i) => {
    if (point === "all" || l.point === point) rows.push(i);
  });
  return outputOnTop ? ["final", ...rows.reverse()] : [...rows, "final"];
}

/**
 * Position of a cell on the colour scale, in [0, 1]; NaN when the cell has no such value. `other` is
 * B's cell (difference modes); `exact` is the exact KL(A ‖ B) of the cell when the server sent it
 * (the difference view then shows it instead of the top-k estimate).
 */
export function colorValue(report: LensReport, cell: ReportCell | undefined, by: ColorBy, log: boolean, other?: ReportCell, exact?: number): number {
  if (!cell) return NaN;
  const V = report.model.vocab_size;
  const [kind, arg] = by.split(":") as [string, string | undefined];
  const i = Number(arg);
  switch (kind) {
    case "prob":
      return probT(cell.top[0]?.prob ?? 0, log);
    case "entropy":
      return entropyT(cell.entropy, V);
    case "kl":
      return klT(cell.kl_to_final);
    case "target":
      return probT(cell.targets?.[i]?.prob ?? NaN, log);
    case "rank":
      return rankT(cell.targets?.[i]?.rank ?? NaN, V);
    case "family":
      return probT(cell.families?.[i] ?? NaN, log);
    case "diff":
      // With the exact KL, cells it does not cover (generated positions) stay blank, not estimated.
      if (exact !== undefined) return Number.isFinite(exact) ? klT(exact) : NaN;
      return other ? klT(topKDivergence(cell, other)) : NaN;
    case "rankdiff":
      return other ? rankChangeT(rankChange(cell, other, i), V) : NaN;
  }
  return NaN;
}

/**
 * KL(a ‖ b) in nats estimated from the two cells' top-k lists: the tokens in either list, plus one
 * bucket for the rest of each distribution. A token missing from one list is given the smaller of
 * that list's last probability and its remaining mass. A lower bound in spirit, exact when both
 * lists hold nearly all the mass; the viewer says "estimated from the top-k".
 */
export function topKDivergence(a: ReportCell, b: ReportCell): number {
  const pa = new Map(a.top.map((t) => [t.id, t.prob]));
  const pb = new Map(b.top.map((t) => [t.id, t.prob]));
  const restA = Math.max(0, 1 - a.top.reduce((s, t) => s + t.prob, 0));
  const restB = Math.max(0, 1 - b.top.reduce((s, t) => s + t.prob, 0));
  const floorA = Math.min(a.top.at(-1)?.prob ?? 0, restA);
  const floorB = Math.min(b.top.at(-1)?.prob ?? 0, restB);
  const ids = new Set([...pa.keys(), ...pb.keys()]);
  let kl = 0;
  let usedA = 0;
  let usedB = 0;
  const eps = 1e-12;
  for (const id of ids) {
    const x = pa.get(id) ?? floorA;
    const y = pb.get(id) ?? floorB;
    if (!pa.has(id)) usedA += x;
    if (!pb.has(id)) usedB += y;
    if (x > 0) kl += x * Math.log(x / Math.max(y, eps));
  }
  const ra = Math.max(0, restA - usedA);
  const rb = Math.max(0, restB - usedB);
  if (ra > 0) kl += ra * Math.log(ra / Math.max(rb, eps));
  return Math.max(0, kl);
}

/** The value of one cell for a colour mode, in words-ready numbers (for the legend and panel). */
export function legendFor(by: ColorBy, report: LensReport, log: boolean, exact = false): { label: string; ticks: [number, string][] } {
  const [kind, arg] = by.split(":") as [string, string | undefined];
  const i = Number(arg);
  const probTicks: [number, string][] = log ? [[0, "≤1e-6"], [1 / 3, "1e-4"], [2 / 3, "1e-2"], [1, "1"]] : [[0, "0"], [0.5, "50%"], [1, "100%"]];
  switch (kind) {
    case "prob":
      return { label: "top-1 probability", ticks: probTicks };
    case "target":
      return { label: `P(“${report.targets[i]?.label}”) (first token)`, ticks: probTicks };
    case "family":
      return { label: `P(family ${report.families[i]?.label})`, ticks: probTicks };
    case "rank": {
      const V = report.model.vocab_size;
      return { label: `rank of “${report.targets[i]?.label}”`, ticks: [[0, `#${V.toLocaleString("en-US")}`], [1 - Math.log10(100) / Math.log10(V), "#100"], [1, "#1"]] };
    }
    case "entropy":
      return { label: "entropy (nats)", ticks: [[0, "0"], [0.5, (Math.log(report.model.vocab_size) / 2).toFixed(1)], [1, Math.log(report.model.vocab_size).toFixed(1)]] };
    case "kl":
      return { label: "KL to the output (nats)", ticks: [[0, "0"], [Math.log1p(1) / Math.log1p(20), "1"], [1, "≥20"]] };
    case "diff":
      return { label: exact ? "KL(A ‖ B), exact over the vocabulary, nats" : "KL(A ‖ B) estimate (top-k), nats", ticks: [[0, "0"], [Math.log1p(1) / Math.log1p(20), "1"], [1, "≥20"]] };
    case "rankdiff": {
      const V = report.model.vocab_size;
      const at = (d: number) => rankChangeT(d, V);
      return { label: `rank change of “${report.targets[i]?.label}”, A → B (blue: B higher)`, ticks: [[0, `−${V.toLocaleString("en-US")}`], [at(-100), "−100"], [0.5, "0"], [at(100), "+100"], [1, `+${V.toLocaleString("en-US")}`]] };
    }
  }
  return { label: "", ticks: [] };
}

/**
 * For each generated token: its commitment layer, the first resid_post layer from which the lens's
 * top-1 at the position before it is that token and stays so up to the last layer (-1 when the
 * embedding already is; null when not even the last layer agrees, as sampling can choose).
 */
export function commitmentLayers(report: LensReport): { index: number; layer: number | null }[] {
  const rows = report.layers.map((l, i) => ({ l, i })).filter(({ l }) => l.point === "resid_post" || l.point === "embed");
  const out: { index: number; layer: number | null }[] = [];
  for (let t = report.prompt_length; t < report.tokens.length; t++) {
    const col = report.positions.indexOf(t - 1);
    if (col < 0) continue;
    const id = report.tokens[t]!.id;
    let layer: number | null = null;
    for (let k = rows.length - 1; k >= 0; k--) {
      const cell = rows[k]!.l.positions[col];
      if (!cell || cell.top[0]?.id !== id) break;
      layer = rows[k]!.l.layer;
    }
    out.push({ index: t, layer });
  }
  return out;
}
