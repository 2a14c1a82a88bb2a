/**
 * Reference 1 on every architecture: tiny random-weight models saved by Hugging Face transformers
 * (tools/reference/make_tiny_models.py) must give the same activations at every hook point and the
 * same logits as transformers recorded (max abs error 1e-4, fp32), with and without the KV cache.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { allHookNames } from "../../src/architectures/forward.js";
import { FAMILIES } from "../../src/architectures/index.js";
import { readSafetensors } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const root = REPO_ROOT;
const fixtures = path.join(root, "test/fixtures/tiny");
const TOLERANCE = 1e-4;

interface Reference {
  prompts: string[];
  input_ids: number[][];
  hooks: string[];
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "length mismatch");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const progress = createProgress({ quiet: true });
const names = fs.readdirSync(fixtures).filter((d) => fs.existsSync(path.join(fixtures, d, "reference.json"))).sort();

test("fixtures exist for every supported architecture and variant", () => {
  const archs = new Set(names.map((n) => JSON.parse(fs.readFileSync(path.join(fixtures, n, "config.json"), "utf8")).model_type as string));
  for (const f of FAMILIES) assert.ok(f.hfModelTypes.some((t) => archs.has(t)), `no fixture for ${f.name}`);
  for (const variant of ["llama31", "mistral_nemo"]) assert.ok(names.includes(variant), `no fixture for ${variant}`);
});

for (const name of names) {
  const dir = path.join(fixtures, name);
  test(`${name}: every hook point and the logits match transformers`, async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, "reference.json"), "utf8")) as Reference;
    const refFile = readSafetensors(path.join(dir, "reference.safetensors"));
    const refTensor = (n: string) => {
      const t = refFile.tensors.find((x) => x.name === n);
      assert.ok(t, `reference lacks ${n}`);
      return readTensorF32(t);
    };
    const model = await LoadedModel.load({ kind: "hf-folder", dir }, progress);
    const hooks = allHookNames(model.config).filter((h) => ref.hooks.includes(h));
    assert.ok(hooks.length >= 5 * model.config.nLayers + 2, "reference covers the hook points");
    const forward = await model.forward(hooks, true);
    for (let i = 0; i < ref.prompts.length; i++) {
      const ids = ref.input_ids[i]!;
      assert.deepEqual(model.tokenizer.encode(ref.prompts[i]!), ids, `tokenization of prompt ${i}`);
      const out = await forward.run(ids);
      for (const h of hooks) {
        const err = maxAbsDiff(out.hooks.get(h)!, refTensor(`p${i}/${h}`));
        assert.ok(err <= TOLERANCE, `${name} prompt ${i} ${h}: max abs error ${err}`);
      }
      const err = maxAbsDiff(out.logits!, refTensor(`p${i}/logits`));
      assert.ok(err <= TOLERANCE, `${name} prompt ${i} logits: max abs error ${err}`);

      // Same result token by token through the KV cache (the path generation uses).
      const V = model.config.vocabSize;
      // LongRoPE switches to its long factors once the sequence is longer than the original
      // context (transformers decides on the whole sequence): start the cache past that point.
      const longrope = model.config.ropeLongrope;
      const first = longrope && ids.length > longrope.originalMaxPositions ? longrope.originalMaxPositions + 1 : 1;
      let cache = (await forward.run(ids.slice(0, first))).cache;
      for (let t = first; t < ids.length; t++) {
        const step = await forward.run([ids[t]!], cache);
        cache = step.cache;
        const e = maxAbsDiff(step.logits!, refTensor(`p${i}/logits`).subarray(t * V, (t + 1) * V));
        assert.ok(e <= TOLERANCE, `${name} prompt ${i} cached step ${t}: max abs error ${e}`);
      }
    }
  });

  test(`${name}: the lens at the last layer is the model's own output`, async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, "reference.json"), "utf8")) as Reference;
    const model = await LoadedModel.load({ kind: "hf-folder", dir }, progress);
    const ids = ref.input_ids[1]!;
    const logits = (await (await model.forward([], true)).run(ids)).logits!;
    const V = model.config.vocabSize;
    const lens = await new LogitLens(model).apply(ids, { topK: 5 });
    const last = lens.readouts[lens.readouts.length - 1]!;
    assert.equal(lens.readouts.length, model.config.nLayers);
    ids.forEach((_, p) => {
      const row = logits.subarray(p * V, (p + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      const lse = max + Math.log(sum);
      const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]!).slice(0, 5);
      for (const cell of [last.cells[p]!, lens.final[p]!]) {
        assert.deepEqual(cell.topIds, order, `position ${p} top-5`);
        cell.topIds.forEach((id, k) => assert.ok(Math.abs(cell.topLogprobs[k]! - (row[id]! - lse)) < 1e-4, `position ${p} logprob of ${id}`));
      }
      assert.ok(last.cells[p]!.klToFinal < 1e-5, `KL of the last layer to itself is ~0 (got ${last.cells[p]!.klToFinal})`);
    });
  });
}
