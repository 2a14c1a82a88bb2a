/**
 * GGUF files written by llama.cpp's own converter (convert_hf_to_gguf.py of the llama.cpp source
 * node-llama-cpp ships, run by tools/reference/convert_tiny_gguf.py) from the tiny transformers
 * fixtures: each must read exactly like its Hugging Face folder. Same configuration, same
 * tokenization, every hook point and the logits within 1e-4 of transformers (with and without the
 * KV cache), and within 1e-5 of our own run of the folder: so the GGUF reading of every family is
 * tested against the files llama.cpp itself writes, not against our idea of them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { allHookNames } from "../../src/architectures/forward.js";
import { readSafetensors } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const root = REPO_ROOT;
const fixtures = path.join(root, "test/fixtures/tiny");
const progress = createProgress({ quiet: true });

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "length mismatch");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const names = fs.readdirSync(fixtures).filter((d) => fs.existsSync(path.join(fixtures, d, "model.gguf"))).sort();

test("llama.cpp converted every tiny fixture whose tokenizer it can read", () => {
  // Gemma's fixtures have a tokenizer.json only; llama.cpp's Gemma converter needs a sentencepiece tokenizer.model.
  const all = fs.readdirSync(fixtures).filter((d) => fs.existsSync(path.join(fixtures, d, "config.json")) && !d.startsWith("gemma"));
  for (const n of all) assert.ok(names.includes(n), `no model.gguf for ${n}`);
});

for (const name of names) {
  const dir = path.join(fixtures, name);
  test(`${name}: llama.cpp's GGUF reads exactly like the Hugging Face folder`, async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, "reference.json"), "utf8")) as { prompts: string[]; input_ids: number[][]; hooks: string[] };
    const refFile = readSafetensors(path.join(dir, "reference.safetensors"));
    const refTensor = (n: string) => readTensorF32(refFile.tensors.find((x) => x.name === n)!);
    const gguf = await LoadedModel.load({ kind: "gguf", path: path.join(dir, "model.gguf") }, progress);
    const hf = await LoadedModel.load({ kind: "hf-folder", dir }, progress);

    // The same model description, whichever file it came from (rotary scaling may be stored as
    // parameters in one and as per-frequency factors in the other: compare the frequencies).
    const { ropeLlama3: _a, ropeFreqFactors: _b, ropeLocalTheta: _c, ...fromGguf } = gguf.config;
    const { ropeLlama3: _d, ropeFreqFactors: _e, ropeLocalTheta: _f, ...fromHf } = hf.config;
    // GGUF stores floats as float32. llama.cpp writes a Mistral as a "llama" GGUF and drops its
    // sliding window (4096 or none here, longer than every prompt, so it changes nothing below).
    const normalise = (c: typeof fromHf) =>
      hf.config.architecture === "mistral" ? { ...c, architecture: "llama", layerTypes: c.layerTypes.map(() => "full"), slidingWindow: undefined, normEps: Math.fround(c.normEps) } : { ...c, normEps: Math.fround(c.normEps) };
    assert.deepEqual(normalise(fromGguf), normalise(fromHf));
    assert.ok(maxAbsDiff(gguf.invFreqGlobal, hf.invFreqGlobal) < 1e-6, "rotary frequencies");

    const hooks = allHookNames(gguf.config).filter((h) => ref.hooks.includes(h));
    const fg = await gguf.forward(hooks, true);
    const fh = await hf.forward(hooks, true);
    let worstRef = 0;
    let worstHf = 0;
    for (let i = 0; i < ref.prompts.length; i++) {
      const ids = ref.input_ids[i]!;
      assert.deepEqual(gguf.tokenizer.encode(ref.prompts[i]!), ids, `GGUF tokenizer on prompt ${i}`);
      const a = await fg.run(ids);
      const b = await fh.run(ids);
      for (const h of [...hooks, "logits"]) {
        const got = h === "logits" ? a.logits! : a.hooks.get(h)!;
        const errRef = maxAbsDiff(got, refTensor(`p${i}/${h}`));
        const errHf = maxAbsDiff(got, h === "logits" ? b.logits! : b.hooks.get(h)!);
        worstRef = Math.max(worstRef, errRef);
        worstHf = Math.max(worstHf, errHf);
        assert.ok(errRef <= 1e-4, `${name} GGUF prompt ${i} ${h}: ${errRef} from transformers`);
        assert.ok(errHf <= 1e-5, `${name} GGUF prompt ${i} ${h}: ${errHf} from the HF folder`);
      }
      // Token by token through the KV cache.
      const V = gguf.config.vocabSize;
      const longrope = gguf.config.ropeLongrope; // see families.test.ts
      const first = longrope && ids.length > longrope.originalMaxPositions ? longrope.originalMaxPositions + 1 : 1;
      let cache = (await fg.run(ids.slice(0, first))).cache;
      for (let t = first; t < ids.length; t++) {
        const step = await fg.run([ids[t]!], cache);
        cache = step.cache;
        const e = maxAbsDiff(step.logits!, refTensor(`p${i}/logits`).subarray(t * V, (t + 1) * V));
        assert.ok(e <= 1e-4, `${name} GGUF prompt ${i} cached step ${t}: ${e}`);
      }
    }
    console.log(`# ${name} GGUF: max abs error ${worstRef.toExponential(1)} from transformers, ${worstHf.toExponential(1)} from the HF folder`);
  });
}
