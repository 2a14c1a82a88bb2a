/**
 * "Why the fish" run from the explorer in a real browser (Debian's Chromium through playwright-core)
 * against the server on 127.0.0.1 with the real SmolLM2-135M, as a user would: type the prompt in
 * the explorer's form, open the why-fish panel, give a target and a contrast, press Attribute, and
 * read the drawn bars; then give prompt A and press Patch; then run the lens, click a cell and
 * attribute its top-1 at its position (prefilled by the click). Each bar and cell of the figure carries
 * the value of the API's JSON for the same request (which the server tests hold equal to the CLI's
 * --json). Screenshots: $TMPDIR/why-fish-run-*.png (and docs/why-fish-explorer.png with
 * LOGIT_LENS_UPDATE_SCREENSHOT=1).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import type { Attribution } from "../../src/explain/attribution.js";
import type { PatchSweep } from "../../src/explain/patching.js";
import type { CreatedServer } from "../../src/server/server.js";
import { REPO_ROOT } from "../helpers/run-cli.js";
import { startTestServer } from "../helpers/serve.js";

const CHROMIUM = process.env["LOGIT_LENS_CHROMIUM"] || "/usr/bin/chromium";
const SKIP = fs.existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is absent (install it with: apt-get install -y chromium)`;
const MODEL = "smollm2-135m-instruct";
const FISH = "Fish emoji: 🐠, horse emoji:";
// Prompt A asks for the fish where B asks for the horse (same token count: no position map needed).
const FISH_TWICE = "Fish emoji: 🐠, fish emoji:";

describe("why the fish, run from the explorer in chromium", { skip: SKIP }, () => {
  let server: CreatedServer;
  let base: string;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];

  /** The API's result for a request, read from the end of its NDJSON stream. */
  async function api<T>(route: string, body: unknown): Promise<T> {
    const text = await (await fetch(`${base}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).text();
    const last = JSON.parse(text.trim().split("\n").at(-1)!) as { type: string; result: T };
    assert.ok(last.type === "attribution" || last.type === "patching", text.slice(-300));
    return last.result;
  }

  async function waitPanel(p: Page): Promise<void> {
    await p.waitForFunction(() => ["done", "error"].includes(document.getElementById("why-fish")?.dataset["state"] ?? ""), null, { timeout: 300_000 });
    assert.equal(await p.evaluate(() => document.getElementById("why-fish")!.dataset["state"]), "done", (await p.textContent("#why-fish-status")) ?? "");
  }

  before(async () => {
    ({ server, base } = await startTestServer(MODEL));
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => void (m.type() === "error" && errors.push(`console: ${m.text()}`)));
    await page.goto(`${base}/`);
  });

  after(async () => {
    await browser?.close();
    await server?.app.close();
  });

  test("Attribute draws the API's attribution: 🐴 vs 🐠 on the explorer's prompt", { timeout: 600_000 }, async () => {
    await page.fill("#ask-prompt", FISH);
    await page.click("#why-fish summary");
    await page.fill("#wf-target", " 🐴");
    await page.fill("#wf-versus", " 🐠");
    await page.click("#wf-attribute");
    await waitPanel(page);
    const bars = await page.$$eval("#why-fish-figure rect.bar", (els) => els.map((e) => ({ kind: e.getAttribute("data-kind"), layer: Number(e.getAttribute("data-layer")), value: Number(e.getAttribute("data-value")), tip: e.querySelector("title")?.textContent ?? "" })));
    const a = await api<Attribution>("/api/attribute", { prompt: FISH, target: " 🐴", versus: " 🐠" });
    assert.equal(bars.length, a.parts.length);
    // Every bar is the API's value; the largest one, as a reader would hover it, too.
    for (const p of a.parts) assert.equal(bars.find((b) => b.kind === p.kind && b.layer === p.layer)!.value, p.value, `${p.kind} ${p.layer}`);
    const biggest = a.parts.reduce((x, y) => (Math.abs(y.value) > Math.abs(x.value) ? y : x));
    const bar = bars.find((b) => b.kind === biggest.kind && b.layer === biggest.layer)!;
    assert.ok(bar.tip.includes(Math.abs(biggest.value).toFixed(4)), `${bar.tip} vs ${biggest.value}`);
    // The pair is read where the two emoji part: the animal byte, after their shared prefix.
    assert.ok(a.versus && a.target.in_context === "🐴" && a.versus.in_context === "🐠", JSON.stringify([a.target, a.versus]));
    assert.equal(await page.$$eval("#why-fish-figure rect.head", (els) => els.length), 30 * 9);
    const box = await page.locator("#why-fish-figure svg").boundingBox();
    assert.ok(box && box.width > 400 && box.height > 200, JSON.stringify(box));
    await page.locator("#why-fish").screenshot({ path: path.join(os.tmpdir(), "why-fish-run-attribution.png") });
    if (process.env["LOGIT_LENS_UPDATE_SCREENSHOT"]) fs.copyFileSync(path.join(os.tmpdir(), "why-fish-run-attribution.png"), path.join(REPO_ROOT, "docs", "why-fish-explorer.png"));
  });

  test("Patch A → B draws the API's patching sweep", { timeout: 600_000 }, async () => {
    await page.fill("#wf-from", FISH_TWICE);
    await page.fill("#wf-layers", "0,8,16,24,30");
    await page.click("#wf-patch");
    await waitPanel(page);
    const cells = await page.$$eval("#why-fish-figure rect.cell", (els) => els.map((e) => ({ layer: Number(e.getAttribute("data-layer")), position: Number(e.getAttribute("data-position")), value: Number(e.getAttribute("data-value")) })));
    const s = await api<PatchSweep>("/api/patch", { prompt: FISH, from: FISH_TWICE, target: " 🐴", versus: " 🐠", layers: "0,8,16,24,30" });
    assert.equal(cells.length, s.layers.length * s.positions.length);
    s.layers.forEach((l, li) => s.positions.forEach((p, pi) => assert.equal(cells.find((c) => c.layer === l && c.position === p)!.value, s.patched[li]![pi], `layer ${l} position ${p}`)));
    assert.equal(await page.$$eval("#why-fish-figure rect.bar", (els) => els.length), 0, "the sweep replaced the bars");
    await page.locator("#why-fish").screenshot({ path: path.join(os.tmpdir(), "why-fish-run-patch.png") });
  });

  test("a pinned cell of the lens prefills position and target, and Attribute runs on them", { timeout: 600_000 }, async () => {
    await page.fill("#wf-target", "");
    await page.fill("#wf-versus", "");
    await page.click("#ask-run");
    await page.waitForFunction(() => document.body.dataset["state"] === "done" || document.body.dataset["state"] === "error", null, { timeout: 300_000 });
    assert.equal(await page.evaluate(() => document.body.dataset["state"]), "done", (await page.textContent("#ex-status")) ?? "");
    // Click the output row at position 8 (" horse"), as a reader does.
    const cell = await page.evaluate(() => {
      const v = (window as unknown as { lensView: { cellRect(r: "final", c: number): DOMRect | null; report: { positions: number[]; final: { positions: { top: { id: number; text: string }[] }[] } } } }).lensView;
      const rect = v.cellRect("final", 8)!;
      return { x: rect.x + rect.width / 2, y: rect.y + rect.height / 2, position: v.report.positions[8]!, top1: v.report.final.positions[8]!.top[0]! };
    });
    await page.mouse.click(cell.x, cell.y);
    assert.equal(await page.inputValue("#wf-position"), String(cell.position));
    const target = await page.inputValue("#wf-target");
    assert.ok(target.length > 0, "the empty target box got the cell's top-1");
    await page.click("#wf-attribute");
    await waitPanel(page);
    const a = await api<Attribution>("/api/attribute", { prompt: FISH, target, position: cell.position });
    assert.equal(a.target.id, cell.top1.id, "the attribution is of the pinned cell's top-1");
    assert.equal(a.position, cell.position);
    const bars = await page.$$eval("#why-fish-figure rect.bar", (els) => els.map((e) => ({ kind: e.getAttribute("data-kind"), layer: Number(e.getAttribute("data-layer")), value: Number(e.getAttribute("data-value")) })));
    assert.equal(bars.length, a.parts.length);
    for (const p of a.parts) assert.equal(bars.find((b) => b.kind === p.kind && b.layer === p.layer)!.value, p.value, `${p.kind} ${p.layer}`);
    await page.screenshot({ path: path.join(os.tmpdir(), "why-fish-run-pinned.png"), fullPage: true });
  });

  test("a bad request is a one-line message in the panel, and the page keeps working", { timeout: 300_000 }, async () => {
    await page.fill("#wf-from", "short");
    await page.click("#wf-patch");
    await page.waitForFunction(() => document.getElementById("why-fish")?.dataset["state"] === "error", null, { timeout: 120_000 });
    assert.match((await page.textContent("#why-fish-status")) ?? "", /^error: the prompts have different lengths/);
    assert.ok((await page.$$eval("#why-fish-figure rect.bar", (els) => els.length)) > 0, "the last figure stays");
    assert.deepEqual(errors, []);
  });
});
