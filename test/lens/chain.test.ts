/**
 * Issue 10, item 1: a multi-token target's probability at every layer (chain product of the lens,
 * teacher-forced), and Wendler-style word token sets. The chain at the output row must be the
 * model's own sequence probability, checked against a plain forward pass over prompt + target.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { executeLensJob } from "../../src/lens/job.js";
import { parseFamily, parseTextTarget } from "../../src/lens/targets.js";
import { buildReport } from "../../src/outputs/report.js";
import { terminalView } from "../../src/outputs/terminal.js";
import { readoutHooks } from "../../src/cli/options.js";
import { createProgress } from "../../src/progress.js";
import { loadReal } from "../helpers/real-models.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });

/** log P(target | prompt) from one forward pass over prompt + target, logits in float64. */
async function sequenceLogprob(model: LoadedModel, prompt: number[], target: number[]): Promise<number> {
  const V = model.config.vocabSize;
  const run = await (await model.forward([], "all")).run([...prompt, ...target]);
  let lp = 0;
  target.forEach((id, j) => {
    const row = run.logits!.subarray((prompt.length - 1 + j) * V, (prompt.length + j) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    lp += row[id]! - max - Math.log(sum);
  });
  return lp;
}

async function checkChain(model: LoadedModel, prompt: string, targetText: string, points = "resid_post"): Promise<void> {
  const ids = model.tokenizer.encode(prompt);
  const target = parseTextTarget(model.tokenizer, targetText);
  assert.ok(target.ids.length > 1, `${targetText} should be several tokens`);
  const { hooks } = readoutHooks(points, model.config);
  const job = await executeLensJob(model, { promptIds: ids, readouts: hooks, topK: 5, variant: "logit", targets: [target], families: [] }, quiet);
  const last = job.result.positions.length - 1;
  const want = Math.exp(await sequenceLogprob(model, ids, target.ids));
  const finalChain = job.chainProbs.final[0]![last]!;
  assert.ok(Math.abs(finalChain - want) <= 1e-4 * want + 1e-9, `output chain ${finalChain} vs forward pass ${want}`);
  assert.ok(Math.abs(job.sequenceProbs[0]![last]! - want) <= 1e-4 * want + 1e-9);
  // The last resid_post readout is the final residual: its chain is the output's.
  const lastRow = job.chainProbs.layers[0]![last]!.at(-1)!;
  assert.ok(Math.abs(lastRow - finalChain) <= 1e-5 * finalChain + 1e-12);
  // Every layer: a product of probabilities, never above its first factor.
  job.result.readouts.forEach((r, ri) => {
    const chain = job.chainProbs.layers[0]![last]![ri]!;
    assert.ok(chain >= 0 && chain <= Math.exp(r.cells[last]!.trackedLogprobs[0]!) * (1 + 1e-6), `${r.hook}: chain ${chain}`);
  });
  // And it reaches the report, the terminal view and every cell of the JSON.
  const report = buildReport(model, { prompt, chat: false, job, targets: [target], families: [], topK: 5, points: [points] });
  assert.equal(report.final.positions[last]!.targets![0]!.sequence_prob, Number(finalChain.toPrecision(4)));
  for (const l of report.layers) for (const c of l.positions) assert.equal(typeof c.targets![0]!.sequence_prob, "number");
  assert.match(terminalView(report, { width: 200, color: false }), /whole-string prob [\d.e-]+ /);
}

test("whole-string probability per layer: the output row equals the model's sequence probability (real SmolLM2, ' 🐠' = 3 tokens)", { timeout: 240_000 }, async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  await checkChain(model, "Fish emoji: 🐠, horse emoji: 🐴, fish emoji:", " 🐠");
});

test("whole-string probability per layer on a tiny Gemma 2 (soft-capped logits) and sub-block readouts", { timeout: 120_000 }, async () => {
  const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(REPO_ROOT, "test/fixtures/tiny/gemma2") }, quiet);
  await checkChain(model, "The capital of France is", " Paris is nice", "resid_pre,attn_out,resid_post");
});

test("word token sets (Wendler et al.): every prefix of the word, with and without the space", async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const tok = model.tokenizer;
  const fam = parseFamily(tok, "word:horse");
  const members = [...fam.mask.keys()].filter((i) => fam.mask[i] === 1).map((i) => new TextDecoder().decode(tok.tokenBytes(i)));
  for (const m of members) assert.ok("horse".startsWith(m.replace(/^ /, "")) && m.replace(/^ /, "").length > 0, JSON.stringify(m));
  for (const want of ["horse", " horse", "h", " h", "hor"]) assert.ok(members.includes(want), `missing ${JSON.stringify(want)} in ${JSON.stringify(members)}`);
  // An emoji's first byte is a prefix of the emoji: the byte-level vocabulary's F0 token is in the set.
  const emoji = parseFamily(tok, "word:🐴");
  assert.ok([...emoji.mask.keys()].some((i) => emoji.mask[i] === 1 && tok.tokenBytes(i).length === 1 && tok.tokenBytes(i)[0] === 0xf0));
  assert.throws(() => parseFamily(tok, "word: "), /expected a word after 'word:'/);
});
