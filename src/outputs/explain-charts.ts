/**
 * The figures of "why the fish" (issue 10) as self-contained SVG, like the lens figure (svg.ts):
 * - direct logit attribution: a bar per layer for its attention and MLP parts (plus the embedding
 *   and, for LayerNorm, the final norm's bias), and under it the heads as a layer x head heatmap,
 *   its columns aligned with the bars' layers;
 * - an activation-patching sweep: the standard layers x positions heatmap of the recovered
 *   fraction (patched - B) / (A - B), 1 = A's value restored.
 * Both use the shared palettes (presentation.ts): Tableau colours for the bar series, ColorBrewer
 * "RdBu" (blue negative, white zero, red positive) for signed cells, with a legend. Every bar and
 * cell carries a `<title>` tooltip with its exact value and data-* attributes, so the figure is
 * inspectable in a browser. Pure functions with no Node or DOM API: the explorer bundles this file.
 */
import type { Attribution } from "../explain/attribution.js";
import type { PatchSweep } from "../explain/patching.js";
import { RED_BLUE, SERIES_COLORS, rampRgb, rgbHex, rowLabel, textColorOn } from "./presentation.js";
import { FIGURE_FONT_FAMILY, escapeXml, textWidth, truncate, type FigureOptions } from "./svg.js";

const COLORS = { attn: SERIES_COLORS[1]!, mlp: SERIES_COLORS[4]!, embed: SERIES_COLORS[9]!, bias: SERIES_COLORS[5]! };

const signed = (v: number, digits = 3) => (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(digits);

/** The colour of a signed value on RdBu, scaled so that ±max are the ends. */
function divergingRgb(v: number, max: number) {
  return rampRgb(0.5 + (max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0) / 2, RED_BLUE);
}

/** 1, 2 or 5 times a power of ten, about `span / 5`: the step of an axis's ticks. */
function tickStep(span: number): number {
  const raw = Math.max(span, 1e-9) / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw)!;
}

type Shown = { text: string; in_context?: string };
const shown = (t: Shown) => JSON.stringify(t.text) + (t.in_context !== undefined ? `→${t.in_context}` : "");

/** What the numbers are: logit(" 🐠") − logit(" 🐴"), or logit("⟨A0⟩"→🐠) where a byte completes a character. */
export function attributionWhat(a: { target: Shown; versus?: Shown }, fn = "logit"): string {
  return a.versus ? `${fn}(${shown(a.target)}) − ${fn}(${shown(a.versus)})` : `${fn}(${shown(a.target)})`;
}

/** A horizontal RdBu legend from −max to +max at (x, y). */
function legend(x: number, y: number, width: number, max: number, label: string, font: string): string {
  const steps = 24;
  let s = `<g class="legend">`;
  for (let i = 0; i < steps; i++) s += `<rect x="${(x + (i * width) / steps).toFixed(1)}" y="${y}" width="${(width / steps + 0.5).toFixed(1)}" height="8" fill="${rgbHex(divergingRgb(-max + (2 * max * (i + 0.5)) / steps, max))}"/>`;
  s += `<rect x="${x}" y="${y}" width="${width}" height="8" fill="none" stroke="#999" stroke-width="0.5"/>`;
  s += `<text x="${x}" y="${y + 19}" font-size="10" fill="#333">${escapeXml(signed(-max, 2))}</text>`;
  s += `<text x="${x + width / 2}" y="${y + 19}" font-size="10" fill="#333" text-anchor="middle">0</text>`;
  s += `<text x="${x + width}" y="${y + 19}" font-size="10" fill="#333" text-anchor="end">${escapeXml(signed(max, 2))}</text>`;
  s += `<text x="${x + width + 8}" y="${y + 8}" font-size="10" fill="#333" font-family="${font}">${escapeXml(label)}</text>`;
  return s + `</g>`;
}

function svgOpen(width: number, height: number, font: string, title: string): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${Math.ceil(width)}" height="${Math.ceil(height)}" viewBox="0 0 ${Math.ceil(width)} ${Math.ceil(height)}" font-family="${font}">` +
    `<title>${escapeXml(title)}</title><rect width="100%" height="100%" fill="#ffffff"/>`
  );
}

/** Direct logit attribution: bars per layer (attention, MLP), then the heads heatmap. */
export function attributionSvg(a: Attribution, options: FigureOptions = {}): string {
  const map = options.mapText ?? ((s: string) => s);
  const font = options.fontFamily ?? FIGURE_FONT_FAMILY;
  const L = a.parts.filter((p) => p.kind === "attn").length;
  const value = (kind: string, layer: number) => a.parts.find((p) => p.kind === kind && p.layer === layer)?.value ?? 0;
  const embed = value("embed", -1);
  const bias = a.parts.find((p) => p.kind === "final_norm_bias");
  // Columns: embed, each layer, the final norm bias where there is one.
  const groupW = Math.max(16, Math.min(34, Math.floor(900 / (L + 2))));
  const left = 64;
  const cols = 1 + L + (bias ? 1 : 0);
  const plotW = cols * groupW;
  const top = 58;
  const plotH = 230;
  const values = [embed, ...a.parts.filter((p) => p.kind === "attn" || p.kind === "mlp").map((p) => p.value), ...(bias ? [bias.value] : [])];
  let lo = Math.min(0, ...values);
  let hi = Math.max(0, ...values);
  if (hi - lo < 1e-9) hi = lo + 1;
  const step = tickStep(hi - lo);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const y = (v: number) => top + ((hi - v) / (hi - lo)) * plotH;
  const colX = (c: number) => left + c * groupW;

  const heads = a.heads;
  const nH = heads?.[0]?.length ?? 0;
  const cellH = nH > 16 ? 10 : 14;
  const heatTop = top + plotH + 56;
  const heatH = heads ? nH * cellH : 0;
  const what = attributionWhat(a);
  const title = `${what} at position ${a.position} = ${a.logit.toFixed(3)} (model ${a.model_logit.toFixed(3)})`;
  // Wide enough for the bars and their key, and for the title up to 1,100 px.
  const width = Math.max(left + plotW + 150, Math.min(1100, left + 20 + textWidth(map(`Direct logit attribution: ${title}`), 14, true)), 560);
  const height = heads ? heatTop + heatH + 64 : top + plotH + 60;

  let s = svgOpen(width, height, font, `direct logit attribution: ${title}`);
  s += `<text x="${left}" y="20" font-size="14" font-weight="bold" fill="#111">${escapeXml(map(truncate(`Direct logit attribution: ${title}`, width - left - 10, 14, true)))}</text>`;
  s += `<text x="${left}" y="37" font-size="10" fill="#555">${escapeXml(truncate("final norm scale frozen at the final residual; parts sum to the model's value; bars push toward (up) or away (down)", width - left - 10, 10))}</text>`;
  // Axis and grid.
  for (let v = lo; v <= hi + step / 2; v += step) {
    const yy = y(v).toFixed(1);
    s += `<line x1="${left}" x2="${left + plotW}" y1="${yy}" y2="${yy}" stroke="${Math.abs(v) < step / 2 ? "#333" : "#e3e3e3"}" stroke-width="${Math.abs(v) < step / 2 ? 1 : 0.6}"/>`;
    s += `<text x="${left - 6}" y="${(y(v) + 3.5).toFixed(1)}" font-size="10" fill="#333" text-anchor="end">${escapeXml(Math.abs(v) < step / 2 ? "0" : signed(v, step < 0.1 ? 2 : step < 1 ? 1 : 0))}</text>`;
  }
  const bar = (x: number, w: number, v: number, color: string, tip: string, kind: string, layer: number) => {
    const y0 = y(Math.max(0, v));
    const h = Math.max(0.5, Math.abs(y(v) - y(0)));
    return `<rect class="bar" data-kind="${kind}" data-layer="${layer}" data-value="${v}" x="${x.toFixed(1)}" y="${y0.toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}" fill="${color}"><title>${escapeXml(`${tip}: ${signed(v, 4)}`)}</title></rect>`;
  };
  const inner = groupW - 4;
  s += bar(colX(0) + 2, inner, embed, COLORS.embed, "embedding", "embed", -1);
  const every = L > 40 ? 5 : L > 20 ? 2 : 1;
  for (let l = 0; l < L; l++) {
    const x = colX(1 + l) + 2;
    s += bar(x, inner / 2, value("attn", l), COLORS.attn, `layer ${l} attention`, "attn", l);
    s += bar(x + inner / 2, inner / 2, value("mlp", l), COLORS.mlp, `layer ${l} MLP`, "mlp", l);
  }
  if (bias) s += bar(colX(1 + L) + 2, inner, bias.value, COLORS.bias, "final norm bias", "final_norm_bias", -1);
  // Column labels.
  const labelY = top + plotH + 14;
  s += `<text x="${colX(0) + groupW / 2}" y="${labelY}" font-size="10" fill="#333" text-anchor="middle">emb</text>`;
  for (let l = 0; l < L; l++) if (l % every === 0 || l === L - 1) s += `<text x="${colX(1 + l) + groupW / 2}" y="${labelY}" font-size="10" fill="#333" text-anchor="middle">${l}</text>`;
  if (bias) s += `<text x="${colX(1 + L) + groupW / 2}" y="${labelY}" font-size="10" fill="#333" text-anchor="middle">bias</text>`;
  s += `<text x="${left + plotW / 2}" y="${labelY + 14}" font-size="10" fill="#555" text-anchor="middle">layer</text>`;
  // Series key.
  const keyX = left + plotW + 14;
  [["attention", COLORS.attn], ["MLP", COLORS.mlp], ["embedding", COLORS.embed], ...(bias ? [["final norm bias", COLORS.bias]] : [])].forEach(([name, color], i) => {
    s += `<rect x="${keyX}" y="${top + i * 16}" width="10" height="10" fill="${color}"/><text x="${keyX + 14}" y="${top + 9 + i * 16}" font-size="10" fill="#333">${escapeXml(name!)}</text>`;
  });

  if (heads && nH > 0) {
    const max = Math.max(1e-9, ...heads.flat().map(Math.abs));
    s += `<text x="${left}" y="${heatTop - 10}" font-size="12" font-weight="bold" fill="#111">Heads: each layer's attention part split by head (z_h · W_O[:, h])</text>`;
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < nH; h++) {
        const v = heads[l]![h]!;
        const rgb = divergingRgb(v, max);
        const x = colX(1 + l) + 1;
        const yy = heatTop + h * cellH;
        s += `<rect class="head" data-layer="${l}" data-head="${h}" data-value="${v}" x="${x}" y="${yy}" width="${groupW - 2}" height="${cellH - 1}" fill="${rgbHex(rgb)}"><title>${escapeXml(`layer ${l} head ${h}: ${signed(v, 4)}`)}</title></rect>`;
        if (groupW >= 30 && cellH >= 14 && Math.abs(v) >= max * 0.25) {
          s += `<text x="${x + (groupW - 2) / 2}" y="${yy + cellH - 4}" font-size="8" fill="${textColorOn(rgb)}" text-anchor="middle" pointer-events="none">${escapeXml(v.toFixed(2))}</text>`;
        }
      }
    }
    const headEvery = nH > 16 ? 4 : nH > 8 ? 2 : 1;
    for (let h = 0; h < nH; h++) if (h % headEvery === 0) s += `<text x="${left - 6}" y="${heatTop + h * cellH + cellH - 4}" font-size="9" fill="#333" text-anchor="end">H${h}</text>`;
    for (let l = 0; l < L; l++) if (l % every === 0 || l === L - 1) s += `<text x="${colX(1 + l) + groupW / 2}" y="${heatTop + heatH + 12}" font-size="10" fill="#333" text-anchor="middle">${l}</text>`;
    s += legend(left, heatTop + heatH + 26, 180, max, "head part (pushes away · toward)", font);
  }
  return s + `</svg>\n`;
}

/**
 * Label of a sweep row, as the lens figure labels readouts: patch layer l is the residual entering
 * layer l ("L12 pre"), patch layer nLayers the final residual (the last layer's resid_post, "L29").
 */
function sweepRowLabel(layer: number, nLayers: number): string {
  return layer >= nLayers ? rowLabel({ layer: nLayers - 1, point: "resid_post" }) : rowLabel({ layer, point: "resid_pre" });
}

/**
 * The activation-patching heatmap: one row per patched layer (the last on top, as in the lens
 * figure), one column per patched position of prompt B, the recovered fraction in each cell.
 * The row past the last layer (s.n_layers) is "final", the residual before the final norm.
 */
export function patchSvg(s: PatchSweep, options: FigureOptions = {}): string {
  const nLayers = s.n_layers;
  const map = options.mapText ?? ((t: string) => t);
  const font = options.fontFamily ?? FIGURE_FONT_FAMILY;
  const span = s.clean - s.corrupted;
  const frac = (v: number) => (Math.abs(span) > 1e-9 ? (v - s.corrupted) / span : 0);
  const labels = s.position_tokens.map((t, i) => `${s.positions[i]} ${map(t)}`);
  const cellW = Math.max(40, Math.min(90, Math.max(...labels.map((t) => textWidth(t, 10))) + 8));
  const cellH = s.layers.length > 40 ? 10 : 16;
  const left = 70;
  const top = 64;
  const rows = [...s.layers.keys()].reverse(); // last layer on top
  const plotW = s.positions.length * cellW;
  const plotH = rows.length * cellH;
  const width = Math.max(left + plotW + 40, 520);
  const height = top + plotH + 80;
  const what = attributionWhat(s, s.metric === "logit difference" ? "logit" : "log P");
  const title = `Activation patching A → B: ${what}`;
  let out = svgOpen(width, height, font, title);
  out += `<text x="${left}" y="20" font-size="14" font-weight="bold" fill="#111">${escapeXml(map(truncate(title, width - left - 10, 14, true)))}</text>`;
  out += `<text x="${left}" y="37" font-size="10" fill="#555">${escapeXml(truncate(`A ${s.clean.toFixed(3)}, B ${s.corrupted.toFixed(3)}; cell = (patched − B) / (A − B): 1 = A's value restored by that one residual`, width - left - 10, 10))}</text>`;
  const showNumbers = cellW >= 36 && cellH >= 14;
  rows.forEach((li, r) => {
    const layer = s.layers[li]!;
    const yy = top + r * cellH;
    const every = rows.length > 40 ? 5 : rows.length > 20 ? 2 : 1;
    if (layer % every === 0 || layer >= nLayers) out += `<text x="${left - 6}" y="${yy + cellH - 4}" font-size="10" fill="#333" text-anchor="end">${sweepRowLabel(layer, nLayers)}</text>`;
    s.patched[li]!.forEach((v, c) => {
      const f = frac(v);
      const rgb = divergingRgb(f, 1);
      const x = left + c * cellW;
      out += `<rect class="cell" data-layer="${layer}" data-position="${s.positions[c]}" data-value="${v}" data-fraction="${f}" x="${x}" y="${yy}" width="${cellW - 1}" height="${cellH - 1}" fill="${rgbHex(rgb)}"><title>${escapeXml(`${sweepRowLabel(layer, nLayers)}, position ${s.positions[c]} (${map(s.position_tokens[c]!)}): ${v.toFixed(4)}, recovered ${f.toFixed(3)}`)}</title></rect>`;
      if (showNumbers) out += `<text x="${x + (cellW - 1) / 2}" y="${yy + cellH - 4}" font-size="9" fill="${textColorOn(rgb)}" text-anchor="middle" pointer-events="none">${escapeXml(f.toFixed(2).replace(/^-(0\.0+)$/, "$1"))}</text>`;
    });
  });
  labels.forEach((t, c) => {
    out += `<text x="${left + c * cellW + cellW / 2}" y="${top + plotH + 14}" font-size="10" fill="#333" text-anchor="middle">${escapeXml(truncate(t, cellW - 2, 10))}</text>`;
  });
  out += `<text x="${left + plotW / 2}" y="${top + plotH + 28}" font-size="10" fill="#555" text-anchor="middle">position in prompt B (token)</text>`;
  out += legend(left, top + plotH + 40, 180, 1, "recovered fraction", font);
  return out + `</svg>\n`;
}
