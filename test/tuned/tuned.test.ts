/**
 * The tuned lens (src/tuned/) on the tiny fixtures, with real text (the public-domain excerpt of
 * Bierce's "The Devil's Dictionary", test/fixtures/sweep/devil-excerpt.txt):
 * - the hand-written backward graph against finite differences of its own loss, for every norm
 *   the families use (RMSNorm, Gemma's (1 + w) RMSNorm with and without a logit softcap,
 *   LayerNorm), and its loss against the sweep's KL (a separate graph) under the same translator;
 * - training lowers the held-out KL below the logit lens's, seeded runs give identical files;
 * - the file round-trips, and is refused (one line, exit 2) for another model.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { createProgress } from "../../src/progress.js";
import { SweepEvaluator } from "../../src/sweep/evaluate.js";
import { loadSweepData, type SweepData } from "../../src/sweep/data.js";
import { translatorOf } from "../../src/sweep/linear.js";
import { mulberry32 } from "../../src/lens/sampling.js";
import { TunedLensGradient, trainTunedLens, type TrainedTranslators } from "../../src/tuned/train.js";
import { readTunedLens, saveTunedLens, tunedLensOf, TUNED_FORMAT } from "../../src/tuned/storage.js";
import { DEFAULT_OPTIMIZER } from "../../src/tuned/optimizer.js";
import { REPO_ROOT, runCli } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const TINY = path.join(REPO_ROOT, "test/fixtures/tiny");
const TEXT = path.join(REPO_ROOT, "test/fixtures/sweep/devil-excerpt.txt");
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "ll-tuned-"));
const load = (family: string) => LoadedModel.load({ kind: "hf-folder", dir: path.join(TINY, family) }, quiet);

function gaussian(n: number, seed: number, scale: number): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return out;
}

/** Mean KL per layer of a translator over `data`'s prompts, from the sweep graph (not the training graph). */
async function sweepKl(model: LoadedModel, data: SweepData, t?: TrainedTranslators): Promise<number[]> {
  const L = model.config.nLayers;
  const lens = t ? [{ name: "tuned", translator: translatorOf(tunedLensOf(model, t, { optimizer: { ...DEFAULT_OPTIMIZER, steps: 1 }, windowsPerStep: 1, seed: 0, log: null }, TEXT, data, 16), L) }] : [{ name: "logit" }];
  const ev = new SweepEvaluator(model);
  const sums = new Array<number>(L - 1).fill(0);
  let n = 0;
  for (let i = 0; i < data.count; i++) {
    const ids = data.prompt(i).ids;
    const [e] = await ev.evaluate({ ids, positions: ids.map((_, k) => k), tracked: [], families: [] }, lens);
    for (let l = 0; l < L - 1; l++) for (const v of e!.kl[l]!) sums[l] += v;
    n += ids.length;
  }
  return sums.map((s) => s / n);
}

test("backward graph: gradient equals finite differences of the loss; loss equals the sweep's KL", async () => {
  for (const family of ["llama", "gemma2", "gemma3", "gpt2"]) {
    const model = await load(family);
    const H = model.config.hidden;
    const R = model.config.nLayers - 1;
    const data = loadSweepData(TEXT, model.tokenizer, { window: 16, limit: 2 });
    const g = new TunedLensGradient(model);
    const batch = await g.residuals([data.prompt(0).ids, data.prompt(1).ids]);
    // A point away from the identity, so every term of the norm's backward pass matters.
    const weight = gaussian(R * H * H, 1, 0.05);
    const bias = gaussian(R * H, 2, 0.3);
    const at = await g.lossAndGradient(batch.resid, batch.tokens, weight, bias);

    // The loss is the mean KL the sweep reports for the same affine maps.
    const t: TrainedTranslators = { hidden: H, nLayers: R + 1, weight, bias, lossHistory: [], firstLoss: [], lastLoss: [], tokens: 0, seconds: 0 };
    const viaSweep = await sweepKl(model, { ...data, count: 2 }, t);
    for (let r = 0; r < R; r++) assert.ok(Math.abs(at.loss[r]! - viaSweep[r]!) <= 2e-4 * Math.max(1, viaSweep[r]!), `${family} layer ${r}: loss ${at.loss[r]} vs sweep KL ${viaSweep[r]}`);

    // Directional derivatives along random directions (central differences).
    for (const seed of [10, 11, 12]) {
      const dW = gaussian(weight.length, seed, 1);
      const dB = gaussian(bias.length, seed + 100, 1);
      const eps = 1e-3;
      const shifted = async (sign: number) => {
        const w2 = weight.map((v, i) => v + sign * eps * dW[i]!);
        const b2 = bias.map((v, i) => v + sign * eps * dB[i]!);
        const o = await g.lossAndGradient(batch.resid, batch.tokens, w2, b2);
        return o.loss.reduce((a, b) => a + b, 0);
      };
      const numeric = ((await shifted(1)) - (await shifted(-1))) / (2 * eps);
      let analytic = 0;
      for (let i = 0; i < dW.length; i++) analytic += at.gradWeight[i]! * dW[i]!;
      for (let i = 0; i < dB.length; i++) analytic += at.gradBias[i]! * dB[i]!;
      assert.ok(Math.abs(numeric - analytic) <= 0.02 * Math.abs(analytic) + 1e-3, `${family} direction ${seed}: finite differences ${numeric} vs gradient ${analytic}`);
    }
    // And single bias coordinates (the largest gradient entries), each on its own.
    const order = [...at.gradBias.keys()].sort((a, b) => Math.abs(at.gradBias[b]!) - Math.abs(at.gradBias[a]!)).slice(0, 3);
    for (const k of order) {
      const eps = 1e-2;
      const loss = async (delta: number) => {
        const b2 = Float32Array.from(bias);
        b2[k] += delta;
        return (await g.lossAndGradient(batch.resid, batch.tokens, weight, b2)).loss.reduce((a, b) => a + b, 0);
      };
      const numeric = ((await loss(eps)) - (await loss(-eps))) / (2 * eps);
      assert.ok(Math.abs(numeric - at.gradBias[k]!) <= 0.03 * Math.abs(at.gradBias[k]!) + 1e-4, `${family} bias[${k}]: ${numeric} vs ${at.gradBias[k]}`);
    }
  }
});

test("training lowers held-out KL below the logit lens; same seed, same lens; file round-trips", async () => {
  const model = await load("gemma3"); // 3 layers: two translators
  const all = loadSweepData(TEXT, model.tokenizer, { window: 16 });
  const heldCount = 3;
  const train: SweepData = { ...all, count: all.count - heldCount, prompt: (i) => all.prompt(i + heldCount) };
  const held: SweepData = { ...all, count: heldCount };
  const settings = { optimizer: { ...DEFAULT_OPTIMIZER, steps: 30 }, windowsPerStep: 2, seed: 7, log: null };
  const t = await trainTunedLens(model, train, settings);
  assert.ok(t.lossHistory.at(-1)! < t.lossHistory[0]!, `training KL ${t.lossHistory[0]} -> ${t.lossHistory.at(-1)}`);
  const logit = await sweepKl(model, held);
  const tuned = await sweepKl(model, held, t);
  tuned.forEach((v, l) => assert.ok(v < logit[l]!, `layer ${l}: held-out KL tuned ${v} vs logit ${logit[l]}`));

  const again = await trainTunedLens(model, train, settings);
  assert.deepEqual(again.weight, t.weight, "same seed and data: identical translators");
  assert.deepEqual(again.bias, t.bias);
  const other = await trainTunedLens(model, train, { ...settings, seed: 8, optimizer: { ...settings.optimizer, steps: 2 } });
  assert.notDeepEqual(other.bias, t.bias.map(() => 0), "a trained bias moved from zero");

  const dir = tmp();
  const file = path.join(dir, "lens.safetensors");
  const lens = tunedLensOf(model, t, settings, TEXT, train, 16);
  await saveTunedLens(file, lens);
  const back = readTunedLens(file, model);
  assert.equal(back.metadata["format"], TUNED_FORMAT);
  assert.equal(back.metadata["steps"], "30");
  assert.equal(back.metadata["seed"], "7");
  assert.equal(back.metadata["model_name"], model.info.name);
  assert.match(back.metadata["model_sha256"]!, /^[0-9a-f]{64}$/);
  back.weights.forEach((w, l) => assert.deepEqual(w, lens.weights[l]));
  back.biases.forEach((b, l) => assert.deepEqual(b, lens.biases[l]));
  // The stored map is the whole affine map: identity plus the trained A^T.
  const H = model.config.hidden;
  assert.ok(Math.abs(back.weights[0]![0]! - (1 + t.weight[0]!)) < 1e-6);
  assert.equal(back.weights[0]![1 * H + 0], t.weight[0 * H + 1]);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("CLI: tuned train, lens --lens tuned:, sweep --lens tuned:, another model refused", { timeout: 120_000 }, async () => {
  const dir = tmp();
  const file = path.join(dir, "llama.safetensors");
  const llama = path.join(TINY, "llama");
  const tr = await runCli(["tuned", "train", "--model", llama, "--data", TEXT, "--window", "16", "--steps", "4", "--out", file, "--quiet"], { timeoutMs: 60_000 });
  assert.equal(tr.code, 0, tr.stderr);
  assert.match(tr.stdout, /wrote .*llama\.safetensors: tuned lens for .*1 translators, 4 steps/);

  const lens = await runCli(["lens", "--model", llama, "--prompt", "The devil is", "--lens", `tuned:${file}`, "--json", "--quiet"], { timeoutMs: 60_000 });
  assert.equal(lens.code, 0, lens.stderr);
  const report = JSON.parse(lens.stdout) as { lens: { description: string; translator?: string } };
  assert.match(report.lens.description, /^Tuned lens/);
  assert.equal(report.lens.translator, "tuned");
  const shown = await runCli(["lens", "--model", llama, "--prompt", "The devil is", "--lens", `tuned:${file}`, "--quiet"], { timeoutMs: 60_000 });
  assert.match(shown.stdout, /· tuned lens ·/, "the terminal view names the tuned lens");

  const out = path.join(dir, "eval");
  const sw = await runCli(["sweep", "--model", llama, "--data", TEXT, "--window", "16", "--limit", "2", "--metrics", "kl", "--lens", `logit,tuned:${file}`, "--bootstrap", "10", "--out", out, "--quiet"], { timeoutMs: 60_000 });
  assert.equal(sw.code, 0, sw.stderr);
  const summary = JSON.parse(fs.readFileSync(path.join(out, "summary.json"), "utf8")) as { lenses: { name: string }[] };
  assert.deepEqual(summary.lenses.map((l) => l.name), ["logit", "tuned"]);

  const evalDir = path.join(dir, "tuned-eval");
  const ev = await runCli(["tuned", "eval", "--model", llama, "--data", TEXT, "--window", "16", "--limit", "3", "--lens", `tuned:${file}`, "--bootstrap", "10", "--out", evalDir, "--quiet"], { timeoutMs: 60_000 });
  assert.equal(ev.code, 0, ev.stderr);
  const table = fs.readFileSync(path.join(evalDir, "table.md"), "utf8");
  assert.match(table, /\| layer \| KL logit \| KL tuned \| CE logit \| CE tuned \|/);
  assert.match(table, /^\| 1 \| 0\.00 \[0\.00, 0\.00\] \| 0\.00 /m, "the last layer is the output: KL 0 for both");
  assert.deepEqual([...fs.readFileSync(path.join(evalDir, "figure.png")).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);

  // Same shape, other weights: refused by hash. Other shape: refused by shape.
  for (const [model, why] of [[path.join(TINY, "llama_untied"), /was trained on .*not on this model/], [path.join(TINY, "gemma3"), /was made for a model with 2 layers x 64 wide/]] as const) {
    const bad = await runCli(["lens", "--model", model, "--prompt", "The devil is", "--lens", `tuned:${file}`, "--quiet"], { timeoutMs: 60_000 });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, why);
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});
