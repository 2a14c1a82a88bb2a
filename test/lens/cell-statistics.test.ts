/**
 * The lens graph derives each cell's log-sum-exp, entropy and KL to the output from a few shared
 * products (lens-graph.ts) instead of summing over the vocabulary per cell. These tests recompute
 * them the plain way, in float64, from the full log-probabilities of every cell (compare.ts's
 * separate LogSoftmax graph), on tiny models with and without logit soft-capping, with sub-block
 * readouts and a row count that is not the default; tracked tokens' ranks and a token family's
 * probability too, spread over every tile of the vocabulary.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { lensDistributions } from "../../src/lens/compare.js";
import { readoutHooks } from "../../src/cli/options.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const tiny = (name: string) => LoadedModel.load({ kind: "hf-folder", dir: path.join(REPO_ROOT, "test/fixtures/tiny", name) }, quiet);

for (const [family, points] of [
  ["llama", "resid_post"],
  ["gemma2", "resid_pre,attn_out,resid_post"],
] as const) {
  test(`${family}: every cell's entropy, KL to the output and log-sum-exp equal float64 sums over its full distribution`, async () => {
    const model = await tiny(family);
    const { hooks } = readoutHooks(points, model.config);
    const ids = model.tokenizer.encode("The capital of France is Paris, and the capital of Italy is");
    const positions = ids.map((_, i) => i);
    const V = model.config.vocabSize;
    // Tracked ids and a family spread over the whole vocabulary (every tile of the lens).
    const tracked = [ids[1]!, 7, V - 1, Math.floor(V / 2) + 3];
    const spread = new Float32Array(V);
    for (let v = 5; v < V; v += 97) spread[v] = 1;
    // Tiles of 100 columns (the last one 12 wide): the merge of tiles is what is checked.
    const lens = await new LogitLens(model).apply(ids, { readouts: hooks, topK: 3, tracked, families: [spread], tileColumns: 100 });
    const dist = await lensDistributions(model, { ids, readouts: hooks, variant: "logit", positions });
    const R = hooks.length + 1; // the output row last
    const row = (p: number, r: number) => dist.logprobs.subarray((p * R + r) * V, (p * R + r + 1) * V);
    let worstEntropy = 0;
    let worstKl = 0;
    for (let p = 0; p < positions.length; p++) {
      const final = row(p, R - 1);
      for (let r = 0; r < hooks.length; r++) {
        const lp = row(p, r);
        let entropy = 0;
        let kl = 0;
        for (let v = 0; v < V; v++) {
          entropy -= Math.exp(lp[v]!) * lp[v]!;
          kl += Math.exp(final[v]!) * (final[v]! - lp[v]!);
        }
        const cell = lens.readouts[r]!.cells[p]!;
        worstEntropy = Math.max(worstEntropy, Math.abs(cell.entropy - entropy));
        worstKl = Math.max(worstKl, Math.abs(cell.klToFinal - Math.max(0, kl)));
        // log-probabilities of the top tokens: logit - logsumexp, the same numbers as the full row's
        cell.topIds.forEach((id, i) => assert.ok(Math.abs(cell.topLogprobs[i]! - lp[id]!) < 1e-4, `${hooks[r]} position ${p}: top ${i} log-prob ${cell.topLogprobs[i]} vs ${lp[id]}`));
        // tracked tokens: their log-probability, and their rank = how many tokens are more likely
        tracked.forEach((id, m) => {
          assert.ok(Math.abs(cell.trackedLogprobs[m]! - lp[id]!) < 1e-4, `${hooks[r]} position ${p}: tracked ${id} log-prob ${cell.trackedLogprobs[m]} vs ${lp[id]}`);
          let above = 0;
          let near = 0;
          for (let v = 0; v < V; v++) {
            if (v === id) continue;
            if (lp[v]! > lp[id]! + 1e-5) above++;
            else if (lp[v]! > lp[id]! - 1e-5) near++;
          }
          const rank = cell.trackedRanks[m]!;
          assert.ok(rank >= above && rank <= above + near, `${hooks[r]} position ${p}: tracked ${id} rank ${rank}, expected ${above} (+${near} within 1e-5)`);
        });
        let familyProb = 0;
        for (let v = 0; v < V; v++) if (spread[v]) familyProb += Math.exp(lp[v]!);
        assert.ok(Math.abs(cell.familyProbs[0]! - familyProb) < 1e-5 + 1e-4 * familyProb, `${hooks[r]} position ${p}: family ${cell.familyProbs[0]} vs ${familyProb}`);
      }
      assert.ok(lens.final[p]!.klToFinal < 1e-5, `the output row's KL to itself is ~0 (position ${p})`);
    }
    // fp32 products over the vocabulary against float64 sums: a few 1e-5 nats
    assert.ok(worstEntropy < 1e-4, `worst entropy difference ${worstEntropy}`);
    assert.ok(worstKl < 1e-4, `worst KL difference ${worstKl}`);
  });
}

test("real SmolLM2: tiles dequantized from the GGUF file give exactly the cells of its fp32 copy's tiles", async () => {
  // SmolLM2's Q8_0 unembedding is small, so the lens normally reads views of its fp32 copy; without
  // the copy (LOGIT_LENS_LENS_FP32=0, as for any unembedding over 256 MiB as fp32) each tile's rows
  // are read from the file and dequantized into a buffer. Both must be the same numbers.
  const { resolveModelSource } = await import("../../src/sources/resolve.js");
  const source = await resolveModelSource("smollm2-135m-instruct", { progress: quiet });
  const withCopy = await LoadedModel.load(source, quiet);
  assert.equal(withCopy.smallLensUnembedding(), true); // decided (and the copy made) before the variable is set
  const saved = process.env["LOGIT_LENS_LENS_FP32"];
  process.env["LOGIT_LENS_LENS_FP32"] = "0";
  try {
    const fromFile = await LoadedModel.load(source, quiet);
    assert.equal(fromFile.smallLensUnembedding(), false);
    const ids = withCopy.tokenizer.encode("The seahorse emoji is");
    const V = withCopy.config.vocabSize;
    // Narrow tiles (the last one partial) and a tracked id in the last tile: row offsets are what is checked.
    const options = { topK: 5, tracked: [V - 1, 1000], tileColumns: 5000 };
    const a = await new LogitLens(withCopy).apply(ids, options);
    const b = await new LogitLens(fromFile).apply(ids, options);
    assert.deepEqual(b.readouts, a.readouts);
    assert.deepEqual(b.final, a.final);
  } finally {
    if (saved === undefined) delete process.env["LOGIT_LENS_LENS_FP32"];
    else process.env["LOGIT_LENS_LENS_FP32"] = saved;
  }
});
