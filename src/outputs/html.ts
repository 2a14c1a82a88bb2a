/**
 * `--format html`: one self-contained HTML file (inline CSS and JS, the report embedded as JSON, no
 * network, opens from disk) with the heatmap, the details panel and the chart.
 *
 * The page's code is the viewer in src/web/ (typed modules, bundled by esbuild into dist/web/
 * lens-view.js and lens-view.css), the same code the `serve` app runs; this module reads the
 * bundle at run time and inlines it.
 */
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import type { LensReport } from "./report.js";

/** Where the bundled viewer lies (dist/web/, built by `npm run build` with esbuild): from dist/src/outputs/ or src/outputs/. */
const WEB_DIRS = [new URL("../../web/", import.meta.url), new URL("../../dist/web/", import.meta.url)];

export interface LensViewAssets {
  /** lens-view.js: defines globalThis.LensView.renderLensReport(root, report). */
  script: string;
  /** lens-view.css. */
  style: string;
}

let assets: LensViewAssets | undefined;

/** The viewer's files, read once: the same viewer code as the `serve` app (src/web/view.ts). */
export function lensViewAssets(): LensViewAssets {
  if (assets) return assets;
  for (const dir of WEB_DIRS) {
    const js = new URL("lens-view.js", dir);
    const css = new URL("lens-view.css", dir);
    if (fs.existsSync(js) && fs.existsSync(css)) {
      assets = { script: fs.readFileSync(js, "utf8"), style: fs.readFileSync(css, "utf8") };
      return assets;
    }
  }
  throw new Error(`the HTML viewer is not built (lens-view.js, lens-view.css): looked in ${WEB_DIRS.map((d) => fileURLToPath(d)).join(", ")}; run npm run build`);
}

/**
 * JSON that is safe inside `<script type="application/json">`: `<` written as `\u003c` (so neither
 * `</script` nor `<!--` can end or confuse the element), and U+2028/U+2029 escaped. JSON.parse of
 * the element's text gives the value back unchanged.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

/** Text safe inside an HTML element or a double-quoted attribute. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Inline script or style text: a literal `</script` or `</style` inside would close the element. */
function inlineSafe(code: string, tag: "script" | "style"): string {
  return code.replace(new RegExp(`</(${tag})`, "gi"), "<\\/$1");
}

function oneLine(text: string, max: number): string {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

export function toHtml(report: LensReport): string {
  const { script, style } = lensViewAssets();
  const title = `logit lens · ${report.model.name} · ${oneLine(report.prompt, 60)}`;
  return htmlPage({
    title,
    generator: `logit-lens (${report.schema})`,
    csp: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:",
    style: `html, body { margin: 0; padding: 0; }
${inlineSafe(style, "style")}`,
    body: `<div id="lens-app"><noscript>This report needs JavaScript to draw its heatmap; the data is in the script element with id "lens-report".</noscript></div>
<script type="application/json" id="lens-report">${jsonForScript(report)}</script>
<script>
${inlineSafe(script, "script")}
</script>
<script>
LensView.renderLensReport(document.getElementById("lens-app"), JSON.parse(document.getElementById("lens-report").textContent));
</script>`,
  });
}

/**
 * A self-contained page, the shell of every HTML report (the lens, explain's charts, the sweep's):
 * one file, styles inline, and a Content-Security-Policy that lets nothing in from outside.
 */
export function htmlPage(page: { title: string; generator: string; csp: string; style: string; body: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${page.csp}">
<meta name="generator" content="${escapeHtml(page.generator)}">
<title>${escapeHtml(page.title)}</title>
<link rel="icon" href="data:,">
<style>
${page.style}
</style>
</head>
<body>
${page.body}
</body>
</html>
`;
}
