/**
 * The lens as users drive it: readout points, positions, tracked targets and families, generation
 * (determinism, KV cache agreeing with a full recompute), and the text outputs (terminal, CSV).
 * Mostly on the tiny fixtures (fast); the emoji checks on the real SmolLM2.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { executeLensJob, type LensJob } from "../../src/lens/job.js";
import { parseFamily, parseTextTarget } from "../../src/lens/targets.js";
import { buildReport } from "../../src/outputs/report.js";
import { terminalView, displayWidth } from "../../src/outputs/terminal.js";
import { toCsv } from "../../src/outputs/csv.js";
import { compactReport, expandReport } from "../../src/outputs/compact.js";
import { readoutHooks, parsePositions } from "../../src/cli/options.js";
import { createProgress } from "../../src/progress.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { UserError } from "../../src/errors.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const root = REPO_ROOT;
const quiet = createProgress({ quiet: true });
const tiny = (name: string) => LoadedModel.load({ kind: "hf-folder", dir: path.join(root, "test/fixtures/tiny", name) }, quiet);

function job(model: LoadedModel, promptIds: number[], extra: Partial<LensJob> = {}): LensJob {
  return { promptIds, readouts: readoutHooks(undefined, model.config).hooks, topK: 5, variant: "logit", targets: [], families: [], ...extra };
}

test("readout points: resid_pre of block l+1 reads the same residual as resid_post of block l", async () => {
  const model = await tiny("llama");
  const { hooks, points } = readoutHooks("resid_pre,attn_out,resid_mid,mlp_out,resid_post,embed", model.config);
  assert.deepEqual(points.sort(), ["attn_out", "embed", "mlp_out", "resid_mid", "resid_post", "resid_pre"]);
  assert.equal(hooks.length, 1 + 5 * model.config.nLayers);
  assert.equal(hooks[0], "hook_embed");
  const ids = model.tokenizer.encode("The capital of France is Paris");
  const result = await new LogitLens(model).apply(ids, { readouts: hooks, topK: 5 });
  const byHook = new Map(result.readouts.map((r) => [r.hook, r]));
  for (let p = 0; p < ids.length; p++) {
    assert.deepEqual(byHook.get("blocks.1.hook_resid_pre")!.cells[p]!.topIds, byHook.get("blocks.0.hook_resid_post")!.cells[p]!.topIds);
    assert.deepEqual(byHook.get("blocks.0.hook_resid_pre")!.cells[p]!.topIds, byHook.get("hook_embed")!.cells[p]!.topIds);
  }
  assert.throws(() => readoutHooks("resid_post,bogus", model.config), (e) => e instanceof UserError && /unknown --points name 'bogus'/.test(e.message));
});

test("positions: a subset reads exactly the cells of a full run; bad positions are refused", async () => {
  const model = await tiny("qwen2");
  const ids = model.tokenizer.encode("The capital of France is Paris. The capital of Italy is");
  const positions = parsePositions("0,2-3,-1", ids.length)!;
  assert.deepEqual(positions, [0, 2, 3, ids.length - 1]);
  const lens = new LogitLens(model);
  const full = await lens.apply(ids, { topK: 5 });
  const part = await lens.apply(ids, { topK: 5, positions });
  part.readouts.forEach((r, i) =>
    positions.forEach((p, j) => {
      assert.deepEqual(r.cells[j]!.topIds, full.readouts[i]!.cells[p]!.topIds);
      assert.ok(Math.abs(r.cells[j]!.klToFinal - full.readouts[i]!.cells[p]!.klToFinal) < 1e-5);
    }),
  );
  assert.throws(() => parsePositions(String(ids.length), ids.length), UserError);
  assert.throws(() => parsePositions("3-1", ids.length), UserError);
});

test("tracked targets: rank and probability agree with the top-k; variants differ", async () => {
  const model = await tiny("gemma2");
  const ids = model.tokenizer.encode("Fish emoji: 🐠");
  const lens = new LogitLens(model);
  const first = await lens.apply(ids, { topK: 5 });
  const trackedId = first.readouts[0]!.cells[1]!.topIds[2]!; // third-ranked token at layer 0, position 1
  const result = await lens.apply(ids, { topK: 5, tracked: [trackedId, 7] });
  for (const r of result.readouts) {
    r.cells.forEach((c) => {
      const k = c.topIds.indexOf(trackedId);
      if (k >= 0) {
        assert.equal(c.trackedRanks[0], k);
        assert.ok(Math.abs(c.trackedLogprobs[0]! - c.topLogprobs[k]!) < 1e-5);
      } else assert.ok(c.trackedRanks[0]! >= 5);
    });
  }
  assert.equal(result.readouts[0]!.cells[1]!.trackedRanks[0], 2);
  const raw = await lens.apply(ids, { topK: 5, variant: "raw" });
  const differs = raw.readouts.some((r, i) => r.cells.some((c, p) => Math.abs(c.entropy - result.readouts[i]!.cells[p]!.entropy) > 1e-3));
  assert.ok(differs, "the raw unembedding reads differently from the logit lens");
  // The model's own output does not depend on the variant.
  raw.final.forEach((c, p) => assert.deepEqual(c.topIds, result.final[p]!.topIds));
});

test("generation: greedy and seeded sampling are deterministic, and the cached lens equals a full recompute", async () => {
  const model = await tiny("llama");
  const promptIds = model.tokenizer.encode("The capital of France is");
  const gen = (seed: number, temperature: number) =>
    executeLensJob(model, job(model, promptIds, { generate: { maxNewTokens: 8, sampling: { temperature, topP: 0.9, seed }, stopIds: [] } }), quiet);
  const a = await gen(7, 1.0);
  const b = await gen(7, 1.0);
  const c = await gen(8, 1.0);
  assert.deepEqual(a.ids, b.ids, "same seed, same tokens");
  assert.equal(a.ids.length, promptIds.length + 8);
  assert.equal(a.stopReason, "max-new-tokens");
  assert.notDeepEqual(a.ids, c.ids, "another seed samples other tokens (8 draws at temperature 1)");
  const greedy = await gen(0, 0);
  // Greedy: each generated token is the output's top-1 at the previous position.
  for (let i = promptIds.length; i < greedy.ids.length; i++) {
    const cell = greedy.result.final[greedy.result.positions.indexOf(i - 1)]!;
    assert.equal(greedy.ids[i], cell.topIds[0]);
  }
  // The lens read step by step through the KV cache equals the lens over the whole text at once.
  const whole = await new LogitLens(model).apply(greedy.ids.slice(0, -1), { topK: 5 });
  greedy.result.readouts.forEach((r, i) =>
    r.cells.forEach((cell, j) => {
      const p = greedy.result.positions[j]!;
      assert.deepEqual(cell.topIds, whole.readouts[i]!.cells[p]!.topIds, `layer ${i} position ${p}`);
      cell.topLogprobs.forEach((lp, k) => assert.ok(Math.abs(lp - whole.readouts[i]!.cells[p]!.topLogprobs[k]!) < 1e-4));
    }),
  );
});

test("generation stops at a stop token and keeps it", async () => {
  const model = await tiny("llama");
  const promptIds = model.tokenizer.encode("The capital of France is");
  const free = await executeLensJob(model, job(model, promptIds, { generate: { maxNewTokens: 6, sampling: { temperature: 0, topP: 1, seed: 0 }, stopIds: [] } }), quiet);
  const stopAt = free.ids[promptIds.length + 2]!;
  const stopped = await executeLensJob(model, job(model, promptIds, { generate: { maxNewTokens: 6, sampling: { temperature: 0, topP: 1, seed: 0 }, stopIds: [stopAt] } }), quiet);
  assert.equal(stopped.stopReason, "stop-token");
  assert.equal(stopped.ids[stopped.ids.length - 1], stopAt);
  assert.ok(stopped.ids.length <= promptIds.length + 3);
});

test("real SmolLM2: an emoji target is followed through all its tokens and outputs show it whole", async () => {
  const model = await LoadedModel.load(await resolveModelSource("smollm2-135m-instruct", { progress: quiet }), quiet);
  const tok = model.tokenizer;
  const horse = parseTextTarget(tok, " 🐴");
  assert.deepEqual(horse.ids.map((id) => tok.tokenString(id)).join(""), "ĠðŁĲ´");
  const emoji = parseFamily(tok, "emoji");
  assert.ok(emoji.size >= 5 && emoji.mask[horse.ids[0]!] === 1, "the family holds the emoji-prefix token");
  assert.throws(() => parseFamily(tok, "contains:qqqqzzzz"), UserError);
  const promptIds = tok.encode("Fish emoji: 🐠, horse emoji:");
  const jobResult = await executeLensJob(model, job(model, promptIds, { topK: 5, targets: [horse], families: [emoji] }), quiet);
  const last = jobResult.result.positions.length - 1;
  const out = jobResult.result.final[last]!;
  // One-token evidence: the first token's output probability bounds the whole-sequence probability.
  assert.ok(jobResult.sequenceProbs[0]![last]! <= Math.exp(out.trackedLogprobs[0]!) + 1e-9);
  assert.ok(jobResult.sequenceProbs[0]![last]! > 0);
  // The family's mass includes the tracked prefix token.
  assert.ok(out.familyProbs[0]! >= Math.exp(out.trackedLogprobs[0]!) - 1e-6);

  const report = buildReport(model, { prompt: "Fish emoji: 🐠, horse emoji:", chat: false, job: jobResult, targets: [horse], families: [emoji], topK: 5, points: ["resid_post"] });
  assert.equal(report.text, "Fish emoji: 🐠, horse emoji:");
  assert.ok(report.spans.some((s) => s.text === "🐠" && s.tokens[1] > s.tokens[0]), "the fish is reassembled from several tokens");
  assert.ok(!JSON.stringify(report).includes("\ufffd"), "no U+FFFD anywhere in the report");
  assert.equal(report.layers.length, 30);
  assert.equal(report.targets[0]!.tokens.length, horse.ids.length);

  const plain = terminalView(report, { width: 100, color: false });
  assert.ok(!plain.includes("\x1b["), "no escape codes without colour");
  for (const line of plain.split("\n").filter((l) => l.startsWith("L") || l.startsWith("output"))) assert.ok(displayWidth(line) <= 100, `fits 100 columns: ${line}`);
  assert.match(plain, /^L29 /m);
  assert.match(plain, /Fish emoji: 🐠/);
  const coloured = terminalView(report, { width: 100, color: true });
  assert.match(coloured, /\x1b\[48;5;\d+m/);

  // The compact JSON holds the same information in about a third of the bytes.
  const compact = compactReport(report);
  assert.deepEqual(expandReport(JSON.parse(JSON.stringify(compact))), JSON.parse(JSON.stringify(report)));
  const ratio = JSON.stringify(compact).length / JSON.stringify(report).length;
  assert.ok(ratio < 0.6, `compact is ${ratio.toFixed(2)} of the full size`);

  const csv = toCsv(report).trim().split("\n");
  assert.equal(csv.length, 1 + (30 + 1) * promptIds.length * 5, "one row per readout x position x rank, plus the header");
  assert.match(csv[0]!, /^hook,layer,point,position,input_token,rank,token_id/);
  // The model's own prediction is named as in the JSON: hook and point "final", layer n_layers.
  const finalRows = csv.filter((l) => l.startsWith("final,"));
  assert.equal(finalRows.length, promptIds.length * 5);
  assert.ok(finalRows.every((l) => l.startsWith(`final,${report.model.n_layers},final,`)));
  assert.ok(!csv.some((l) => l.startsWith("output,")));
});
