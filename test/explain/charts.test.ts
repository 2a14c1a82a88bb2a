/**
 * The figures of issue 10 (src/outputs/explain-charts.ts): the attribution bars and heads heatmap,
 * and the patching heatmap, drawn from real runs on a tiny model; each bar and cell carries the
 * value it draws. Through the CLI: --out x.svg|x.png|x.html picks the format, the PNG is a real
 * image of the SVG's size, and the HTML page holds the figure and the same JSON as --json.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { attribute } from "../../src/explain/attribution.js";
import { patchSweep } from "../../src/explain/patching.js";
import { attributionSvg, patchSvg } from "../../src/outputs/explain-charts.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT, runCli } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const GPT2 = path.join(REPO_ROOT, "test/fixtures/tiny/gpt2");

function attr(svg: string, cls: string): { [k: string]: string }[] {
  return [...svg.matchAll(new RegExp(`<rect class="${cls}"([^>]*)>`, "g"))].map((m) => Object.fromEntries([...m[1]!.matchAll(/ ([\w-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])));
}

test("attribution figure: one bar per part, one cell per head, with their values (tiny gpt2, LayerNorm)", { timeout: 60_000 }, async () => {
  const model = await LoadedModel.load({ kind: "hf-folder", dir: GPT2 }, quiet);
  const ids = model.tokenizer.encode("The capital of France is Paris, and");
  const a = await attribute(model, ids, -1, 11, 5);
  const svg = attributionSvg(a);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="\d+" height="\d+"/);
  const bars = attr(svg, "bar");
  // embed, attention and MLP per layer, the final norm's bias (LayerNorm).
  assert.equal(bars.length, a.parts.length);
  for (const p of a.parts) {
    const b = bars.find((x) => x["data-kind"] === p.kind && Number(x["data-layer"]) === p.layer);
    assert.ok(b, `${p.kind} ${p.layer} has a bar`);
    assert.equal(Number(b["data-value"]), p.value);
  }
  // Taller bars for bigger parts: the bar's height is proportional to |value|.
  const big = a.parts.reduce((m, p) => (Math.abs(p.value) > Math.abs(m.value) ? p : m));
  const heightOf = (p: { kind: string; layer: number }) => Number(bars.find((x) => x["data-kind"] === p.kind && Number(x["data-layer"]) === p.layer)!["height"]);
  for (const p of a.parts) assert.ok(heightOf(p) <= heightOf(big) + 1e-9);
  const heads = attr(svg, "head");
  assert.equal(heads.length, model.config.nLayers * model.config.nHeads);
  for (const c of heads) assert.equal(Number(c["data-value"]), a.heads![Number(c["data-layer"])]![Number(c["data-head"])]);
});

test("patching figure: layers x positions cells with the recovered fraction (tiny llama)", { timeout: 60_000 }, async () => {
  const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(REPO_ROOT, "test/fixtures/tiny/llama") }, quiet);
  const A = model.tokenizer.encode("The capital of France is");
  const B = [...A];
  B[1] = A[2]!;
  const s = await patchSweep(model, A, B, { target: 11, versus: 5 });
  const svg = patchSvg(s);
  const cells = attr(svg, "cell");
  assert.equal(cells.length, s.layers.length * s.positions.length);
  const last = cells.find((c) => Number(c["data-layer"]) === model.config.nLayers && Number(c["data-position"]) === A.length - 1)!;
  assert.ok(Math.abs(Number(last["data-fraction"]) - 1) < 1e-4, "the final residual of the last position restores A");
  // Rows labelled as the lens labels readouts: the residual entering layer 0, the last layer's output.
  assert.match(svg, />L0 pre</);
  assert.match(svg, new RegExp(`>L${model.config.nLayers - 1}</`));
  // Each column is labelled with its position and B's token there.
  assert.equal(s.position_tokens.length, s.positions.length);
  for (const p of s.positions) assert.match(svg, new RegExp(`text-anchor="middle">${p} `));
});

test("attribute and patch CLI: --out x.svg, x.png, x.html", { timeout: 180_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fish-charts-"));
  try {
    const base = ["attribute", "--quiet", "--model", GPT2, "--prompt", "The capital of France is", "--target", " Paris", "--versus", " Rome"];
    const json = await runCli([...base, "--json"], { timeoutMs: 60_000 });
    assert.equal(json.code, 0, json.stderr);
    for (const ext of ["svg", "png", "html"]) {
      const r = await runCli([...base, "--out", path.join(dir, `a.${ext}`)], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
    }
    const svg = fs.readFileSync(path.join(dir, "a.svg"), "utf8");
    assert.match(svg, /<rect class="head"/);
    const png = fs.readFileSync(path.join(dir, "a.png"));
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const [w, h] = /width="(\d+)" height="(\d+)"/.exec(svg)!.slice(1).map(Number) as [number, number];
    assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [2 * w, 2 * h], "the PNG is the SVG at 2x");
    const html = fs.readFileSync(path.join(dir, "a.html"), "utf8");
    assert.match(html, /<svg xmlns/);
    const embedded = /<script type="application\/json" id="explain-data">([^<]*)<\/script>/.exec(html)![1]!;
    assert.deepEqual(JSON.parse(embedded), JSON.parse(json.stdout));

    const patch = await runCli(["patch", "--quiet", "--model", GPT2, "--from", "The capital of France is", "--prompt", "The capital of Spain is", "--target", " Paris", "--map", "0:0,1:1", "--out", path.join(dir, "p.svg")], { timeoutMs: 60_000 });
    assert.equal(patch.code, 0, patch.stderr);
    assert.match(fs.readFileSync(path.join(dir, "p.svg"), "utf8"), /<rect class="cell"/);
    const bad = await runCli([...base, "--format", "csv"], { timeoutMs: 60_000 });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^logit-lens: this command writes terminal, json, svg, png, html, not 'csv'\n$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
