/**
 * The classic corpus figure as a self-contained SVG: one panel per metric (KL to final,
 * cross-entropy, top-1 agreement, target/token-set probability), the metric against the layer,
 * one line per lens (or per target label) with its bootstrap 95 % interval as a band. Same
 * conventions as the lens figure (src/outputs/svg.ts): DejaVu Sans, no scripts or external
 * resources, Tableau 10 series colours from presentation.ts, a <title> per series.
 */
import { SERIES_COLORS } from "../outputs/presentation.js";
import { FIGURE_FONT_FAMILY, escapeXml, textWidth, truncate } from "../outputs/svg.js";
import type { SummarySeries } from "./stats.js";
import type { SweepSummary } from "./sweep.js";

const PANEL_W = 360;
const PANEL_H = 220;
const PAD_L = 52;
const PAD_B = 34;
const PAD_T = 24;
const GAP = 28;

const fmt = (x: number) => (Math.round(x * 100) / 100).toString();

interface Panel {
  title: string;
  yLabel: string;
  series: SummarySeries[];
  /** Fixed y range for probabilities. */
  unit?: boolean;
}

function panelsOf(summary: SweepSummary): Panel[] {
  const by = (pred: (m: string) => boolean) => summary.series.filter((s) => pred(s.metric));
  const panels: Panel[] = [];
  const kl = by((m) => m === "kl");
  if (kl.length) panels.push({ title: "KL to the final output", yLabel: "nats", series: kl });
  const ce = by((m) => m === "ce");
  if (ce.length) panels.push({ title: "cross-entropy vs the next token", yLabel: "nats", series: ce });
  const top1 = by((m) => m === "top1");
  if (top1.length) panels.push({ title: "top-1 agreement with the output", yLabel: "fraction", series: top1, unit: true });
  const probs = by((m) => m.startsWith("target:") || m.startsWith("set:"));
  if (probs.length) panels.push({ title: "probability at the last position", yLabel: "probability", series: probs, unit: true });
  return panels;
}

/** About 5 round ticks covering [lo, hi]. */
function ticks(lo: number, hi: number): number[] {
  const span = hi - lo || 1;
  const raw = span / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.round(t / step) * step);
  return out;
}

export interface SweepFigureOptions {
  /** Maps every text drawn (the PNG replaces what its fonts cannot draw; png.ts coveredText). */
  mapText?: (s: string) => string;
}

export function sweepFigure(summary: SweepSummary, opts: SweepFigureOptions = {}): string {
  const tx = opts.mapText ?? ((s: string) => s);
  const panels = panelsOf(summary);
  const L = summary.model.n_layers;
  const nLenses = new Set(summary.series.map((s) => s.lens)).size;
  const cols = Math.min(2, Math.max(1, panels.length));
  const rowsN = Math.ceil(panels.length / cols);
  const marginL = 12;
  const headerH = 52;
  const legendW = 190;
  const width = marginL + cols * (PAD_L + PANEL_W + GAP) + legendW;
  const height = headerH + rowsN * (PAD_T + PANEL_H + PAD_B + GAP) + 30;
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${escapeXml(FIGURE_FONT_FAMILY)}" font-size="11">`);
  const title = `Lens statistics by layer: ${summary.model.name}`;
  out.push(`<title>${escapeXml(title)}</title>`);
  out.push(`<desc>${escapeXml(`Mean over ${summary.data.prompts} prompts of ${summary.data.file}, with percentile bootstrap 95% intervals over prompts (${summary.bootstrap.resamples} resamples, seed ${summary.bootstrap.seed}) as bands.`)}</desc>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${marginL}" y="27" font-size="16" font-weight="bold" fill="#111111">${escapeXml(truncate(tx(title), width - 2 * marginL, 16, true))}</text>`);
  const sub = `${summary.model.architecture}, ${L} layers · ${summary.data.prompts} prompts from ${summary.data.file}${summary.data.window ? `, windows of ${summary.data.window} tokens` : ""} · bands: bootstrap 95% over prompts`;
  out.push(`<text x="${marginL}" y="44" font-size="11.5" fill="#444444">${escapeXml(truncate(tx(sub), width - 2 * marginL, 11.5))}</text>`);

  // One colour per (lens, metric) series label, shared by all panels: lenses first.
  const keys: string[] = [];
  for (const s of summary.series) {
    const k = keyOf(s, nLenses);
    if (!keys.includes(k)) keys.push(k);
  }
  const colorOf = (s: SummarySeries) => SERIES_COLORS[keys.indexOf(keyOf(s, nLenses)) % SERIES_COLORS.length]!;

  panels.forEach((panel, i) => {
    const col = i % cols;
    const row = Math.floor(i / cols);
    const x0 = marginL + col * (PAD_L + PANEL_W + GAP) + PAD_L;
    const y0 = headerH + row * (PAD_T + PANEL_H + PAD_B + GAP) + PAD_T;
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of panel.series) for (let l = 0; l < L; l++) for (const v of [s.lo[l]!, s.hi[l]!, s.mean[l]!]) if (Number.isFinite(v)) (lo = Math.min(lo, v), hi = Math.max(hi, v));
    if (panel.unit) (lo = 0, hi = Math.max(hi, 1e-3) > 0.5 ? 1 : Math.max(hi, 1e-3));
    else (lo = Math.min(0, lo), hi = hi > lo ? hi : lo + 1);
    const ys = ticks(lo, hi);
    hi = Math.max(hi, ys[ys.length - 1]!);
    const sx = (l: number) => x0 + (L > 1 ? (l / (L - 1)) * PANEL_W : PANEL_W / 2);
    const sy = (v: number) => y0 + PANEL_H - ((v - lo) / (hi - lo || 1)) * PANEL_H;
    out.push(`<g class="panel" data-title="${escapeXml(panel.title)}">`);
    out.push(`<text x="${x0}" y="${y0 - 8}" font-size="12" font-weight="bold" fill="#222222">${escapeXml(panel.title)}</text>`);
    // Grid and axes.
    for (const t of ys) {
      const y = fmt(sy(t));
      out.push(`<line x1="${x0}" y1="${y}" x2="${x0 + PANEL_W}" y2="${y}" stroke="#e5e5e5" stroke-width="0.8"/>`);
      out.push(`<text x="${x0 - 6}" y="${fmt(sy(t) + 4)}" text-anchor="end" fill="#222222">${escapeXml(String(Number(t.toPrecision(6))))}</text>`);
    }
    for (const t of ticks(0, L - 1).filter((t) => Number.isInteger(t))) {
      const x = fmt(sx(t));
      out.push(`<line x1="${x}" y1="${y0 + PANEL_H}" x2="${x}" y2="${y0 + PANEL_H + 4}" stroke="#555555" stroke-width="0.8"/>`);
      out.push(`<text x="${x}" y="${y0 + PANEL_H + 16}" text-anchor="middle" fill="#222222">${t}</text>`);
    }
    out.push(`<rect x="${x0}" y="${y0}" width="${PANEL_W}" height="${PANEL_H}" fill="none" stroke="#555555" stroke-width="0.8"/>`);
    out.push(`<text x="${x0 + PANEL_W / 2}" y="${y0 + PANEL_H + 30}" text-anchor="middle" font-size="11.5" fill="#222222">layer</text>`);
    const ylx = x0 - PAD_L + 12;
    const yly = fmt(y0 + PANEL_H / 2);
    out.push(`<text x="${ylx}" y="${yly}" text-anchor="middle" font-size="11.5" fill="#222222" transform="rotate(-90 ${ylx} ${yly})">${escapeXml(panel.yLabel)}</text>`);
    // Bands, then lines on top.
    for (const s of panel.series) {
      const upper = Array.from({ length: L }, (_, l) => `${fmt(sx(l))},${fmt(sy(s.hi[l]!))}`);
      const lower = Array.from({ length: L }, (_, l) => `${fmt(sx(L - 1 - l))},${fmt(sy(s.lo[L - 1 - l]!))}`);
      out.push(`<polygon class="band" data-series="${escapeXml(keyOf(s, nLenses))}" points="${[...upper, ...lower].join(" ")}" fill="${colorOf(s)}" fill-opacity="0.18" stroke="none"/>`);
    }
    for (const s of panel.series) {
      const pts = Array.from({ length: L }, (_, l) => `${fmt(sx(l))},${fmt(sy(s.mean[l]!))}`).join(" ");
      out.push(`<polyline class="series" data-series="${escapeXml(keyOf(s, nLenses))}" points="${pts}" fill="none" stroke="${colorOf(s)}" stroke-width="1.8"><title>${escapeXml(`${keyOf(s, nLenses)}: ${s.mean.map((v) => v.toFixed(3)).join(", ")}`)}</title></polyline>`);
    }
    out.push(`</g>`);
  });

  // Legend.
  const lx = marginL + cols * (PAD_L + PANEL_W + GAP) + 4;
  let ly = headerH + PAD_T;
  out.push(`<g class="legend">`);
  for (const k of keys) {
    const c = SERIES_COLORS[keys.indexOf(k) % SERIES_COLORS.length]!;
    out.push(`<rect x="${lx}" y="${ly - 9}" width="14" height="10" fill="${c}" fill-opacity="0.35" stroke="${c}"/>`);
    out.push(`<text x="${lx + 20}" y="${ly}" fill="#222222">${escapeXml(truncate(tx(k), legendW - 28, 11))}</text>`);
    ly += 16;
  }
  out.push(`</g>`);
  void textWidth;
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** A series' legend label: the lens (when several), and for probabilities the target label. */
function keyOf(s: SummarySeries, nLenses: number): string {
  const what = s.metric.startsWith("target:") || s.metric.startsWith("set:") ? s.metric : "";
  if (nLenses > 1) return what ? `${s.lens}: ${what}` : `${s.lens} lens`;
  return what || `${s.lens} lens`;
}
