/**
 * The classic logit-lens figure as a self-contained SVG: one row per readout (the last layer on
 * top, the model's own output in a separate row above it, the embedding at the bottom when read),
 * one column per position, the input token under each column and the token it should predict
 * (the next token) above it. Each cell shows the readout's top-1 token, its background coloured
 * by that token's probability on a white -> blue sequential scale (ColorBrewer "Blues"), the text
 * black or white for contrast; a cell whose top-1 token *is* the next token is set in bold.
 *
 * Everything is drawn from the `LensReport` alone: no scripts, no external fonts or images, so the
 * file drops into a paper or a post as is, and `toPng` (png.ts) rasterises the same markup.
 * Each cell is a `<g class="cell">` with `data-row` ("final" for the model's own prediction, as
 * in the JSON, or the readout's hook), `data-layer`, `data-position` and `data-prob`, and a
 * `<title>` tooltip with the full token and the top-k list, so the figure is also inspectable in
 * a browser.
 */
import type { LensReport, ReportCell } from "./report.js";
import { lensName, probColor, rowLabel, textColorFor } from "./presentation.js";

/** Options shared with the PNG renderer. */
export interface FigureOptions {
  /**
   * Applied to every piece of token or prompt text before measuring and truncating it. The PNG
   * renderer uses it to replace characters its fonts cannot draw with their UTF-8 bytes.
   */
  mapText?: (s: string) => string;
  /** CSS font-family list for all text. */
  fontFamily?: string;
}

/** DejaVu Sans first (matplotlib's default, and the font the PNG is rendered with). */
export const FIGURE_FONT_FAMILY = "'DejaVu Sans', Verdana, 'Bitstream Vera Sans', Arial, sans-serif";

// ---------------------------------------------------------------------------------------------
// Colour

// One palette for every view: src/outputs/presentation.ts (ColorBrewer "Blues", white -> deep blue).
export { probColor, textColorFor };

// ---------------------------------------------------------------------------------------------
// Text

/** Characters that XML 1.0 forbids (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/FFFF). */
function xmlSafe(s: string): string {
  let out = "";
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const bad = (cp < 0x20 && cp !== 0x9 && cp !== 0xa && cp !== 0xd) || (cp >= 0xd800 && cp <= 0xdfff) || cp === 0xfffe || cp === 0xffff;
    out += bad ? `⟨U+${cp.toString(16).toUpperCase().padStart(4, "0")}⟩` : ch;
  }
  return out;
}

/** Escapes text for XML element content and attribute values. */
export function escapeXml(s: string): string {
  return xmlSafe(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/**
 * Approximate advance width of one character in DejaVu Sans, in em. Only used to size columns and
 * decide where to truncate, so it errs on the wide side.
 */
function charEm(cp: number): number {
  if ((cp >= 0x300 && cp < 0x370) || cp === 0x200d || (cp >= 0xfe00 && cp <= 0xfe0f)) return 0;
  if (cp >= 0x1f000 || (cp >= 0x2600 && cp <= 0x27bf && cp !== 0x27e8 && cp !== 0x27e9)) return 1.2; // emoji, dingbats
  if (
    (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0x20000 && cp <= 0x3fffd)
  )
    return 1.0;
  const ch = String.fromCodePoint(cp);
  if ("iljt.,:;'|!`()[]{}⟨⟩ ".includes(ch)) return 0.36;
  if ("frI1".includes(ch)) return 0.45;
  if ("mwMW%…@".includes(ch)) return 1.0;
  if (cp >= 0x41 && cp <= 0x5a) return 0.74;
  if (cp === 0x21b5 || cp === 0x2192) return 0.84; // ↵ →
  return 0.64;
}

export function textWidth(s: string, fontSize: number, bold = false): number {
  let w = 0;
  for (const ch of s) w += charEm(ch.codePointAt(0)!);
  return w * fontSize * (bold ? 1.1 : 1);
}

/** `s` cut to fit `maxWidth` px, with … at the end when cut. */
export function truncate(s: string, maxWidth: number, fontSize: number, bold = false): string {
  if (textWidth(s, fontSize, bold) <= maxWidth) return s;
  const room = maxWidth - textWidth("…", fontSize, bold);
  let out = "";
  let w = 0;
  for (const ch of s) {
    const cw = textWidth(ch, fontSize, bold);
    if (w + cw > room) break;
    out += ch;
    w += cw;
  }
  return out + "…";
}

const fmt = (x: number) => (Math.round(x * 100) / 100).toString();

function probText(p: number): string {
  if (p >= 0.01) return p.toFixed(3);
  return p.toExponential(1);
}

// ---------------------------------------------------------------------------------------------
// Figure

interface Row {
  key: string;
  label: string;
  layer: number | "final";
  cells: ReportCell[];
}

const CELL_FONT = 11;
const LABEL_FONT = 11;
const CELL_H = 18;
const CELL_TEXT_MAX = 70; // px of cell text before truncation (about 10 characters, or ⟨E4 B8 AD⟩)
const TICK_LABEL_MAX = 96; // px of an axis token label before truncation
const GAP_OUTPUT = 6; // space between the output row and the top layer

export function toSvg(report: LensReport, options: FigureOptions = {}): string {
  const map = options.mapText ?? ((s: string) => s);
  const family = options.fontFamily ?? FIGURE_FONT_FAMILY;
  const positions = report.positions;
  const nCols = positions.length;
  const tokens = report.tokens;

  // Rows, top to bottom: output, then the readouts from the last to the first.
  const multiPoint = new Set(report.layers.map((l) => l.point)).size > 1;
  const rows: Row[] = [{ key: "final", label: "output", layer: "final", cells: report.final.positions }];
  for (let i = report.layers.length - 1; i >= 0; i--) {
    const l = report.layers[i]!;
    const label = rowLabel(l);
    rows.push({ key: l.hook, label, layer: l.layer, cells: l.positions });
  }

  // Cell text, truncated; column width from the widest.
  const nextId = (pos: number) => (pos + 1 < tokens.length ? tokens[pos + 1]!.id : undefined);
  const cellText = rows.map((r) =>
    r.cells.map((c) => {
      const top = c.top[0];
      const bold = top !== undefined && top.id === nextId(c.position);
      return { text: top ? truncate(map(top.in_context ?? top.text), CELL_TEXT_MAX, CELL_FONT, bold) : "", bold, prob: top?.prob ?? 0 };
    }),
  );
  let widest = 0;
  for (const r of cellText) for (const c of r) widest = Math.max(widest, textWidth(c.text, CELL_FONT, c.bold));
  const cellW = Math.ceil(Math.max(30, widest + 8));

  // Axis labels: input token under each column, next token above it.
  const inputLabels = positions.map((p) => truncate(map(tokens[p]?.text ?? ""), TICK_LABEL_MAX, LABEL_FONT));
  const nextLabels = positions.map((p) => (p + 1 < tokens.length ? truncate(map(tokens[p + 1]!.text), TICK_LABEL_MAX, LABEL_FONT) : ""));
  const labelsFlat = (labels: string[]) => labels.every((s) => textWidth(s, LABEL_FONT) <= cellW - 4);
  const flatInput = labelsFlat(inputLabels);
  const flatNext = labelsFlat(nextLabels);
  const labelBand = (labels: string[], flat: boolean) => (flat ? LABEL_FONT + 6 : Math.ceil(Math.max(LABEL_FONT, ...labels.map((s) => textWidth(s, LABEL_FONT)))) + 8);
  const inputBand = labelBand(inputLabels, flatInput);
  const nextBand = labelBand(nextLabels, flatNext);

  const rowLabelW = Math.ceil(Math.max(...rows.map((r) => textWidth(r.label, LABEL_FONT)))) + 8;

  // Title and subtitle.
  const name = lensName(report.lens);
  const variant = report.lens.translator || report.lens.variant === "logit" ? name[0]!.toUpperCase() + name.slice(1) : "Raw-unembedding lens";
  const points = report.lens.points.join(", ");
  const title = `${variant}: ${report.model.name}`;
  const subtitle = `${report.model.architecture}, ${report.model.n_layers} layers, ${report.model.hidden_size} wide; readout: ${points}`;
  const promptLine = `${report.chat ? "chat prompt" : "prompt"}: ${JSON.stringify(report.prompt).slice(1, -1)}`;
  const genLine = report.generated_text !== undefined ? `generated: ${JSON.stringify(report.generated_text).slice(1, -1)}` : undefined;

  // Horizontal layout.
  const marginL = 12;
  const yTitleW = 18; // the rotated "layer" axis title
  const gridX = marginL + yTitleW + rowLabelW;
  const gridW = nCols * cellW;
  const barGap = 22;
  const barW = 14;
  const barLabelsW = 40;
  const barTitleW = 18;
  const rightBlock = barGap + barW + barLabelsW + barTitleW;
  const textLineMax = Math.max(gridX + gridW + rightBlock - marginL * 2, 560);
  const titleText = truncate(map(title), textLineMax, 16, true);
  const subText = truncate(subtitle, textLineMax, 11.5);
  const promptText = truncate(map(promptLine), textLineMax, 11.5);
  const genText = genLine !== undefined ? truncate(map(genLine), textLineMax, 11.5) : undefined;
  const headerW = Math.max(textWidth(titleText, 16, true), textWidth(subText, 11.5), textWidth(promptText, 11.5), genText ? textWidth(genText, 11.5) : 0);
  const width = Math.ceil(Math.max(gridX + gridW + rightBlock + marginL, headerW + marginL * 2));

  // Vertical layout.
  const marginT = 12;
  let y = marginT;
  const titleY = y + 15;
  y += 22;
  const subY = y + 11;
  y += 16;
  const promptY = y + 11;
  y += 16;
  const genY = genText !== undefined ? y + 11 : 0;
  if (genText !== undefined) y += 16;
  y += 8;
  const nextTitleY = y + 11;
  y += 18;
  const nextBandTop = y;
  y += nextBand;
  const outputTop = y;
  const layersTop = outputTop + CELL_H + GAP_OUTPUT;
  const nLayerRows = rows.length - 1;
  const gridBottom = layersTop + nLayerRows * CELL_H;
  const inputBandTop = gridBottom + 4;
  const inputTitleY = inputBandTop + inputBand + 14;
  const legendY = inputTitleY + 20;
  const barTop = outputTop;
  const barH = Math.max(gridBottom - outputTop, 110);

  // Legend lines under the figure, wrapped to its width.
  const firstGen = positions.findIndex((p) => tokens[p]?.generated ?? false);
  const legendItems = [
    "cell: top-1 token of the readout, background: its probability",
    "bold: the top-1 token is the next token",
    ...(firstGen >= 0 ? ["orange labels, right of the dashed line: generated tokens"] : []),
    ...(positions.some((p) => tokens[p]?.special) ? ["grey labels: special tokens"] : []),
    "␣ space, ↵ newline, ⟨F0 9F⟩ bytes of a partial character",
  ];
  const legendMax = Math.max(gridX + gridW + rightBlock - marginL * 2, 560);
  const legendLines: string[] = [];
  for (const item of legendItems) {
    const last = legendLines[legendLines.length - 1];
    if (last !== undefined && textWidth(`${last}  ·  ${item}`, 10) <= legendMax) legendLines[legendLines.length - 1] = `${last}  ·  ${item}`;
    else legendLines.push(truncate(item, legendMax, 10));
  }
  const height = Math.ceil(Math.max(legendY + 14 * (legendLines.length - 1) + 10, barTop + barH + 12));

  const rowTop = (i: number) => (i === 0 ? outputTop : layersTop + (i - 1) * CELL_H);
  const colX = (j: number) => gridX + j * cellW;

  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${escapeXml(family)}" font-size="${LABEL_FONT}">`,
  );
  out.push(`<title>${escapeXml(`${title}: ${report.prompt}`)}</title>`);
  out.push(`<desc>${escapeXml(`${report.lens.description}. Rows: readouts (${points}), last layer on top, the model's output above. Columns: positions; input token below, next token above. Cell: top-1 token; colour: its probability. Bold: the top-1 token is the next token.`)}</desc>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);

  // Header.
  out.push(`<text x="${marginL}" y="${titleY}" font-size="16" font-weight="bold" fill="#111111">${escapeXml(titleText)}</text>`);
  out.push(`<text x="${marginL}" y="${subY}" font-size="11.5" fill="#444444">${escapeXml(subText)}</text>`);
  out.push(`<text x="${marginL}" y="${promptY}" font-size="11.5" fill="#444444">${escapeXml(promptText)}</text>`);
  if (genText !== undefined) out.push(`<text x="${marginL}" y="${genY}" font-size="11.5" fill="#a04000">${escapeXml(genText)}</text>`);

  // Axis titles.
  const gridMidX = fmt(gridX + gridW / 2);
  out.push(`<text x="${gridMidX}" y="${nextTitleY}" text-anchor="middle" font-size="12" font-weight="bold" fill="#222222">next token</text>`);
  out.push(`<text x="${gridMidX}" y="${fmt(inputTitleY)}" text-anchor="middle" font-size="12" font-weight="bold" fill="#222222">input token</text>`);
  const layerMidY = fmt(layersTop + (nLayerRows * CELL_H) / 2);
  out.push(`<text x="${marginL + 12}" y="${layerMidY}" text-anchor="middle" font-size="12" font-weight="bold" fill="#222222" transform="rotate(-90 ${marginL + 12} ${layerMidY})">layer</text>`);

  // Row labels.
  out.push(`<g class="row-labels" text-anchor="end" fill="#222222">`);
  rows.forEach((r, i) => {
    const ty = fmt(rowTop(i) + CELL_H / 2 + LABEL_FONT * 0.35);
    out.push(`<text x="${gridX - 5}" y="${ty}"${i === 0 ? ' font-weight="bold"' : ""}>${escapeXml(r.label)}</text>`);
  });
  out.push(`</g>`);

  // Column labels.
  const special = (p: number) => tokens[p]?.special ?? false;
  const generated = (p: number) => tokens[p]?.generated ?? false;
  const labelFill = (p: number) => (generated(p) ? "#a04000" : special(p) ? "#777777" : "#222222");
  out.push(`<g class="input-labels">`);
  positions.forEach((p, j) => {
    const cx = colX(j) + cellW / 2;
    const text = escapeXml(inputLabels[j]!);
    if (flatInput) out.push(`<text x="${fmt(cx)}" y="${inputBandTop + LABEL_FONT + 1}" text-anchor="middle" fill="${labelFill(p)}">${text}</text>`);
    else {
      const tx = fmt(cx + LABEL_FONT * 0.35);
      const ty = inputBandTop + 2;
      out.push(`<text x="${tx}" y="${ty}" text-anchor="end" fill="${labelFill(p)}" transform="rotate(-90 ${tx} ${ty})">${text}</text>`);
    }
  });
  out.push(`</g>`);
  out.push(`<g class="next-labels">`);
  positions.forEach((p, j) => {
    if (!nextLabels[j]) return;
    const cx = colX(j) + cellW / 2;
    const text = escapeXml(nextLabels[j]!);
    if (flatNext) out.push(`<text x="${fmt(cx)}" y="${outputTop - 5}" text-anchor="middle" fill="${labelFill(p + 1)}">${text}</text>`);
    else {
      const tx = fmt(cx + LABEL_FONT * 0.35);
      const ty = outputTop - 3;
      out.push(`<text x="${tx}" y="${ty}" text-anchor="start" fill="${labelFill(p + 1)}" transform="rotate(-90 ${tx} ${ty})">${text}</text>`);
    }
  });
  out.push(`</g>`);
  void nextBandTop;

  // Cells.
  out.push(`<g class="cells" text-anchor="middle" font-size="${CELL_FONT}">`);
  rows.forEach((r, i) => {
    const top = rowTop(i);
    r.cells.forEach((c, j) => {
      const t = cellText[i]![j]!;
      const x = colX(j);
      const tok = c.top[0];
      const tip = [
        `${r.layer === "final" ? "output" : r.label}, position ${c.position} (input ${tokens[c.position]?.text ?? "?"})`,
        ...c.top.map((e, k) => `${k + 1}. ${e.in_context !== undefined ? `${e.text} → ${e.in_context}` : e.text}  ${probText(e.prob)}`),
        `entropy ${c.entropy.toFixed(2)} nats${r.layer === "final" ? "" : `, KL to output ${c.kl_to_final.toFixed(2)}`}`,
      ].join("\n");
      out.push(
        `<g class="cell" data-row="${escapeXml(r.key)}" data-layer="${r.layer}" data-position="${c.position}" data-prob="${tok?.prob ?? 0}">` +
          `<title>${escapeXml(tip)}</title>` +
          `<rect x="${x}" y="${top}" width="${cellW}" height="${CELL_H}" fill="${probColor(t.prob)}"/>` +
          `<text x="${fmt(x + cellW / 2)}" y="${fmt(top + CELL_H / 2 + CELL_FONT * 0.36)}" fill="${textColorFor(t.prob)}"${t.bold ? ' font-weight="bold"' : ""}>${escapeXml(t.text)}</text>` +
          `</g>`,
      );
    });
  });
  out.push(`</g>`);

  // With several readouts per block, a white rule between blocks.
  if (multiPoint) {
    for (let i = 2; i < rows.length; i++) {
      if (rows[i]!.layer !== rows[i - 1]!.layer) {
        const ry = rowTop(i);
        out.push(`<line x1="${gridX}" y1="${ry}" x2="${gridX + gridW}" y2="${ry}" stroke="#ffffff" stroke-width="2"/>`);
      }
    }
  }

  // Thin frames around the output row and the layer grid; a dashed line where generation starts.
  out.push(`<rect x="${gridX}" y="${outputTop}" width="${gridW}" height="${CELL_H}" fill="none" stroke="#555555" stroke-width="0.8"/>`);
  if (nLayerRows > 0) out.push(`<rect x="${gridX}" y="${layersTop}" width="${gridW}" height="${nLayerRows * CELL_H}" fill="none" stroke="#555555" stroke-width="0.8"/>`);
  if (firstGen > 0) {
    const gx = colX(firstGen);
    out.push(`<line x1="${gx}" y1="${outputTop - 2}" x2="${gx}" y2="${gridBottom + 2}" stroke="#a04000" stroke-width="1.5" stroke-dasharray="4 3"/>`);
  }

  // Colour bar.
  const barX = gridX + gridW + barGap;
  const stops = Array.from({ length: 11 }, (_, k) => k / 10);
  out.push(`<defs><linearGradient id="ll-prob" x1="0" y1="1" x2="0" y2="0">`);
  for (const s of stops) out.push(`<stop offset="${s}" stop-color="${probColor(s)}"/>`);
  out.push(`</linearGradient></defs>`);
  out.push(`<g class="colorbar">`);
  out.push(`<rect x="${barX}" y="${barTop}" width="${barW}" height="${barH}" fill="url(#ll-prob)" stroke="#555555" stroke-width="0.8"/>`);
  const ticks = barH >= 160 ? [0, 0.2, 0.4, 0.6, 0.8, 1] : [0, 0.25, 0.5, 0.75, 1];
  for (const t of ticks) {
    const ty = barTop + barH * (1 - t);
    out.push(`<line x1="${barX + barW}" y1="${fmt(ty)}" x2="${barX + barW + 4}" y2="${fmt(ty)}" stroke="#555555" stroke-width="0.8"/>`);
    out.push(`<text x="${barX + barW + 6}" y="${fmt(ty + LABEL_FONT * 0.35)}" fill="#222222">${t === 0 ? "0" : t === 1 ? "1" : String(t)}</text>`);
  }
  const btx = barX + barW + barLabelsW + 4;
  const bty = fmt(barTop + barH / 2);
  out.push(`<text x="${btx}" y="${bty}" text-anchor="middle" font-size="12" font-weight="bold" fill="#222222" transform="rotate(-90 ${btx} ${bty})">top-1 probability</text>`);
  out.push(`</g>`);

  // Legend.
  legendLines.forEach((line, k) => out.push(`<text x="${marginL}" y="${fmt(legendY + 14 * k)}" font-size="10" fill="#555555">${escapeXml(line)}</text>`));

  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
