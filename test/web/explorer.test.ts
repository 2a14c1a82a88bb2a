/**
 * The explorer (`logit-lens serve`) in a real browser, as a new user would drive it: Debian's
 * Chromium through playwright-core against the server on 127.0.0.1 with the real SmolLM2-135M.
 * Types a prompt and runs it (rows stream in before the report), pins a cell and checks the panel
 * against the API's JSON, moves the pin with the arrow keys, adds a multi-token target and reads
 * its chart, generates and checks each token's commitment layer, opens the shared URL in a new
 * page and gets the same view, compares two prompts, and exports the HTML report and checks it is
 * self-contained. Screenshots go to $TMPDIR/explorer-*.png (and docs/serve.png with
 * LOGIT_LENS_UPDATE_SCREENSHOT=1).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import type { LensReport } from "../../src/outputs/report.js";
import type { CreatedServer } from "../../src/server/server.js";
import { smollm2Variants } from "./smollm2-variants.js";
import { REPO_ROOT } from "../helpers/run-cli.js";
import { startTestServer } from "../helpers/serve.js";

const CHROMIUM = process.env["LOGIT_LENS_CHROMIUM"] || "/usr/bin/chromium";
const SKIP = fs.existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is absent (install it with: apt-get install -y chromium)`;
const MODEL = "smollm2-135m-instruct";
const PROMPT = "Fish emoji: 🐠, horse emoji:";

type Row = number | "final";
interface Win {
  lensView: { cellRect(r: Row, c: number): DOMRect | null; rows(): Row[]; state: { pinned: { row: Row; col: number }; colorBy: string }; report: LensReport };
  explorer: { timings: { firstRows?: number; report?: number } };
}

describe("explorer in chromium", { skip: SKIP }, () => {
  let server: CreatedServer;
  let base: string;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  const foreign: string[] = [];

  async function newPage(): Promise<Page> {
    const p = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
    p.on("pageerror", (e) => pageErrors.push(e.message));
    p.on("console", (m) => {
      if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
    });
    await p.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(base)) return route.continue();
      foreign.push(url);
      return route.abort();
    });
    return p;
  }

  /** The exact KL the API computes for two runs (POST /api/kl). */
  async function apiKl(body: unknown): Promise<{ layers: number[]; kl_ab: number[][]; kl_ba: number[][]; columns: number }> {
    const text = await (await fetch(`${base}/api/kl`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).text();
    const last = JSON.parse(text.trim().split("\n").at(-1)!) as { type: string; result: { layers: number[]; kl_ab: number[][]; kl_ba: number[][]; columns: number } };
    assert.equal(last.type, "kl", text.slice(-300));
    return last.result;
  }

  /** The API's answer to the same request, read straight from the stream. */
  async function apiReport(body: unknown): Promise<LensReport> {
    const text = await (await fetch(`${base}/api/lens`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).text();
    const last = JSON.parse(text.trim().split("\n").at(-1)!) as { type: string; report: LensReport };
    assert.equal(last.type, "report");
    return last.report;
  }

  async function runAndWait(p: Page): Promise<void> {
    await p.click("#ask-run");
    await waitDone(p);
  }
  async function waitDone(p: Page): Promise<void> {
    await p.waitForFunction(() => document.body.dataset["state"] === "done" || document.body.dataset["state"] === "error", null, { timeout: 120_000 });
    assert.equal(await p.evaluate(() => document.body.dataset["state"]), "done", (await p.textContent("#ex-status")) ?? "");
  }

  async function clickCell(p: Page, row: Row, col: number): Promise<void> {
    const pt = await p.evaluate(([r, c]) => {
      const rect = (window as unknown as Win).lensView.cellRect(r, c);
      return rect && { x: rect.x + rect.width / 2, y: rect.y + rect.height / 2 };
    }, [row, col] as const);
    assert.ok(pt);
    await p.mouse.click(pt.x, pt.y);
    await p.mouse.move(3, 3);
  }

  const panel = (p: Page) =>
    p.$eval("#cell-details", (el) => ({
      hook: el.getAttribute("data-hook"),
      position: Number(el.getAttribute("data-position")),
      mode: el.getAttribute("data-mode"),
      top: [...el.querySelectorAll(".top-entry")].map((r) => ({ id: Number(r.getAttribute("data-token-id")), prob: Number(r.getAttribute("data-prob")), bytes: r.querySelector(".bytes")!.textContent!.replace(/ /g, "") })),
      targets: [...el.querySelectorAll(".target-entry")].map((r) => ({ prob: Number(r.getAttribute("data-prob")), rank: Number(r.getAttribute("data-rank")) })),
    }));

  before(async () => {
    ({ server, base } = await startTestServer(MODEL));
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"] });
    page = await newPage();
    await page.goto(`${base}/`);
    // Warm the model once, so the streamed run below is timed warm.
    await apiReport({ prompt: "warm up" });
  });

  after(async () => {
    await browser?.close();
    await server?.app.close();
  });

  test("types a prompt, runs it: rows stream in before the report, the heatmap shows every readout", async () => {
    await page.fill("#ask-prompt", PROMPT);
    await runAndWait(page);
    const t = await page.evaluate(() => (window as unknown as Win).explorer.timings);
    assert.ok(t.firstRows !== undefined && t.report !== undefined && t.firstRows < t.report, `first rows ${t.firstRows} ms, report ${t.report} ms`);
    const rows = await page.evaluate(() => (window as unknown as Win).lensView.rows());
    assert.equal(rows.length, 31, "30 layers and the output");
    assert.match((await page.textContent("#ex-status"))!, /done in/);
    assert.deepEqual(pageErrors, []);
  });

  test("pins a cell: the panel shows the API's JSON for it; arrow keys move the pin", async () => {
    const api = await apiReport({ prompt: PROMPT });
    const col = 9;
    await clickCell(page, 22, col);
    let p = await panel(page);
    assert.equal(p.mode, "pinned");
    assert.equal(p.hook, api.layers[22]!.hook);
    assert.equal(p.position, api.positions[col]);
    assert.deepEqual(p.top, api.layers[22]!.positions[col]!.top.map((t) => ({ id: t.id, prob: t.prob, bytes: t.bytes })));
    await page.keyboard.press("ArrowDown"); // output on top: one layer earlier
    p = await panel(page);
    assert.equal(p.hook, api.layers[21]!.hook);
    assert.deepEqual(p.top.map((t) => t.id), api.layers[21]!.positions[col]!.top.map((t) => t.id));
  });

  test("adds a multi-token target: its chart runs across every layer at the pinned position and matches the JSON", async () => {
    await page.fill("#ask-target", " 🐴");
    await page.click("#ask-add-target");
    await waitDone(page);
    const api = await apiReport({ prompt: PROMPT, track: [" 🐴"] });
    assert.ok(api.targets[0]!.ids.length > 1, "the horse is several tokens");
    const last = api.positions.length - 1;
    await clickCell(page, "final", last);
    const line = await page.$eval('#lens-chart path.series-target[data-label=" 🐴"]', (e) => e.getAttribute("d")!);
    assert.equal(line.match(/[ML]/g)!.length, api.layers.length + 1, "one point per readout plus the output");
    assert.equal(await page.locator('#lens-chart path.series-rank[data-label=" 🐴"]').count(), 1);
    const p = await panel(page);
    assert.deepEqual(p.targets, [{ prob: api.final.positions[last]!.targets![0]!.prob, rank: api.final.positions[last]!.targets![0]!.rank }]);
    // Colour by the target's rank.
    await page.selectOption("#ll-color-by", "rank:0");
    assert.equal(await page.evaluate(() => (window as unknown as Win).lensView.state.colorBy), "rank:0");
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer-target.png"), fullPage: true });
  });

  test("a byte that finishes the emoji reads as the character: panel and cell text (streamed cells carry in_context)", async () => {
    const prompt = "Fish emoji: 🐠, horse emoji: 🐴";
    const api = await apiReport({ prompt });
    let hit: { row: number; col: number; shown: string } | undefined;
    api.layers.forEach((l, row) => l.positions.forEach((c, col) => {
      if (!hit && row > 10 && c.top[0]?.in_context !== undefined) hit = { row, col, shown: c.top[0].in_context };
    }));
    assert.ok(hit, "some layer's top-1 after the emoji's prefix completes it");
    assert.ok([...hit.shown].some((ch) => ch.codePointAt(0)! > 0xffff), hit.shown);
    await page.fill("#ask-prompt", prompt);
    await runAndWait(page);
    await clickCell(page, hit.row, hit.col);
    const shown = await page.$eval("#cell-details .top-entry td.tok", (td) => ({ attr: td.getAttribute("data-in-context"), text: td.textContent }));
    assert.equal(shown.attr, hit.shown);
    assert.ok(shown.text!.includes(`→ ${hit.shown}`), shown.text!);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer-in-context.png") });
    await page.fill("#ask-prompt", PROMPT);
    await runAndWait(page);
  });

  test("opens the shared URL in a new page and gets the same view", async () => {
    await clickCell(page, 18, 4);
    const url = page.url();
    assert.match(url, /#/);
    const other = await newPage();
    await other.goto(url);
    await waitDone(other);
    const [a, b] = await Promise.all([panel(page), panel(other)]);
    assert.deepEqual(b, a);
    const state = (p: Page) => p.evaluate(() => ({ ...(window as unknown as Win).lensView.state }));
    assert.deepEqual(await state(other), await state(page));
    assert.equal(await other.inputValue("#ask-prompt"), PROMPT);
    await other.close();
  });

  test("exports the HTML report: self-contained, and it opens from disk with the same data", async () => {
    const href = await page.getAttribute('#ex-exports a[data-format="html"]', "href");
    assert.ok(href);
    const html = await (await fetch(`${base}${href}`)).text();
    assert.ok(!/<script[^>]+src=/i.test(html) && !/<link[^>]+href="(?!data:)/i.test(html), "no external scripts or styles");
    assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-export-")), "export.html");
    fs.writeFileSync(file, html);
    const p = await browser.newPage();
    const requests: string[] = [];
    await p.route("**/*", (route) => {
      requests.push(route.request().url());
      return route.request().url().startsWith("file:") ? route.continue() : route.abort();
    });
    await p.goto(pathToFileURL(file).href);
    await p.waitForSelector("#cell-details .top-entry");
    const embedded = JSON.parse((await p.textContent("#lens-report"))!) as LensReport;
    assert.deepEqual(embedded.targets.map((t) => t.label), [" 🐴"]);
    assert.deepEqual(requests.filter((u) => !u.startsWith("file:")), []);
    for (const f of ["json", "svg", "png", "csv"]) {
      const res: Response = await fetch(base + href!.replace("format=html", "format=" + f));
      assert.equal(res.status, 200, f);
    }
    await p.close();
  });

  test("generates: each generated token's commitment layer is the JSON's", async () => {
    await page.check("#ask-generate");
    await page.fill("#ask-max-new", "6");
    await runAndWait(page);
    const report = await page.evaluate(() => (window as unknown as Win).lensView.report);
    assert.ok(report.tokens.length > report.prompt_length);
    // Written again here on purpose: the first resid_post layer from which the top-1 is the chosen token and stays so.
    for (let t = report.prompt_length; t < report.tokens.length; t++) {
      const col = report.positions.indexOf(t - 1);
      let layer: number | null = null;
      for (let l = report.layers.length - 1; l >= 0 && report.layers[l]!.positions[col]!.top[0]!.id === report.tokens[t]!.id; l--) layer = report.layers[l]!.layer;
      const shown = await page.$$eval(`#lens-text .ll-span[data-tokens="${t}-${t}"]`, (els) => els.map((e) => e.getAttribute("data-commit")));
      if (shown.length) assert.equal(shown[0], layer === null ? "none" : String(layer), `token ${t}`);
    }
    assert.ok((await page.locator("#lens-text .ll-span[data-commit]").count()) > 0);
    // Scrub through layers: each generated token's column shows that layer's top-1.
    const resid = report.layers.map((l, i) => ({ l, i })).filter(({ l }) => l.point === "resid_post");
    for (const k of [5, resid.length - 1]) {
      await page.$eval("#ll-scrub-layer", (el, v) => {
        (el as HTMLInputElement).value = String(v);
        el.dispatchEvent(new Event("input"));
      }, k);
      const ids = await page.$$eval("#ll-scrub-line .ll-scrub-tok", (els) => els.map((e) => Number(e.getAttribute("data-token-id"))));
      const want = report.tokens.slice(report.prompt_length).map((_, n) => report.layers[resid[k]!.i]!.positions[report.positions.indexOf(report.prompt_length + n - 1)]?.top[0]?.id ?? 0);
      assert.deepEqual(ids.slice(0, want.length), want, `layer ${k}`);
    }
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer-scrub.png"), fullPage: true });
    await page.uncheck("#ask-generate");
  });

  test("chat turns: a system message before the prompt goes through the chat template", async () => {
    await page.click("#ask-add-turn");
    await page.fill("#ask-turns .ex-turn-content", "You are a pirate.");
    await page.fill("#ask-prompt", "Hi");
    await runAndWait(page);
    const mine = await page.evaluate(() => (window as unknown as Win).lensView.report);
    const api = await apiReport({ prompt: "Hi", chat: true, messages: [{ role: "system", content: "You are a pirate." }, { role: "user", content: "Hi" }] });
    assert.equal(mine.chat, true);
    assert.deepEqual(mine.tokens.map((t) => t.id), api.tokens.map((t) => t.id));
    assert.match(mine.text, /pirate/);
    await page.click("#ask-turns .ex-x");
    await page.uncheck("#ask-chat");
  });

  test("compares two prompts: the difference view colours by the exact KL between A and B, the API's numbers", async () => {
    await page.fill("#ask-prompt", "The capital of France is");
    await page.click("#cmp summary");
    await page.check("#cmp-on");
    await page.fill("#cmp-prompt", "The capital of Italy is");
    await runAndWait(page);
    assert.equal(await page.evaluate(() => (window as unknown as Win).lensView.state.colorBy), "diff");
    await clickCell(page, "final", 4);
    assert.equal(await page.locator("#cell-details .ll-topk").count(), 2, "A's and B's top-k side by side");
    assert.match((await page.textContent("#ll-legend"))!, /exact over the vocabulary/);
    const api = await apiKl({ a: { prompt: "The capital of France is" }, b: { prompt: "The capital of Italy is" } });
    const out = api.layers.indexOf(-1);
    const shown = await page.$eval("#cell-details .ll-diff-kl-exact", (e) => Number(e.getAttribute("data-kl")));
    assert.equal(shown, api.kl_ab[out]![4]);
    assert.ok(shown > 0.1, `France and Italy differ at the output (${shown} nats)`);
    await clickCell(page, 12, 1);
    assert.equal(await page.$eval("#cell-details .ll-diff-kl-exact", (e) => Number(e.getAttribute("data-kl"))), api.kl_ab[api.layers.indexOf(12)]![1], "same text so far: ~0");
    assert.equal(await page.locator("#cell-details .ll-estimate").count(), 1, "the top-k estimate is still shown, and says so");
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer-compare-kl.png") });
    await page.selectOption("#ll-color-by", "rankdiff:0");
    assert.match((await page.textContent("#ll-legend"))!, /rank change/);
    assert.equal(await page.locator("#cell-details .ll-rank-change").count(), 1);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer-compare.png"), fullPage: true });
    await page.uncheck("#cmp-on");
  });

  test("the same model in F16 and Q4_0 side by side: the exact KL per cell shows what quantization does to the lens", async () => {
    const { f16, q4 } = await smollm2Variants();
    const prompt = "The capital of France is Paris. The capital of Germany is";
    while ((await page.locator("#ask-chips .ex-x").count()) > 0) await page.click("#ask-chips .ex-x"); // no targets: the KL view alone
    await page.fill("#ask-model", f16);
    await page.fill("#ask-prompt", prompt);
    await page.check("#cmp-on");
    await page.fill("#cmp-prompt", "");
    await page.fill("#cmp-model", q4);
    await runAndWait(page);
    assert.equal(await page.evaluate(() => (window as unknown as Win).lensView.state.colorBy), "diff");
    assert.match((await page.textContent("#ll-legend"))!, /exact over the vocabulary/);
    assert.match((await page.textContent("#ex-status"))!, /A: SmolLM2-135M-Instruct\.F16\.gguf, B: SmolLM2-135M-Instruct\.Q4_0\.gguf/);
    const api = await apiKl({ a: { model: f16, prompt }, b: { model: q4, prompt } });
    const last = api.columns - 1;
    await clickCell(page, "final", last);
    assert.equal(await page.$eval("#cell-details .ll-diff-kl-exact", (e) => Number(e.getAttribute("data-kl"))), api.kl_ab[api.layers.indexOf(-1)]![last]);
    // Which layers does Q4_0 move most? Mean KL(F16 ‖ Q4_0) over the positions, per readout.
    const mean = (row: number[]) => row.reduce((a, b) => a + b, 0) / row.length;
    const perLayer = api.layers.map((l, i) => ({ layer: l === -1 ? "output" : `L${l}`, kl: mean(api.kl_ab[i]!) }));
    console.log(`F16 vs Q4_0, mean KL(F16 ‖ Q4_0) per readout over ${api.columns} positions: ${perLayer.map((p) => `${p.layer} ${p.kl.toFixed(2)}`).join(", ")}`);
    assert.ok(perLayer.every((p) => Number.isFinite(p.kl) && p.kl >= 0));
    assert.ok(perLayer.at(-1)!.kl > 0.05, "quantization moves the output distribution");
    // The form's comparison (A's and B's model), the status line and the difference heatmap in one view.
    await page.evaluate(() => document.getElementById("cmp")?.scrollIntoView());
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer-f16-q4.png") });
    if (process.env["LOGIT_LENS_UPDATE_SCREENSHOT"]) fs.copyFileSync(path.join(os.tmpdir(), "explorer-f16-q4.png"), path.join(REPO_ROOT, "docs", "serve-compare.png"));
    await page.uncheck("#cmp-on");
    await page.fill("#ask-model", "");
    await page.fill("#cmp-model", "");
  });

  test("screenshot for the README", async () => {
    await page.fill("#ask-prompt", PROMPT);
    await runAndWait(page);
    await page.fill("#ask-target", " 🐴");
    await page.click("#ask-add-target"); // reruns with the target
    await waitDone(page);
    await clickCell(page, 24, 11);
    await page.evaluate(() => {
      document.getElementById("cmp")?.removeAttribute("open");
      window.scrollTo(0, 0);
    });
    await page.screenshot({ path: path.join(os.tmpdir(), "explorer.png") });
    if (process.env["LOGIT_LENS_UPDATE_SCREENSHOT"]) fs.copyFileSync(path.join(os.tmpdir(), "explorer.png"), path.join(REPO_ROOT, "docs", "serve.png"));
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(foreign, [], "the app fetched nothing but its own server");
  });
});
