/**
 * The explorer's "why the fish" panel (src/web/why-fish.ts) in a real browser (Debian's Chromium
 * through playwright-core): the JSON that `attribute --json` and `patch --json` write, opened in the
 * panel, is drawn as the attribution bars with the heads heatmap and as the patching heatmap, each
 * bar and cell carrying the value of the JSON; anything else is a one-line message, not a figure.
 * The results come from real runs on a tiny model. Screenshot: $TMPDIR/why-fish-panel.png.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { LoadedModel } from "../../src/engine/model.js";
import { attribute } from "../../src/explain/attribution.js";
import { patchSweep } from "../../src/explain/patching.js";
import { loadModel } from "../../src/index.js";
import { createProgress } from "../../src/progress.js";
import { createServer, type CreatedServer } from "../../src/server/server.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const CHROMIUM = process.env["LOGIT_LENS_CHROMIUM"] || "/usr/bin/chromium";
const SKIP = fs.existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is absent (install it with: apt-get install -y chromium)`;
const TINY = path.join(REPO_ROOT, "test/fixtures/tiny/gpt2");

describe("why-the-fish panel in chromium", { skip: SKIP }, () => {
  let server: CreatedServer;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "why-fish-web-"));

  before(async () => {
    server = await createServer({ port: 0, model: TINY, load: (spec) => loadModel(spec) });
    await server.app.listen({ host: "127.0.0.1", port: 0 });
    const port = (server.app.server.address() as { port: number }).port;
    server.setPort(port);
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${port}/#`);
  });

  after(async () => {
    await browser?.close();
    await server?.app.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("attribution and patching JSON become their figures", { timeout: 120_000 }, async () => {
    const model = await LoadedModel.load({ kind: "hf-folder", dir: TINY }, createProgress({ quiet: true }));
    const ids = model.tokenizer.encode("The capital of France is Paris, and");
    const a = await attribute(model, ids, -1, 11, 5);
    const B = [...ids];
    B[1] = ids[2]!;
    const s = await patchSweep(model, ids, B, { target: 11, versus: 5 });
    fs.writeFileSync(path.join(dir, "a.json"), JSON.stringify(a));
    fs.writeFileSync(path.join(dir, "p.json"), JSON.stringify(s));

    await page.click("#why-fish summary");
    await page.setInputFiles("#why-fish-file", path.join(dir, "a.json"));
    await page.waitForSelector("#why-fish-figure svg rect.bar");
    const bars = await page.$$eval("#why-fish-figure rect.bar", (els) => els.map((e) => ({ kind: e.getAttribute("data-kind"), layer: Number(e.getAttribute("data-layer")), value: Number(e.getAttribute("data-value")), tip: e.querySelector("title")?.textContent })));
    assert.equal(bars.length, a.parts.length);
    for (const p of a.parts) assert.equal(bars.find((b) => b.kind === p.kind && b.layer === p.layer)!.value, p.value);
    const heads = await page.$$eval("#why-fish-figure rect.head", (els) => els.length);
    assert.equal(heads, model.config.nLayers * model.config.nHeads);
    // The figure is drawn: the bars have a size on the page.
    const box = await page.locator("#why-fish-figure svg").boundingBox();
    assert.ok(box && box.width > 400 && box.height > 200, JSON.stringify(box));
    await page.locator("#why-fish").screenshot({ path: path.join(os.tmpdir(), "why-fish-panel.png") });

    await page.setInputFiles("#why-fish-file", path.join(dir, "p.json"));
    await page.waitForSelector("#why-fish-figure svg rect.cell");
    const cells = await page.$$eval("#why-fish-figure rect.cell", (els) => els.length);
    assert.equal(cells, s.layers.length * s.positions.length);
    assert.equal(await page.$$eval("#why-fish-figure rect.bar", (els) => els.length), 0, "the patching figure replaced the attribution");

    await page.fill("#why-fish-json", '{"schema": "something else"}');
    assert.match((await page.textContent("#why-fish-status")) ?? "", /neither an attribution .* nor a patching sweep/);
    assert.deepEqual(errors, []);
  });
});
