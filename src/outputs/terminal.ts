/**
 * The terminal view: a readouts x positions heatmap, each cell the top-1 token with its
 * probability, the background coloured by that probability (blue = unsure, red = sure). The last
 * layer is at the bottom, so the forward pass reads top-down. Positions that do not fit the width
 * go into further blocks. Without colour (--no-color, NO_COLOR, or stdout not a TTY) the
 * probability is printed as a number, so nothing is lost.
 */
import type { LensReport, ReportCell } from "./report.js";
import { lensName, rampRgb, rowLabel, textColorOn, xterm256 } from "./presentation.js";

const CELL = 13;
const LABEL = 12;

/** Display width: wide (CJK, emoji) characters take two columns, combining marks none. */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if ((cp >= 0x300 && cp < 0x370) || cp === 0x200d || (cp >= 0xfe00 && cp <= 0xfe0f)) continue;
    const wide =
      (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) ||
      (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
      (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1faff) || (cp >= 0x20000 && cp <= 0x3fffd);
    w += wide ? 2 : 1;
  }
  return w;
}

/** Exactly `width` columns: truncated with … or padded with spaces. */
export function fit(s: string, width: number): string {
  const w = displayWidth(s);
  if (w <= width) return s + " ".repeat(width - w);
  let out = "";
  for (const ch of s) {
    if (displayWidth(out + ch) > width - 1) break;
    out += ch;
  }
  return out + "…" + " ".repeat(Math.max(0, width - 1 - displayWidth(out)));
}

/** Probability -> the shared heatmap palette (presentation.ts) in 256 colours, with readable text. */
function colour(prob: number): { bg: number; fg: number } {
  const rgb = rampRgb(prob);
  return { bg: xterm256(rgb), fg: textColorOn(rgb) === "#ffffff" ? 231 : 16 };
}

export function terminalView(report: LensReport, options: { width: number; color: boolean }): string {
  const { color } = options;
  const lines: string[] = [];
  const cellText = (c: ReportCell) => {
    const t = c.top[0]!;
    const text = t.in_context ?? t.text; // a byte that finishes the context's pending character reads as that character
    return color ? text : `${text} ${Math.round(t.prob * 100)}%`;
  };
  const paint = (s: string, prob: number) => {
    if (!color) return s;
    const { bg, fg } = colour(prob);
    return `\x1b[48;5;${bg}m\x1b[38;5;${fg}m${s}\x1b[0m`;
  };
  lines.push(`${report.model.name} (${report.model.architecture}, ${report.model.n_layers} layers) · ${lensName(report.lens)} · top-1 per cell${color ? ", colour = probability" : " with probability"}`);
  const perBlock = Math.max(1, Math.floor((options.width - LABEL) / (CELL + 1)));
  const positions = report.positions;
  for (let start = 0; start < positions.length; start += perBlock) {
    const cols = positions.slice(start, start + perBlock).map((p, j) => ({ p, i: start + j }));
    lines.push("");
    lines.push(fit("", LABEL) + cols.map(({ p }) => " " + fit(`${p}${report.tokens[p]!.generated ? "*" : ""}`, CELL)).join(""));
    lines.push(fit("input", LABEL) + cols.map(({ p }) => " " + fit(report.tokens[p]!.text, CELL)).join(""));
    for (const layer of report.layers) {
      lines.push(fit(rowLabel(layer), LABEL) + cols.map(({ i }) => " " + paint(fit(cellText(layer.positions[i]!), CELL), layer.positions[i]!.top[0]!.prob)).join(""));
    }
    lines.push(fit("output", LABEL) + cols.map(({ i }) => " " + paint(fit(cellText(report.final.positions[i]!), CELL), report.final.positions[i]!.top[0]!.prob)).join(""));
  }
  lines.push("");
  if (color) {
    const legend = [0.05, 0.2, 0.4, 0.6, 0.8, 0.97].map((p) => paint(` ${Math.round(p * 100)}% `, p)).join("");
    lines.push(`probability: ${legend}`);
  }
  if (report.targets.length || report.families.length) {
    const lastIdx = report.positions.length - 1;
    lines.push(`tracked at position ${report.positions[lastIdx]} (layer by layer, then the model's output):`);
    report.targets.forEach((t, k) => {
      const series = report.layers.map((l) => l.positions[lastIdx]!.targets![k]!);
      const out = report.final.positions[lastIdx]!.targets![k]!;
      lines.push(`  ${JSON.stringify(t.label)} = ${t.tokens.map((x) => x.text).join(" ")}: first-token prob ${series.map((v) => v.prob.toPrecision(2)).join(" ")} → ${out.prob.toPrecision(3)} (rank ${out.rank})` +
        (t.ids.length > 1 ? `; whole sequence ${t.sequence_probs[lastIdx]!.toPrecision(3)}` : ""));
      // The whole multi-token string, layer by layer (chain product, teacher-forced).
      if (t.ids.length > 1) lines.push(`  ${" ".repeat(JSON.stringify(t.label).length)}   whole-string prob ${series.map((v) => (v.sequence_prob ?? 0).toPrecision(2)).join(" ")} → ${(out.sequence_prob ?? 0).toPrecision(3)}`);
    });
    report.families.forEach((f, k) => {
      const series = report.layers.map((l) => l.positions[lastIdx]!.families![k]!);
      lines.push(`  family ${f.label} (${f.size} tokens): ${series.map((v) => v.toPrecision(2)).join(" ")} → ${report.final.positions[lastIdx]!.families![k]!.toPrecision(3)}`);
    });
  }
  lines.push(`text: ${JSON.stringify(report.text)}`);
  if (report.generated_text !== undefined) {
    const reason = report.generation?.stop_reason;
    const why = reason === "context-limit" ? `stopped at the model's context limit of ${report.tokens.length} tokens` : reason;
    lines.push(`generated (${report.tokens.length - report.prompt_length} tokens, ${why}): ${JSON.stringify(report.generated_text)}`);
  } else {
    const last = report.final.positions[report.final.positions.length - 1]!;
    lines.push(`next token: ${last.top.slice(0, 5).map((t) => `${JSON.stringify(t.in_context ?? t.text)} ${(t.prob * 100).toFixed(1)}%`).join(", ")}`);
  }
  return lines.join("\n");
}
