/**
 * The sweep's HTML report: one self-contained page (no script, no network, opens from disk) with
 * the classic figure (the same SVG as figure.svg, inline, so a browser finds fonts for any
 * script) and the summary table (mean and bootstrap 95 % interval per layer and series). The
 * summary JSON is embedded too, for tools that read the page.
 */
import { escapeHtml, htmlPage, jsonForScript } from "../outputs/html.js";
import type { SweepSummary } from "./sweep.js";
import { seriesName } from "./table.js";

function num(x: number): string {
  if (!Number.isFinite(x)) return "—";
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toFixed(3);
}

export function sweepHtml(summary: SweepSummary, svg: string): string {
  const nLenses = new Set(summary.series.map((s) => s.lens)).size;
  const title = `logit-lens sweep · ${summary.model.name} · ${summary.data.file}`;
  const head = summary.series.map((s) => `<th scope="col">${escapeHtml(seriesName(s, nLenses))}</th>`).join("");
  const rows: string[] = [];
  for (let l = 0; l < summary.model.n_layers; l++) {
    const cells = summary.series.map((s) => `<td><span class="mean">${num(s.mean[l]!)}</span> <span class="ci">[${num(s.lo[l]!)}, ${num(s.hi[l]!)}]</span></td>`).join("");
    rows.push(`<tr><th scope="row">${l}</th>${cells}</tr>`);
  }
  const inlineSvg = svg.replace(/^<\?xml[^>]*>\s*/, "");
  return htmlPage({
    title,
    generator: `logit-lens (${summary.schema})`,
    csp: "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    style: `body { font-family: "DejaVu Sans", system-ui, sans-serif; margin: 1.5rem; color: #111; }
.figure svg { width: 100%; max-width: 1100px; height: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin-top: 1rem; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #e5e5e5; text-align: right; white-space: nowrap; }
thead th { position: sticky; top: 0; background: #fff; }
.ci { color: #666; }
p.meta { color: #444; max-width: 60rem; }`,
    body: `<h1>${escapeHtml(`Lens statistics by layer: ${summary.model.name}`)}</h1>
<p class="meta">${escapeHtml(`${summary.model.architecture}, ${summary.model.n_layers} layers · ${summary.data.prompts} prompts from ${summary.data.file}${summary.data.window ? `, windows of ${summary.data.window} tokens` : ""} · lenses: ${summary.lenses.map((l) => l.name + (l.file ? ` (${l.file})` : "")).join(", ")} · mean with a percentile bootstrap 95 % interval over prompts (${summary.bootstrap.resamples} resamples, seed ${summary.bootstrap.seed}). kl: KL(final ‖ layer) in nats; ce: cross-entropy against the next token in nats; top1: agreement with the output's top-1; target:/set: probability mass at the last position.`)}</p>
<div class="figure">${inlineSvg}</div>
<table>
<thead><tr><th scope="col">layer</th>${head}</tr></thead>
<tbody>
${rows.join("\n")}
</tbody>
</table>
<script type="application/json" id="sweep-summary">${jsonForScript(summary)}</script>`,
  });
}
