/**
 * The explorer's benchmark (issue 8): time to the first streamed rows for a 20-token prompt on the
 * default model, warm, through the real server on 127.0.0.1; and the viewer's hover frame times at
 * 80 layers x 512 positions in Chromium (a report tiled from a real one). Prints a Markdown section
 * for BENCHMARKS.md.
 *
 *   npm run build && node dist/bench/serve-bench.js
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { loadModel } from "../src/index.js";
import { toHtml } from "../src/outputs/html.js";
import type { LensReport, ReportCell } from "../src/outputs/report.js";
import { createServer } from "../src/server/server.js";
import { ndjsonEvents } from "../src/web/ndjson.js";

const CHROMIUM = process.env["LOGIT_LENS_CHROMIUM"] || "/usr/bin/chromium";
const PROMPT = "The quick brown fox jumps over the lazy dog, and then the dog chased the fox back into"; // 20 tokens on SmolLM2
const RUNS = 7;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

async function firstRows(base: string, body: Record<string, unknown> = { prompt: PROMPT }): Promise<{ tokens: number; first: number[]; report: number[]; last?: LensReport }> {
  const first: number[] = [];
  const total: number[] = [];
  let tokens = 0;
  let last: LensReport | undefined;
  for (let i = 0; i < RUNS + 1; i++) {
    const t0 = performance.now();
    const res = await fetch(`${base}/api/lens`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    let tFirst = 0;
    for await (const e of ndjsonEvents<{ type: string; report?: LensReport }>(res.body!)) {
      if (e.type === "start") tokens = e.report!.tokens.length;
      if (e.type === "rows" && !tFirst) tFirst = performance.now() - t0;
      if (e.type === "report") last = e.report;
    }
    // The first run loads the model and builds its sessions: not counted (warm figures).
    if (i > 0) {
      first.push(tFirst);
      total.push(performance.now() - t0);
    }
  }
  return { tokens, first, report: total, last };
}

/** The exact-KL job (POST /api/kl) of two prompts on the loaded model: request sent -> `kl` event. */
async function exactKl(base: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    const res = await fetch(`${base}/api/kl`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ a: { prompt: PROMPT }, b: { prompt: PROMPT.replace("fox", "cat") } }) });
    const last = JSON.parse((await res.text()).trim().split("\n").at(-1)!) as { type: string };
    if (last.type !== "kl") throw new Error(JSON.stringify(last));
    if (i > 0) times.push(performance.now() - t0);
  }
  return times;
}

/** A report of `layers` x `positions` tiled from a real one. */
function tile(report: LensReport, layers: number, positions: number): LensReport {
  const cells = (row: ReportCell[]) => Array.from({ length: positions }, (_, i) => ({ ...row[i % row.length]!, position: i }));
  return {
    ...report,
    model: { ...report.model, n_layers: layers },
    tokens: Array.from({ length: positions + 1 }, (_, i) => report.tokens[i % report.tokens.length]!),
    positions: Array.from({ length: positions }, (_, i) => i),
    layers: Array.from({ length: layers }, (_, l) => {
      const src = report.layers[l % report.layers.length]!;
      return { ...src, layer: l, hook: `blocks.${l}.hook_resid_post`, positions: cells(src.positions) };
    }),
    final: { ...report.final, positions: cells(report.final.positions) },
    spans: [],
  };
}

async function hoverFrames(report: LensReport): Promise<{ load: number; handler: number[]; frames: number[]; redraw: number[] }> {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-bench-")), "big.html");
  fs.writeFileSync(file, toHtml(report));
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    const t0 = Date.now();
    await page.goto(pathToFileURL(file).href);
    await page.waitForSelector("#cell-details .top-entry");
    const load = Date.now() - t0;
    const out = await page.evaluate(async () => {
      const sc = document.getElementById("lens-heatmap-scroll")!;
      const box = sc.getBoundingClientRect();
      const handler: number[] = [];
      const frames: number[] = [];
      const redraw: number[] = [];
      let prev = 0;
      // 400 frames: each moves the mouse to another cell (a diagonal sweep), as a fast hover does.
      for (let i = 0; i < 400; i++) {
        const ts = await new Promise<number>((r) => requestAnimationFrame(r));
        if (prev) frames.push(ts - prev);
        prev = ts;
        const x = box.left + 90 + ((i * 37) % Math.max(1, sc.clientWidth - 100));
        const y = box.top + 55 + ((i * 23) % Math.max(1, sc.clientHeight - 70));
        const t = performance.now();
        sc.dispatchEvent(new MouseEvent("mousemove", { clientX: x, clientY: y, bubbles: true }));
        handler.push(performance.now() - t);
      }
      // Scrolling redraws the visible cells: time one full redraw per scroll step.
      const view = (window as unknown as { lensView: { heatmap: { draw(): void } } }).lensView;
      for (let i = 0; i < 60; i++) {
        sc.scrollLeft = (i * 997) % sc.scrollWidth;
        sc.scrollTop = (i * 331) % sc.scrollHeight;
        const t = performance.now();
        view.heatmap.draw();
        redraw.push(performance.now() - t);
        await new Promise((r) => requestAnimationFrame(r));
      }
      return { handler, frames, redraw };
    });
    return { load, ...out };
  } finally {
    await browser.close();
  }
}

async function main(): Promise<void> {
  const created = await createServer({ port: 0, load: (spec) => loadModel(spec) });
  await created.app.listen({ host: "127.0.0.1", port: 0 });
  const port = (created.app.server.address() as { port: number }).port;
  created.setPort(port);
  const ttfr = await firstRows(`http://127.0.0.1:${port}`);
  // A multi-token target: its whole-string probabilities stream with the rows (the continuation
  // runs after every position happen before the first group).
  const TARGET = " the lazy dog";
  const withTarget = await firstRows(`http://127.0.0.1:${port}`, { prompt: PROMPT, track: [TARGET] });
  const kl = await exactKl(`http://127.0.0.1:${port}`);
  await created.app.close();
  const big = tile(ttfr.last!, 80, 512);
  const hover = await hoverFrames(big);
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const f = (x: number) => x.toFixed(1);
  const lines = [
    `## The explorer (\`logit-lens serve\`)`,
    ``,
    `Measured by \`node dist/bench/serve-bench.js\` on ${cpu}, ${os.cpus().length} cores, Chromium ${fs.existsSync(CHROMIUM) ? "(Debian)" : ""}; one run, other work on the machine possible.`,
    ``,
    `| what | median | p95 / max |`,
    `|---|---|---|`,
    `| time to first streamed rows, ${ttfr.tokens}-token prompt, SmolLM2-135M, warm (request sent -> first \`rows\` event), ${RUNS} runs | ${f(median(ttfr.first))} ms | ${f(pct(ttfr.first, 0.95))} / ${f(Math.max(...ttfr.first))} ms |`,
    `| whole report, same runs (all 30 readouts + output, top-10) | ${f(median(ttfr.report))} ms | ${f(pct(ttfr.report, 0.95))} / ${f(Math.max(...ttfr.report))} ms |`,
    `| time to first streamed rows with a ${withTarget.last!.targets[0]!.ids.length}-token target ("${TARGET}", sequence_prob streamed), ${RUNS} runs | ${f(median(withTarget.first))} ms | ${f(pct(withTarget.first, 0.95))} / ${f(Math.max(...withTarget.first))} ms |`,
    `| whole report with that target | ${f(median(withTarget.report))} ms | ${f(pct(withTarget.report, 0.95))} / ${f(Math.max(...withTarget.report))} ms |`,
    `| exact KL of two ${ttfr.tokens}-token prompts (POST /api/kl: 31 rows x ${ttfr.tokens} positions x 49,152 tokens), ${kl.length} runs | ${f(median(kl))} ms | ${f(Math.max(...kl))} ms (max) |`,
    `| hover handler at 80 x 512 (mousemove -> overlay redrawn, details panel rebuilt), 400 moves | ${f(median(hover.handler))} ms | ${f(pct(hover.handler, 0.95))} / ${f(Math.max(...hover.handler))} ms |`,
    `| frame interval while hovering (one move per frame) | ${f(median(hover.frames))} ms | ${f(pct(hover.frames, 0.95))} / ${f(Math.max(...hover.frames))} ms |`,
    `| full heatmap redraw (scrolling), visible cells only | ${f(median(hover.redraw))} ms | ${f(pct(hover.redraw, 0.95))} / ${f(Math.max(...hover.redraw))} ms |`,
    `| open the 80 x 512 HTML report (${(toHtml(big).length / 2 ** 20).toFixed(1)} MiB) until the panel shows | ${hover.load} ms | |`,
    ``,
    `Frames over 20 ms while hovering: ${hover.frames.filter((x) => x > 20).length} of ${hover.frames.length}.`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

await main();
