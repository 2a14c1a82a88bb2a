/**
 * Direct logit attribution (issue 10, item 3): the parts sum to the model's own logit (or logit
 * difference) within 1e-4 on a tiny fixture of every family (RMSNorm, Gemma's 1 + w, LayerNorm) and
 * on both real models; a pair of multi-token targets is read where they part.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { attribute } from "../../src/explain/attribution.js";
import { unembeddingOf } from "../../src/architectures/index.js";
import { splitAtDifference } from "../../src/explain/cli.js";
import { createProgress } from "../../src/progress.js";
import { loadReal } from "../helpers/real-models.js";
import { REPO_ROOT, runCli } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const TINY = path.join(REPO_ROOT, "test/fixtures/tiny");

function checkSums(a: Awaited<ReturnType<typeof attribute>>, where: string): void {
  const sum = a.parts.reduce((s, p) => s + p.value, 0);
  assert.ok(Math.abs(sum - a.model_logit) <= 1e-4 * Math.max(1, Math.abs(a.model_logit)), `${where}: parts sum to ${sum}, model says ${a.model_logit}`);
  assert.equal(a.parts.filter((p) => p.kind === "attn").length, a.parts.filter((p) => p.kind === "mlp").length);
  // Each layer's heads (and its o_proj bias) sum to that layer's attention part.
  for (const p of a.parts.filter((p) => p.kind === "attn")) {
    const heads = a.heads![p.layer]!.reduce((s, v) => s + v, 0) + a.head_bias![p.layer]!;
    assert.ok(Math.abs(heads - p.value) <= 1e-4 * Math.max(1, Math.abs(p.value)), `${where}: layer ${p.layer}'s heads sum to ${heads}, its attention part is ${p.value}`);
  }
}

for (const family of fs.readdirSync(TINY).filter((d) => fs.existsSync(path.join(TINY, d, "config.json")))) {
  test(`attribution parts sum to the logit and to a logit difference (tiny ${family})`, { timeout: 60_000 }, async () => {
    const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(TINY, family) }, quiet);
    const ids = model.tokenizer.encode("The capital of France is Paris, and");
    const V = model.config.vocabSize;
    const logits = (await (await model.forward([], "all")).run(ids)).logits!;
    const cap = unembeddingOf(model.config).softcap;
    for (const position of [1, -1]) {
      const a = await attribute(model, ids, position, 7);
      checkSums(a, `${family} @ ${position}`);
      // And what they sum to is the model's own logit (soft-capped where the family caps).
      const own = logits[(position < 0 ? ids.length + position : position) * V + 7]!;
      const mine = cap ? cap * Math.tanh(a.logit / cap) : a.logit;
      assert.ok(Math.abs(mine - own) <= 1e-4 * Math.max(1, Math.abs(own)), `${family}: ${mine} vs the forward pass's ${own}`);
      checkSums(await attribute(model, ids, position, 11, 5), `${family} @ ${position} (11 vs 5)`);
    }
  });
}

for (const alias of ["smollm2-135m-instruct", "gemma3-270m"] as const) {
  test(`attribution on the real ${alias}: 🐠 vs 🐴 read where they part, parts sum to the difference`, { timeout: 240_000 }, async () => {
    const { model } = await loadReal(alias);
    const ids = model.tokenizer.encode("Fish emoji: 🐠, horse emoji: 🐴, seahorse emoji:");
    const split = splitAtDifference(model, " 🐠", " 🐴");
    const fish = model.tokenizer.encode(" 🐠", { addSpecialTokens: false });
    assert.deepEqual([...split.prefix, split.target], fish.slice(0, split.prefix.length + 1));
    const a = await attribute(model, [...ids, ...split.prefix], -1, split.target, split.versus);
    checkSums(a, alias);
    assert.equal(a.parts.length, 1 + 2 * model.config.nLayers);
  });
}

test("attribute CLI: one line for bad input", { timeout: 120_000 }, async () => {
  const r = await runCli(["attribute", "--quiet", "--prompt", "Fish emoji:", "--target", " 🐠", "--versus", " 🐠🐠"], { timeoutMs: 120_000 });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^logit-lens: --target " 🐠" and --versus " 🐠🐠" do not part at any token \(one is a prefix of the other\)\n$/);
  const ok = await runCli(["attribute", "--quiet", "--prompt", "Fish emoji:", "--target", " 🐠", "--versus", " 🐴", "--json"], { timeoutMs: 120_000 });
  assert.equal(ok.code, 0, ok.stderr);
  const a = JSON.parse(ok.stdout);
  assert.match(a.convention, /final norm scale frozen at the final residual/);
});
