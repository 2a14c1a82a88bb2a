/**
 * `explain` (issue 10, item 2): the decomposition recovers known weights, a single token's vector
 * reads as its own unembedding row, the cell's top tokens are the lens's, and bad input is one line.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { blockHook } from "../../src/architectures/forward.js";
import { explainCell, resolveToken } from "../../src/explain/explain.js";
import { nnls } from "../../src/explain/nnls.js";
import { unembeddingProducts } from "../../src/explain/unembedding.js";
import { createProgress } from "../../src/progress.js";
import { loadReal } from "../helpers/real-models.js";
import { REPO_ROOT, runCli } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const PROMPT = "Fish emoji: 🐠, horse emoji: 🐴, seahorse emoji:";

test("decomposition: weights of a residual built from known token rows are recovered (real SmolLM2 rows)", async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const H = model.config.hidden;
  const ids = [" sea", " horse", " fish", "ĠðŁ"].map((t) => resolveToken(model, t));
  const { rows } = await unembeddingProducts(model, new Float32Array(H), ids);
  const want = [2, 0.7, 0, 1.3];
  const y = new Float32Array(H);
  want.forEach((w, i) => { for (let k = 0; k < H; k++) y[k]! += w * rows[i * H + k]!; });
  const fit = nnls(rows, y);
  fit.weights.forEach((w, i) => assert.ok(Math.abs(w - want[i]!) < 1e-3, `weight ${i}: ${w} vs ${want[i]}`));
  assert.ok(fit.explained > 0.99999, String(fit.explained));
  // A negative part cannot be fitted by non-negative weights: it stays at zero, the rest explains less.
  const y2 = new Float32Array(H);
  for (let k = 0; k < H; k++) y2[k] = rows[k]! - rows[H + k]!;
  const fit2 = nnls(rows.subarray(0, 2 * H), y2);
  assert.equal(fit2.weights[1], 0);
  assert.ok(fit2.explained < 1);
});

test("vector arithmetic: one token's vector reads as the dot products with its own unembedding row", async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const ids = model.tokenizer.encode(PROMPT);
  const horse = resolveToken(model, " horse");
  const r = await explainCell(model, ids, { layer: 3, position: -1, vector: "U[ horse]", topK: 5 });
  assert.equal(r.vector!.by_cosine[0]!.id, horse);
  assert.ok(Math.abs(r.vector!.by_cosine[0]!.cosine - 1) < 1e-5);
  // Against dot products computed here from the rows themselves.
  const H = model.config.hidden;
  const others = [horse, resolveToken(model, " sea"), 0, 12520];
  const { rows } = await unembeddingProducts(model, new Float32Array(H), others);
  const u = rows.subarray(0, H);
  const { dots } = await unembeddingProducts(model, Float32Array.from(u), []);
  others.forEach((id, i) => {
    let d = 0;
    for (let k = 0; k < H; k++) d += u[k]! * rows[i * H + k]!;
    assert.ok(Math.abs(dots[id]! - d) <= 1e-4 * Math.max(1, Math.abs(d)), `token ${id}: ${dots[id]} vs ${d}`);
  });
  // And `resid` alone is the residual itself: same reading.
  const same = await explainCell(model, ids, { layer: 3, position: -1, vector: "resid", topK: 5 });
  assert.deepEqual(same.vector!.by_logit.map((s) => s.id), same.residual.by_logit.map((s) => s.id));
});

for (const which of ["smollm2", "gemma2-tiny"] as const) {
  test(`explain's top tokens by logit are the lens's top tokens at that cell (${which})`, { timeout: 120_000 }, async () => {
    const model = which === "smollm2" ? (await loadReal("smollm2-135m-instruct")).model : await LoadedModel.load({ kind: "hf-folder", dir: path.join(REPO_ROOT, "test/fixtures/tiny/gemma2") }, quiet);
    const ids = model.tokenizer.encode(PROMPT);
    const layer = Math.floor(model.config.nLayers / 2);
    const lens = await new LogitLens(model).apply(ids, { topK: 5, readouts: [blockHook(layer, "hook_resid_post")] });
    for (const position of [2, ids.length - 1]) {
      const r = await explainCell(model, ids, { layer, position, topK: 5 });
      assert.deepEqual(r.residual.by_logit.map((s) => s.id), lens.readouts[0]!.cells[position]!.topIds);
      // cosine and logit rankings disagree in general, but each is sorted
      for (let i = 1; i < 5; i++) assert.ok(r.residual.by_cosine[i - 1]!.cosine >= r.residual.by_cosine[i]!.cosine);
    }
  });
}

test("explain CLI: text and JSON; bad input is one line and exit 2", { timeout: 120_000 }, async () => {
  const ok = await runCli(["explain", "--quiet", "--prompt", PROMPT, "--layer", "20", "--concepts", " sea, horse,ĠðŁ", "--vector", "U[ sea] + U[ horse] + U[ĠðŁ]", "--family", "emoji", "--json"], { timeoutMs: 120_000 });
  assert.equal(ok.code, 0, ok.stderr);
  const r = JSON.parse(ok.stdout);
  assert.equal(r.hook, "blocks.20.hook_resid_post");
  assert.deepEqual(r.decomposition.terms.slice(0, 3).map((t: { source: string }) => t.source), ["concept", "concept", "concept"]);
  assert.ok(r.decomposition.explained >= 0 && r.decomposition.explained <= 1);
  assert.ok(r.vector.family_nearest.length > 0);
  for (const [args, pattern] of [
    [["--layer", "99"], /^logit-lens: --layer 99 is out of range: this model has layers 0\.\.29\n$/],
    [["--layer", "3", "--vector", "U[ seahorse emoji]"], /^logit-lens: " seahorse emoji" is \d+ tokens \(.*\), not one: name one of them \(#id or its vocabulary string\)\n$/],
    [["--layer", "3", "--vector", "U[ sea] * 2"], /^logit-lens: --vector "U\[ sea\] \* 2": \+ or - was expected at character 9/],
    [[], /^logit-lens: explain needs --layer L \(the cell's snap\) and\/or --expand top\|<token> \(characters a candidate becomes\)\n$/],
  ] as [string[], RegExp][]) {
    const bad = await runCli(["explain", "--quiet", "--prompt", PROMPT, ...args], { timeoutMs: 120_000 });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, pattern);
  }
});
