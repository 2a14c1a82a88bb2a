/**
 * The tuned lens on the real default model (SmolLM2-135M-Instruct), bounded to about a minute: a
 * few training steps (tuned-lens's optimiser) on 32-token windows of real prose already put the
 * held-out KL below the logit lens's at every layer, measured by the sweep's graph (not the
 * training graph). docs/tuned-lens.md has the full-length runs on both real models.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SweepEvaluator } from "../../src/sweep/evaluate.js";
import { loadSweepData, type SweepData } from "../../src/sweep/data.js";
import { translatorOf } from "../../src/sweep/linear.js";
import { trainTunedLens } from "../../src/tuned/train.js";
import { tunedLensOf } from "../../src/tuned/storage.js";
import { DEFAULT_OPTIMIZER } from "../../src/tuned/optimizer.js";
import { loadReal } from "../helpers/real-models.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const TEXT = path.join(REPO_ROOT, "test/fixtures/sweep/devil-excerpt.txt");

test("tuned lens on SmolLM2: a few steps put held-out KL below the logit lens at every layer", { timeout: 240_000 }, async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const all = loadSweepData(TEXT, model.tokenizer, { window: 32 });
  const held: SweepData = { ...all, count: 2 };
  const train: SweepData = { ...all, count: all.count - 2, prompt: (i) => all.prompt(i + 2) };
  const settings = { optimizer: { ...DEFAULT_OPTIMIZER, steps: 4 }, windowsPerStep: 2, seed: 0, log: null };
  const t = await trainTunedLens(model, train, settings);
  const L = model.config.nLayers;
  const tuned = translatorOf(tunedLensOf(model, t, settings, TEXT, train, 32), L);
  const ev = new SweepEvaluator(model);
  const sums = { logit: new Array<number>(L - 1).fill(0), tuned: new Array<number>(L - 1).fill(0) };
  for (let i = 0; i < held.count; i++) {
    const ids = held.prompt(i).ids;
    const evs = await ev.evaluate({ ids, positions: ids.map((_, k) => k), tracked: [], families: [] }, [{ name: "logit" }, { name: "tuned", translator: tuned }]);
    for (const e of evs) for (let l = 0; l < L - 1; l++) for (const v of e.kl[l]!) sums[e.lens as "logit" | "tuned"][l] += v;
  }
  for (let l = 0; l < L - 1; l++) assert.ok(sums.tuned[l]! < sums.logit[l]!, `layer ${l}: held-out KL sum tuned ${sums.tuned[l]} vs logit ${sums.logit[l]}`);
  assert.ok(t.lossHistory.at(-1)! < t.lossHistory[0]!, `training KL ${t.lossHistory.join(", ")}`);
});
