/** The sweep summary as a plain-text table: one row per layer, one column per (metric, lens) series. */
import type { SweepSummary } from "./sweep.js";

export function seriesName(s: { lens: string; metric: string }, lenses: number): string {
  return lenses > 1 ? `${s.metric} (${s.lens})` : s.metric;
}

function num(x: number, metric: string): string {
  if (!Number.isFinite(x)) return "—";
  if (metric === "top1" || metric.startsWith("target:") || metric.startsWith("set:")) return x.toFixed(3);
  return x >= 100 ? x.toFixed(1) : x.toFixed(3);
}

export function summaryTable(summary: SweepSummary): string {
  const nLenses = new Set(summary.series.map((s) => s.lens)).size;
  // Metric-major order so that the lenses of one metric sit side by side.
  const order = [...summary.series].sort((a, b) => {
    const ma = summary.series.findIndex((s) => s.metric === a.metric);
    const mb = summary.series.findIndex((s) => s.metric === b.metric);
    return ma - mb || (a.lens < b.lens ? -1 : a.lens > b.lens ? 1 : 0);
  });
  const header = ["layer", ...order.map((s) => seriesName(s, nLenses))];
  const rows: string[][] = [];
  for (let l = 0; l < summary.model.n_layers; l++) {
    rows.push([String(l), ...order.map((s) => `${num(s.mean[l]!, s.metric)} [${num(s.lo[l]!, s.metric)}, ${num(s.hi[l]!, s.metric)}]`)]);
  }
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  const out = [
    `${summary.model.name}: ${summary.data.prompts} prompts from ${summary.data.file}${summary.data.window ? ` (windows of ${summary.data.window} tokens)` : ""}; mean [95% bootstrap interval over prompts, ${summary.bootstrap.resamples} resamples, seed ${summary.bootstrap.seed}]`,
    `kl: KL(final || layer) nats · ce: cross-entropy vs the next token, nats · top1: agreement with the final top-1 · target:/set: probability mass at the last position`,
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
  ];
  return out.join("\n");
}
