/**
 * `attribute` and `patch` with `--format html` (or `--out x.html`): one self-contained page, no
 * script and no network, with the figure (explain-charts.ts, its bars and cells carry tooltips),
 * the terminal summary as text, and the result as JSON in a script element for whoever wants the
 * numbers (the same object `--json` prints).
 */
import { escapeHtml, htmlPage, jsonForScript } from "./html.js";

export function explainChartsHtml(title: string, svg: string, summary: string, data: unknown): string {
  return htmlPage({
    title,
    generator: "logit-lens",
    csp: "default-src 'none'; style-src 'unsafe-inline'",
    style: `body { font-family: 'DejaVu Sans', Verdana, Arial, sans-serif; margin: 16px; color: #111; }
figure { margin: 0 0 12px 0; overflow-x: auto; }
svg rect.bar:hover, svg rect.head:hover, svg rect.cell:hover { stroke: #111; stroke-width: 1; }
pre { font-size: 12px; background: #f6f6f6; padding: 8px; overflow-x: auto; }`,
    body: `<h1 style="font-size:16px">${escapeHtml(title)}</h1>
<figure>
${svg}
</figure>
<pre>${escapeHtml(summary)}</pre>
<script type="application/json" id="explain-data">${jsonForScript(data)}</script>`,
  });
}
