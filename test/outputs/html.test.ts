/**
 * The self-contained HTML report (src/outputs/html.ts + the front-end in src/web/), checked in a real
 * browser: Debian's chromium driven by playwright-core, on a report made by the real engine
 * (SmolLM2-135M-Instruct) from the seahorse-style prompt. The page is opened from disk with every
 * non-file request blocked and recorded; the test hovers and clicks cells and compares what the
 * details panel shows with the report's JSON, counts the chart's lines, reads the reassembled text,
 * checks a 30 x 200 report for scrolling and sticky labels, and saves a screenshot to
 * <tmp>/html-report.png for a person to look at.
 *
 * Needs Chromium at $LOGIT_LENS_CHROMIUM or /usr/bin/chromium (`apt-get install -y chromium`); without it the browser tests are skipped
 * with that message. The string-level tests always run.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { escapeHtml, jsonForScript, lensViewAssets, toHtml } from "../../src/outputs/html.js";
import { buildReport, type LensReport, type ReportCell } from "../../src/outputs/report.js";
import { executeLensJob } from "../../src/lens/job.js";
import { parseFamily, parseTextTarget } from "../../src/lens/targets.js";
import { readoutHooks } from "../../src/cli/options.js";
import { createProgress } from "../../src/progress.js";
import { loadReal } from "../helpers/real-models.js";

const CHROMIUM = process.env["LOGIT_LENS_CHROMIUM"] || "/usr/bin/chromium";
const SKIP_BROWSER = fs.existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is absent (install it with: apt-get install -y chromium)`;
const SCREENSHOT = path.join(os.tmpdir(), "html-report.png");
const PROMPT = "Fish emoji: 🐠, horse emoji:";

/** The page's probability format, written again here on purpose (the test must not borrow it). */
function expectedProbText(p: number): string {
  if (p <= 0) return "0%";
  const pct = p * 100;
  if (pct >= 1) return `${pct.toFixed(2)}%`;
  if (pct >= 1e-3) return `${pct.toPrecision(2)}%`;
  return `${pct.toExponential(1)}%`;
}

function tmpFile(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-html-")), name);
}

// ---------------------------------------------------------------- without a browser

function tinyReport(prompt: string): LensReport {
  const cell = (position: number): ReportCell => ({
    position,
    top: [
      { id: 7, text: "␣</script>", bytes: "203c2f7363726970743e", prob: 0.5, logit: 3 },
      { id: 8, text: "\u2028", bytes: "e280a8", prob: 0.25, logit: 2 },
    ],
    entropy: 1.04,
    kl_to_final: 0.5,
  });
  return {
    schema: "logit-lens/report@1",
    token_strings: { "7": "Ġ</script>", "8": "\u2028" },
    model: { name: "tiny<model>", architecture: "llama", n_layers: 1, hidden_size: 8, vocab_size: 16, source: "/x/tiny.gguf" },
    lens: { variant: "logit", description: "logit lens", top_k: 2, points: ["resid_post"] },
    prompt,
    chat: false,
    tokens: [{ id: 1, text: "a", bytes: "61", token: "a", generated: false, special: false }],
    prompt_length: 1,
    text: "a",
    spans: [{ text: "a", tokens: [0, 0], complete: true }],
    positions: [0],
    targets: [],
    families: [],
    layers: [{ hook: "blocks.0.hook_resid_post", layer: 0, point: "resid_post", positions: [cell(0)], top1_text: " </script>" }],
    final: { positions: [cell(0)], top1_text: " </script>" },
  };
}

test("jsonForScript: no '</script', '<!--' or raw U+2028/U+2029 survive, and JSON.parse gives the value back", () => {
  const value = { a: "</script><script>alert(1)</script>", b: "<!-- x -->", c: "line\u2028para\u2029end", d: "🐠" };
  const json = jsonForScript(value);
  assert.ok(!/<\/script/i.test(json) && !json.includes("<!--"));
  assert.ok(!json.includes("\u2028") && !json.includes("\u2029"));
  assert.deepEqual(JSON.parse(json), value);
});

test("toHtml: one self-contained document, report embedded intact, nothing fetched", () => {
  const prompt = "</script><script>alert(1)</script> & \u2028 \"quotes\" 🐠";
  const report = tinyReport(prompt);
  const html = toHtml(report);
  assert.match(html, /^<!doctype html>/);
  // Exactly one JSON data block, and its text parses back to the report.
  const blocks = [...html.matchAll(/<script type="application\/json" id="lens-report">([\s\S]*?)<\/script>/g)];
  assert.equal(blocks.length, 1);
  assert.deepEqual(JSON.parse(blocks[0]![1]!), report);
  // Three script elements in all (data, viewer, start-up): the prompt's '</script>' did not add one.
  assert.equal(html.match(/<script\b/g)!.length, 3);
  assert.equal(html.match(/<\/script>/g)!.length, 3);
  assert.ok(html.includes(`<title>logit lens · ${escapeHtml("tiny<model>")}`));
  // Nothing that loads from elsewhere: no src= / url( / external href, and a CSP that forbids it.
  assert.ok(!/\ssrc\s*=/.test(html), "no src attributes");
  assert.ok(!/url\(/.test(html), "no CSS url()");
  assert.ok(!/href="(?!data:)/.test(html), "no external href");
  assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
  // The viewer's code and style are inlined.
  const { script, style } = lensViewAssets();
  assert.ok(html.includes(script.slice(0, 200)) && html.includes(style.slice(0, 200)));
});

// ---------------------------------------------------------------- in a real browser

describe("HTML report in chromium", { skip: SKIP_BROWSER }, () => {
  let report: LensReport;
  let htmlFile: string;
  let browser: Browser;
  let page: Page;
  const requests: string[] = [];
  const pageErrors: string[] = [];

  before(async () => {
    const { model } = await loadReal("smollm2-135m-instruct");
    const tok = model.tokenizer;
    const quiet = createProgress({ quiet: true });
    const { hooks, points } = readoutHooks("resid_post", model.config);
    const targets = [" 🐴", "emoji"].map((t) => parseTextTarget(tok, t));
    const families = ["emoji", "contains:horse"].map((f) => parseFamily(tok, f));
    const gen = { maxNewTokens: 4, sampling: { temperature: 0, topP: 1, seed: 0 }, stopIds: tok.eosIds };
    const job = await executeLensJob(model, { promptIds: tok.encode(PROMPT), readouts: hooks, topK: 5, variant: "logit", targets, families, generate: gen }, quiet);
    report = buildReport(model, {
      prompt: PROMPT,
      chat: false,
      job,
      targets,
      families,
      topK: 5,
      points,
      generation: { maxNewTokens: gen.maxNewTokens, temperature: 0, topP: 1, seed: 0 },
    });
    htmlFile = tmpFile("report.html");
    fs.writeFileSync(htmlFile, toHtml(report));

    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
    });
    page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
    });
    await page.route("**/*", (route) => {
      const url = route.request().url();
      requests.push(url);
      return url.startsWith("file:") ? route.continue() : route.abort();
    });
    await page.goto(pathToFileURL(htmlFile).href);
    await page.waitForSelector("#cell-details .top-entry");
  });

  after(async () => {
    await browser?.close();
  });

  /** Row index of a layer in report.layers, for the data-row attribute. */
  const rowOf = (hook: string) => report.layers.findIndex((l) => l.hook === hook);

  async function panel() {
    return page.$eval("#cell-details", (el) => ({
      hook: el.getAttribute("data-hook"),
      position: Number(el.getAttribute("data-position")),
      mode: el.getAttribute("data-mode"),
      entropy: el.querySelector(".ll-entropy")?.textContent,
      kl: el.querySelector(".ll-kl")?.textContent,
      top: [...el.querySelectorAll(".top-entry")].map((r) => ({
        id: Number(r.getAttribute("data-token-id")),
        prob: Number(r.getAttribute("data-prob")),
        probText: r.querySelector(".prob")!.textContent,
        text: r.querySelector(".tok")!.textContent,
        bytes: r.querySelector(".bytes")!.textContent,
        logit: r.querySelector(".logit")!.textContent,
      })),
      targets: [...el.querySelectorAll(".target-entry")].map((r) => ({ probText: r.querySelector(".prob")!.textContent, rank: r.querySelector(".rank")!.textContent })),
      families: [...el.querySelectorAll(".family-entry")].map((r) => r.querySelector(".prob")!.textContent),
    }));
  }

  function assertPanelShows(p: Awaited<ReturnType<typeof panel>>, cell: ReportCell, hook: string, final: boolean) {
    assert.equal(p.hook, hook);
    assert.equal(p.position, cell.position);
    assert.deepEqual(p.top.map((e) => e.id), cell.top.map((e) => e.id), "top-k token ids");
    assert.deepEqual(p.top.map((e) => e.prob), cell.top.map((e) => e.prob), "top-k probabilities (data-prob)");
    assert.deepEqual(p.top.map((e) => e.probText), cell.top.map((e) => expectedProbText(e.prob)), "top-k probability text");
    assert.deepEqual(p.top.map((e) => e.text), cell.top.map((e) => e.text), "top-k token text");
    assert.deepEqual(p.top.map((e) => e.bytes!.replace(/ /g, "")), cell.top.map((e) => e.bytes), "top-k bytes");
    assert.deepEqual(p.top.map((e) => e.logit), cell.top.map((e) => e.logit.toFixed(2)), "top-k logits");
    assert.equal(p.entropy, cell.entropy.toFixed(3));
    assert.equal(p.kl, final ? "—" : cell.kl_to_final.toFixed(3));
    assert.deepEqual(p.targets, cell.targets!.map((t) => ({ probText: expectedProbText(t.prob), rank: `#${(t.rank + 1).toLocaleString("en-US")}` })), "tracked targets");
    assert.deepEqual(p.families, cell.families!.map((f) => expectedProbText(f)), "families");
  }

  test("renders without errors and fetches nothing but the file itself", async () => {
    assert.deepEqual(pageErrors, []);
    assert.ok(requests.length >= 1);
    assert.deepEqual(requests.filter((u) => !u.startsWith("file:")), [], "only file: requests");
    assert.equal(await page.title(), `logit lens · smollm2-135m-instruct · ${PROMPT}`);
  });

  /** Moves the mouse onto a heatmap cell (a canvas: the view says where the cell is). */
  async function cellPoint(row: number | "final", col: number): Promise<{ x: number; y: number }> {
    const p = await page.evaluate(([r, c]) => {
      const rect = (window as unknown as { lensView: { cellRect(r: number | "final", c: number): DOMRect | null } }).lensView.cellRect(r, c);
      return rect && { x: rect.x + rect.width / 2, y: rect.y + rect.height / 2 };
    }, [row, col] as const);
    assert.ok(p, `cell ${row}, ${col} is on the heatmap`);
    return p;
  }
  async function hoverCell(row: number | "final", col: number): Promise<void> {
    const p = await cellPoint(row, col);
    await page.mouse.move(p.x, p.y);
  }
  const displayRows = () => page.evaluate(() => (window as unknown as { lensView: { rows(): (number | "final")[] } }).lensView.rows());
  const pinned = () => page.evaluate(() => (window as unknown as { lensView: { state: { pinned: { row: number | "final"; col: number } } } }).lensView.state.pinned);

  test("heatmap: a canvas with one row per readout plus the output, one column per position", async () => {
    const nCols = report.positions.length;
    assert.ok(report.tokens.length > report.prompt_length, "the report has generated tokens");
    assert.equal(await page.locator("#lens-heatmap canvas").count(), 2);
    const size = await page.$eval("#lens-heatmap-scroll .ll-spacer", (el) => ({ w: (el as HTMLElement).offsetWidth, h: (el as HTMLElement).offsetHeight }));
    assert.equal(size.h, 50 + (report.layers.length + 1) * 20, "one 20 px row per readout plus the output, under a 50 px head");
    assert.equal(size.w, 86 + nCols * 66, "one 66 px column per position");
    // Output on top by default, layer 0 at the bottom; the button flips it.
    const shown = await displayRows();
    assert.equal(shown[0], "final");
    assert.equal(shown.at(-1), 0);
    await page.click("#ll-order");
    const flipped = await displayRows();
    assert.equal(flipped[0], 0);
    assert.equal(flipped.at(-1), "final");
    await page.click("#ll-order");
    assert.deepEqual(await displayRows(), shown);
  });

  test("hovering a cell shows its readout, top-k, entropy, KL, targets and families", async () => {
    const nCols = report.positions.length;
    const picks: [number, number][] = [
      [report.layers.length - 1, nCols - 1],
      [Math.floor(report.layers.length / 2), 4],
      [0, 0],
      [20, report.prompt_length - 1],
    ];
    for (const [li, col] of picks) {
      const layer = report.layers[li]!;
      const cell = layer.positions[col]!;
      await hoverCell(li, col);
      const p = await panel();
      assert.equal(p.mode, "hover");
      assertPanelShows(p, cell, layer.hook, false);
    }
    // The output row.
    const cell = report.final.positions[2]!;
    await hoverCell("final", 2);
    assertPanelShows(await panel(), cell, "final", true);
  });

  test("clicking pins a cell and selects its position for the chart; arrow keys move the pin", async () => {
    const col = 6;
    const cell = report.layers[24]!.positions[col]!;
    const pt = await cellPoint(24, col);
    await page.mouse.click(pt.x, pt.y);
    await page.mouse.move(5, 5); // leave the heatmap: the pinned cell stays in the panel
    const p = await panel();
    assert.equal(p.mode, "pinned");
    assertPanelShows(p, cell, report.layers[24]!.hook, false);
    assert.deepEqual(await pinned(), { row: 24, col });
    assert.match((await page.textContent("#lens-chart h2"))!, new RegExp(`position ${cell.position} `));
    // Output on top: ArrowUp goes one layer later, ArrowLeft one position back.
    await page.keyboard.press("ArrowUp");
    assertPanelShows(await panel(), report.layers[25]!.positions[col]!, report.layers[25]!.hook, false);
    await page.keyboard.press("ArrowLeft");
    assertPanelShows(await panel(), report.layers[25]!.positions[col - 1]!, report.layers[25]!.hook, false);
    // A column head selects a position too.
    const head = await cellPoint("final", 2);
    await page.mouse.click(head.x, head.y - 30);
    assert.equal((await pinned()).col, 2);
  });

  test("chart: one line per tracked target and family, one point per readout plus the output", async () => {
    // Back to the default position (the last one).
    await page.evaluate((c) => (window as unknown as { lensView: { pin(r: string, c: number): void } }).lensView.pin("final", c), report.positions.length - 1);
    const lines = await page.$$eval("#lens-chart svg path.series-target", (els) => els.map((e) => ({ label: e.getAttribute("data-label"), d: e.getAttribute("d")! })));
    assert.equal(lines.length, report.targets.length);
    assert.deepEqual(lines.map((l) => l.label).sort(), report.targets.map((t) => t.label).sort());
    for (const l of lines) assert.equal(l.d.match(/[ML]/g)!.length, report.layers.length + 1, `points of ${l.label}`);
    assert.equal(await page.locator("#lens-chart svg path.series-family").count(), report.families.length);
    assert.equal(await page.locator("#lens-chart svg path.series-rank").count(), report.targets.length, "a rank line per target");
    const legend = await page.$$eval("#lens-chart .legend-target .ll-tokbox", (els) => els.map((e) => e.textContent));
    assert.deepEqual(legend, report.targets.map((t) => t.label));
    // Linear scale redraws the same lines.
    await page.uncheck("#ll-chart-log");
    assert.equal(await page.locator("#lens-chart svg path.series-target").count(), report.targets.length);
    await page.check("#ll-chart-log");
  });

  test("text area: bytes reassembled, the fish reads 🐠, generated part marked", async () => {
    const text = (await page.textContent("#lens-text"))!;
    assert.equal(text, report.text);
    assert.ok(text.startsWith(PROMPT), "the prompt reads as typed");
    assert.ok(!text.includes("⟨") && !text.includes("\uFFFD"));
    const fish = await page.$$eval("#lens-text .ll-span", (els) => els.filter((e) => e.textContent === "🐠").map((e) => e.getAttribute("data-tokens")));
    // The prompt's fish (the model may write more of them).
    const spans = report.spans.filter((s) => s.text === "🐠");
    assert.deepEqual(fish, spans.map((s) => `${s.tokens[0]}-${s.tokens[1]}`));
    assert.ok(spans[0]!.tokens[1] < report.prompt_length && spans[0]!.tokens[1] > spans[0]!.tokens[0], "the prompt's fish spans several tokens");
    const generated = await page.$$eval("#lens-text .ll-span.generated", (els) => els.map((e) => e.textContent).join(""));
    assert.equal(generated, report.generated_text);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.hover("h1");
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  test("a 30 x 200 report renders, scrolls sideways and keeps its row labels in view", async () => {
    // The real report, its columns repeated to 200 positions.
    const n = 200;
    const tile = (cells: ReportCell[]) => Array.from({ length: n }, (_, i) => ({ ...cells[i % cells.length]!, position: i }));
    const big: LensReport = {
      ...report,
      tokens: Array.from({ length: n + 1 }, (_, i) => report.tokens[i % report.tokens.length]!),
      positions: Array.from({ length: n }, (_, i) => i),
      layers: report.layers.map((l) => ({ ...l, positions: tile(l.positions) })),
      final: { ...report.final, positions: tile(report.final.positions) },
      targets: report.targets.map((t) => ({ ...t, sequence_probs: Array.from({ length: n }, (_, i) => t.sequence_probs[i % t.sequence_probs.length]!) })),
    };
    const file = tmpFile("big.html");
    fs.writeFileSync(file, toHtml(big));
    const t0 = Date.now();
    await page.goto(pathToFileURL(file).href);
    await page.waitForSelector("#cell-details .top-entry");
    const ms = Date.now() - t0;
    assert.ok(ms < 15000, `rendered in ${ms} ms`);
    const geo = await page.evaluate(() => {
      const sc = document.getElementById("lens-heatmap-scroll")!;
      sc.scrollLeft = sc.scrollWidth / 2;
      sc.scrollTop = 100;
      return { scrollWidth: sc.scrollWidth, clientWidth: sc.clientWidth, scrollLeft: sc.scrollLeft };
    });
    assert.ok(geo.scrollWidth > 3 * geo.clientWidth, "the heatmap scrolls sideways");
    assert.ok(geo.scrollLeft > 1000);
    // A cell far to the right still opens in the panel.
    const layer = big.layers[12]!;
    const cell = layer.positions[150]!;
    await hoverCell(12, 150);
    assertPanelShows(await panel(), cell, layer.hook, false);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(requests.filter((u) => !u.startsWith("file:")), []);
  });
});
