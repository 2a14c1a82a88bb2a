/**
 * How the lens looks, in one place: colour scales, row labels and number formats shared by every
 * view (terminal, SVG, PNG, the HTML report and the `serve` app). Pure functions, no Node or DOM
 * APIs: the browser viewer (src/web/) bundles this same file.
 */

export type Rgb = [number, number, number];

// ---------------------------------------------------------------------------------------------
// Colour

/** ColorBrewer 9-class "Blues" (sequential, perceptually ordered), white to deep blue: every heatmap. */
export const BLUES: readonly Rgb[] = [
  [0xf7, 0xfb, 0xff],
  [0xde, 0xeb, 0xf7],
  [0xc6, 0xdb, 0xef],
  [0x9e, 0xca, 0xe1],
  [0x6b, 0xae, 0xd6],
  [0x42, 0x92, 0xc6],
  [0x21, 0x71, 0xb5],
  [0x08, 0x51, 0x9c],
  [0x08, 0x30, 0x6b],
];

/** ColorBrewer "RdBu" reversed (blue = less, white = same, red = more): difference views. */
export const RED_BLUE: readonly Rgb[] = [
  [0x21, 0x66, 0xac],
  [0x43, 0x93, 0xc3],
  [0x92, 0xc5, 0xde],
  [0xd1, 0xe5, 0xf0],
  [0xf7, 0xf7, 0xf7],
  [0xfd, 0xdb, 0xc7],
  [0xf4, 0xa5, 0x82],
  [0xd6, 0x60, 0x4d],
  [0xb2, 0x18, 0x2b],
];

/** Lines of tracked targets and families (Tableau 10), in order. */
export const SERIES_COLORS: readonly string[] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

/** The colour at t in [0, 1] along a scale (linear between its stops); NaN reads as 0. */
export function rampRgb(t: number, stops: readonly Rgb[] = BLUES): Rgb {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i]!;
  const b = stops[i + 1]!;
  return [Math.round(a[0] + (b[0] - a[0]) * f), Math.round(a[1] + (b[1] - a[1]) * f), Math.round(a[2] + (b[2] - a[2]) * f)];
}

const hex2 = (n: number) => n.toString(16).padStart(2, "0");

export function rgbHex([r, g, b]: Rgb): string {
  return `#${hex2(r)}${hex2(g)}${hex2(b)}`;
}

/** Background colour of a probability in [0, 1], as #rrggbb (the heatmaps' default scale). */
export function probColor(p: number): string {
  return rgbHex(rampRgb(p));
}

/** Black or white text, whichever contrasts more with the background (WCAG relative luminance). */
export function textColorOn([r, g, b]: Rgb): "#111111" | "#ffffff" {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  const L = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  // Contrast with black (L + .05) / .05 against white 1.05 / (L + .05): equal at L ~ 0.179.
  return L > 0.179 ? "#111111" : "#ffffff";
}

/** Text colour over probColor(p). */
export function textColorFor(p: number): string {
  return textColorOn(rampRgb(p));
}

/** The nearest colour of the xterm 256-colour palette (6x6x6 cube or grey ramp), for terminals. */
export function xterm256([r, g, b]: Rgb): number {
  const level = [0, 95, 135, 175, 215, 255];
  const nearest = (c: number) => level.reduce((best, v, i) => (Math.abs(v - c) < Math.abs(level[best]! - c) ? i : best), 0);
  const [ri, gi, bi] = [nearest(r), nearest(g), nearest(b)];
  const cube = 16 + 36 * ri + 6 * gi + bi;
  const cubeDist = (level[ri]! - r) ** 2 + (level[gi]! - g) ** 2 + (level[bi]! - b) ** 2;
  const grey = Math.min(23, Math.max(0, Math.round(((r + g + b) / 3 - 8) / 10)));
  const gv = 8 + grey * 10;
  const greyDist = (gv - r) ** 2 + (gv - g) ** 2 + (gv - b) ** 2;
  return greyDist < cubeDist ? 232 + grey : cube;
}

// ---------------------------------------------------------------------------------------------
// What a cell's colour means

/** Probabilities at or below this get the lightest colour on a log scale. */
export const LOG_FLOOR = 1e-6;

/**
 * The lens's name as every view titles it: a translator lens (`--lens linear:FILE`, `tuned:FILE`)
 * by its kind, else the logit lens or the raw unembedding.
 */
export function lensName(lens: { variant: string; translator?: string }): string {
  if (lens.translator) return `${lens.translator} lens`;
  return lens.variant === "raw" ? "raw unembedding" : "logit lens";
}

/** Position of a probability on the scale: linear, or log10 from LOG_FLOOR (1e-6) to 1. */
export function probT(p: number, log = false): number {
  if (!Number.isFinite(p) || p <= 0) return 0;
  if (!log) return Math.min(1, p);
  const lo = Math.log10(LOG_FLOOR);
  return Math.min(1, Math.max(0, (Math.log10(p) - lo) / -lo));
}

/** Rank 0 (the top token) is darkest; rank vocab-1 lightest, on a log scale. */
export function rankT(rank: number, vocabSize: number): number {
  if (!Number.isFinite(rank) || rank < 0) return 0;
  return Math.max(0, 1 - Math.log10(rank + 1) / Math.log10(Math.max(2, vocabSize)));
}

/** Entropy in nats as a fraction of the most it can be (uniform over the vocabulary). */
export function entropyT(nats: number, vocabSize: number): number {
  return Math.min(1, Math.max(0, nats / Math.log(Math.max(2, vocabSize))));
}

/** KL in nats on a log scale: 0 -> 0, KL_SCALE_MAX nats or more -> 1. */
export const KL_SCALE_MAX = 20;
export function klT(nats: number): number {
  if (!Number.isFinite(nats) || nats <= 0) return 0;
  return Math.min(1, Math.log1p(nats) / Math.log1p(KL_SCALE_MAX));
}

// ---------------------------------------------------------------------------------------------
// Rows

const POINT_SHORT: Record<string, string> = { resid_pre: "pre", attn_out: "attn", resid_mid: "mid", mlp_out: "mlp", resid_post: "" };

/** Readout points in forward order within a block. */
export const POINT_ORDER = ["embed", "resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"] as const;

/**
 * The one short label of a heatmap row: "output" (for the row "final", the model's own
 * prediction), "embed", "L12" (resid_post), "L12 mid", "L12 attn", "L12 mlp", "L12 pre".
 */
export function rowLabel(row: { layer: number; point: string } | "final"): string {
  if (row === "final") return "output";
  if (row.layer < 0 || row.point === "embed") return "embed";
  const short = POINT_SHORT[row.point] ?? row.point;
  return short ? `L${row.layer} ${short}` : `L${row.layer}`;
}

/** The same row in words (tooltips, the details panel). */
export function rowTitle(row: { layer: number; point: string } | "final"): string {
  if (row === "final") return "output (the model's own prediction)";
  if (row.layer < 0 || row.point === "embed") return "embeddings (hook_embed)";
  return `layer ${row.layer} · ${row.point}`;
}

// ---------------------------------------------------------------------------------------------
// Numbers

/** A probability as a percentage with enough digits to tell small ones apart: "96.02%", "0.14%", "3.4e-22%". */
export function formatProb(p: number): string {
  if (typeof p !== "number" || !Number.isFinite(p)) return "—";
  if (p <= 0) return "0%";
  const pct = p * 100;
  if (pct >= 1) return `${pct.toFixed(2)}%`;
  if (pct >= 1e-3) return `${pct.toPrecision(2)}%`;
  return `${pct.toExponential(1)}%`;
}

/** A probability in a few characters, for cells: "96%", "3%", "<1%". */
export function formatProbShort(p: number): string {
  if (typeof p !== "number" || !Number.isFinite(p)) return "—";
  const pct = Math.round(p * 100);
  return pct === 0 && p > 0 ? "<1%" : `${pct}%`;
}

/** Entropy or KL in nats, three decimals. */
export function formatNats(x: number): string {
  if (typeof x !== "number" || !Number.isFinite(x)) return "—";
  return x.toFixed(3);
}

/** A rank as people count it: rank 0 is "#1". */
export function formatRank(rank: number): string {
  return Number.isFinite(rank) ? `#${(rank + 1).toLocaleString("en-US")}` : "—";
}

/** Lowercase hex "20f09f" -> "20 f0 9f". */
export function spacedHex(hex: string): string {
  return (hex || "").replace(/(..)(?=.)/g, "$1 ");
}
