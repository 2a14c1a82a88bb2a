/**
 * Issue 9 on the real default model (SmolLM2-135M-Instruct), bounded to a few seconds: two
 * 24-token windows of real prose. The last layer's cross-entropy is the model's own next-token
 * loss (checked against a plain forward pass); the logit lens's KL ends at 0 and top-1 agreement
 * rises from the first layers to the last hidden one.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SweepEvaluator } from "../../src/sweep/evaluate.js";
import { loadSweepData } from "../../src/sweep/data.js";
import { loadReal } from "../helpers/real-models.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

test("sweep on SmolLM2: last-layer CE is the model's loss; KL to 0, top-1 agreement rises", { timeout: 60_000 }, async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const data = loadSweepData(path.join(REPO_ROOT, "test/fixtures/sweep/devil-excerpt.txt"), model.tokenizer, { window: 24, limit: 2 });
  const ev = new SweepEvaluator(model);
  const L = model.config.nLayers;
  const V = model.config.vocabSize;
  let top1Early = 0;
  let top1Late = 0;
  for (let i = 0; i < data.count; i++) {
    const p = data.prompt(i);
    const positions = p.ids.map((_, k) => k);
    const [e] = await ev.evaluate({ ids: p.ids, positions, tracked: [], families: [] }, [{ name: "logit" }]);
    const logits = (await (await model.forward([], "all")).run(p.ids)).logits!;
    for (let k = 0; k + 1 < p.ids.length; k++) {
      const row = logits.subarray(k * V, (k + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let s = 0;
      for (const v of row) s += Math.exp(v - max);
      const want = Math.log(s) + max - row[p.ids[k + 1]!]!;
      assert.ok(Math.abs(e!.ce[L - 1]![k]! - want) <= 1e-3 * Math.max(1, want), `CE ${e!.ce[L - 1]![k]} vs ${want}`);
    }
    for (const v of e!.kl[L - 1]!) assert.ok(v < 1e-3);
    top1Early += e!.top1Agree[0]!.reduce((a, b) => a + b, 0);
    top1Late += e!.top1Agree[L - 2]!.reduce((a, b) => a + b, 0);
  }
  assert.ok(top1Late > top1Early, `top-1 agreement: layer ${L - 2} ${top1Late} vs layer 0 ${top1Early}`);
});
