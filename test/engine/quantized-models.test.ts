/**
 * A whole model in every simple ggml type runs quantized (MatMulNBits) and gives what the same
 * file gives dequantized to fp32 (the path checked against transformers in
 * test/architectures/families.test.ts), at every hook point, in the logits and through the KV
 * cache. The tiny Llama fixture (llama.cpp's own GGUF, q/k rows permuted as llama.cpp stores them)
 * is re-quantized here (and written as F16, which stays 16-bit); the K-quants need rows of 256 and are covered by test/formats/block-quant
 * (every type, block level) and by the real Gemma 3 Q4_K_M in test/real/reference.test.ts.
 *
 * Tolerance 3e-4 x max(1, |value|): both paths use the same dequantized weights and differ only in
 * fp32 rounding, but the quantized product adds two large terms that cancel (the 4-bit planes and
 * the block mins, each up to ~8 x scale x sum|x|). Measured on an AVX-512 EPYC: 2.7e-6 (Q4_0, no
 * mins) to 4.9e-5 (Q5_1); a wrong block, scale or row is off by 1e-1 or more.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT, runCli } from "../helpers/run-cli.js";
import { requantizeGguf, requantizeGgufMixed, type SimpleQuant, type SuperBlockQuant } from "../helpers/gguf-requantize.js";
import { realModelPath } from "../helpers/real-models.js";
import { LoadedModel } from "../../src/engine/model.js";
import { allHookNames } from "../../src/architectures/forward.js";
import { unembeddingOf } from "../../src/architectures/index.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { createProgress } from "../../src/progress.js";
import { GraphBuilder } from "../../src/graph/builder.js";
import { externalBytes } from "../../src/graph/slice.js";

const quiet = createProgress({ quiet: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-quant-models-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
const SOURCE = path.join(REPO_ROOT, "test", "fixtures", "tiny", "llama", "model.gguf");

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
  return worst;
}

const PROMPT = "The capital of France is Paris, and the capital of Spain is";

/** A model's forward pass over PROMPT at `hooks` (all-position logits), then one more token through its KV cache. */
async function promptAndStep(model: LoadedModel, hooks: string[]) {
  const ids = model.tokenizer.encode(PROMPT);
  const first = await (await model.forward(hooks, "all")).run(ids);
  const step = await (await model.forward([], "last")).run([ids[3]!], first.cache);
  return { ids, hooks, first, step };
}

/** The worst relative difference of two such runs: logits, every hook, and the cached step's logits. */
function worstDifference(a: Awaited<ReturnType<typeof promptAndStep>>, b: Awaited<ReturnType<typeof promptAndStep>>): number {
  let worst = Math.max(maxRelDiff(a.first.logits!, b.first.logits!), maxRelDiff(a.step.logits!, b.step.logits!));
  for (const h of a.hooks) worst = Math.max(worst, maxRelDiff(a.first.hooks.get(h)!, b.first.hooks.get(h)!));
  return worst;
}

for (const type of ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"] as SimpleQuant[]) {
  test(`tiny Llama in ${type}: quantized run equals the dequantized run`, async (t) => {
    const file = path.join(tmp, `llama-${type}.gguf`);
    requantizeGguf(SOURCE, file, type, (name) => name.endsWith(".weight") && !name.includes("norm"));
    const source = await resolveModelSource(file, { progress: quiet });
    const quantized = await LoadedModel.load(source, quiet);
    const reference = await LoadedModel.load(source, quiet, { dequantize: true });
    for (const name of ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]) {
      assert.ok(quantized.store.isQuantized(name), `${name} stays ${type}`);
      assert.ok(!reference.store.isQuantized(name));
    }
    assert.ok(quantized.store.bytes < reference.store.bytes / 2, `quantized store ${quantized.store.bytes} B vs fp32 ${reference.store.bytes} B`);

    const hooks = allHookNames(quantized.config);
    const r = await promptAndStep(reference, hooks);
    const worst = worstDifference(await promptAndStep(quantized, hooks), r);
    t.diagnostic(`${type}: max relative difference over ${hooks.length} hook points, logits and a cached step = ${worst.toExponential(2)}`);
    assert.ok(worst <= 3e-4, `${type}: ${worst}`);
    // The weights really are the file's: the quantized model is not the fp32 fixture.
    const original = await LoadedModel.load(await resolveModelSource(SOURCE, { progress: quiet }), quiet);
    const o = await (await original.forward([], "all")).run(r.ids);
    assert.ok(maxRelDiff(o.logits!, r.first.logits!) > 1e-4, `${type} changed the weights`);
  });
}

test("real SmolLM2 with MLP down-projections in Q2_K, Q3_K and IQ4_XS: quantized run equals the dequantized run", async (t) => {
  // The super-block types need rows of 256: of SmolLM2's matrices only the down-projections (1536
  // inputs) have them. Layers take the three types in turn; the rest of the file stays as published.
  const types: SuperBlockQuant[] = ["Q2_K", "Q3_K", "IQ4_XS"];
  const file = path.join(tmp, "smollm2-superblocks.gguf");
  requantizeGgufMixed(await realModelPath("smollm2-135m-instruct"), file, (name) => {
    const layer = /^blk\.(\d+)\.ffn_down\.weight$/.exec(name);
    return layer ? types[Number(layer[1]) % types.length] : undefined;
  });
  const source = await resolveModelSource(file, { progress: quiet });
  const quantized = await LoadedModel.load(source, quiet);
  const reference = await LoadedModel.load(source, quiet, { dequantize: true });
  for (let layer = 0; layer < 3; layer++) {
    const name = `model.layers.${layer}.mlp.down_proj.weight`;
    assert.equal(quantized.store.sourceDtype(name), types[layer], `${name} is ${types[layer]} in the file`);
    assert.ok(quantized.store.isQuantized(name), `${name} stays ${types[layer]}`);
  }
  // Tolerance: 30 layers of fp32 rounding, with residual entries up to ~2e4. The published file
  // itself (Q4_1 and Q8_0) differs between its quantized and dequantized runs by up to 1.7e-3
  // (relative to max(1, |value|)) at the last layer and 1.5e-4 in the logits; with these types
  // measured 9.5e-4 and 2.0e-4. A wrong block, scale or code is off by 1e-1 or more.
  const hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post", "blocks.29.hook_resid_post"];
  const ids = quantized.tokenizer.encode(PROMPT);
  const [a, b] = [await (await quantized.forward(hooks, "all")).run(ids), await (await reference.forward(hooks, "all")).run(ids)];
  for (const h of hooks) {
    const d = maxRelDiff(a.hooks.get(h)!, b.hooks.get(h)!);
    t.diagnostic(`${h}: ${d.toExponential(2)}`);
    assert.ok(d <= (h.startsWith("blocks.29") ? 3e-3 : 2e-4), `${h}: ${d}`);
  }
  const d = maxRelDiff(a.logits!, b.logits!);
  t.diagnostic(`logits: ${d.toExponential(2)}`);
  assert.ok(d <= 5e-4, `logits: ${d}`);
  // The file is temporary: its conversions (0.1 GB, and 0.5 GB as fp32) would never be used again.
  for (const m of [quantized, reference]) fs.rmSync(m.store.dir, { recursive: true, force: true });
});

test("tiny Llama in F16: matrices stay 16-bit (cache and memory) and the run equals the fp32 one exactly", async () => {
  const file = path.join(tmp, "llama-F16.gguf");
  requantizeGguf(SOURCE, file, "F16", (name) => name.endsWith(".weight") && !name.includes("norm"));
  const source = await resolveModelSource(file, { progress: quiet });
  const half = await LoadedModel.load(source, quiet);
  const reference = await LoadedModel.load(source, quiet, { dequantize: true });
  // q_proj is stored with llama.cpp's row permutation: kept 16-bit with its rows put back.
  for (const name of ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]) {
    assert.ok(half.store.isHalf(name), `${name} stays F16`);
    assert.ok(!reference.store.isHalf(name));
  }
  // The cache holds the file's bytes, not an fp32 copy (norms are fp32 either way).
  assert.ok(half.store.bytes <= 1.1 * fs.statSync(file).size, `cache ${half.store.bytes} B vs file ${fs.statSync(file).size} B`);
  assert.ok(half.store.bytes < 0.6 * reference.store.bytes, `16-bit store ${half.store.bytes} B vs fp32 ${reference.store.bytes} B`);

  // Widening f16 to f32 is exact, and the products see the same fp32 matrices: equal up to the
  // kernels' summation order (1e-5 relative), through the KV cache too.
  const hooks = allHookNames(half.config);
  const worst = worstDifference(await promptAndStep(half, hooks), await promptAndStep(reference, hooks));
  assert.ok(worst <= 1e-5, `F16: ${worst}`);
});

test("real Gemma 3 Q4_K_M: scales and mins made per run equal those held from load, at every hook, in the logits and through the KV cache", async (t) => {
  // Big models make their quantized matrices' fp32 scales and mins from the stored codes at each
  // run (weight-store.ts scalesPerRun: 2 bits per weight less in memory); small ones fold them at
  // load. Gemma 3's file has every kind of code (Q8_0, Q5_0, Q4_K, Q6_K: fp16 scales, K-quant
  // sub-block scales and mins), so both ways are loaded here and must give the same numbers.
  const source = await resolveModelSource("gemma3-270m", { progress: quiet });
  const saved = process.env["LOGIT_LENS_SCALES_AT_LOAD"];
  const run = async (atLoad: "0" | "1") => {
    process.env["LOGIT_LENS_SCALES_AT_LOAD"] = atLoad;
    try {
      const model = await LoadedModel.load(source, quiet);
      const runs = await promptAndStep(model, allHookNames(model.config).filter((h) => h.endsWith("hook_resid_post") || h === "hook_embed"));
      const g = new GraphBuilder("probe");
      const w = model.weightsFor(g);
      const down = w.get("model.layers.0.mlp.down_proj.weight");
      g.output(g.linear(g.input("x", "float32", [1, model.config.intermediate]), down), "y");
      return { runs, inputs: g.inputs.map((v) => v.name!), held: externalBytes(g) };
    } finally {
      if (saved === undefined) delete process.env["LOGIT_LENS_SCALES_AT_LOAD"];
      else process.env["LOGIT_LENS_SCALES_AT_LOAD"] = saved;
    }
  };
  const perRun = await run("0");
  const atLoad = await run("1");
  // Per run, the codes are graph inputs (so onnxruntime cannot fold them) and the session holds less.
  assert.ok(perRun.inputs.some((n) => n.startsWith("model.layers.0.mlp.down_proj.weight.")), `code inputs: ${perRun.inputs.join(", ")}`);
  assert.deepEqual(atLoad.inputs, ["x"]);
  assert.ok(perRun.held < atLoad.held, `held per run ${perRun.held} B vs at load ${atLoad.held} B`);
  const worst = worstDifference(perRun.runs, atLoad.runs);
  t.diagnostic(`max relative difference over ${perRun.runs.hooks.length} hooks, the logits and a cached step: ${worst.toExponential(2)}`);
  // Not bit for bit: onnxruntime optimises the two graphs differently (with constant mins it
  // prepacks their product), so fp32 rounding differs (measured 2.4e-5 on an AVX-512 EPYC); a
  // wrong scale, min or row would be off by 1e-2 or more.
  assert.ok(worst <= 1e-4, `per run vs at load: ${worst}`);
});

test("--int8: the quantized products take int8 activations, the JSON says so, and the answer moves a little (real SmolLM2)", { timeout: 240_000 }, async () => {
  // The fast mode is not exact by design (llama.cpp's trade): what a user checks is that the flag
  // reaches the products (the numbers move), that a shared report says it was used, and that the
  // model still answers the same. Measured: " Paris" 77.3 % exact, 72.1 % with --int8.
  const run = async (extra: string[], name: string) => {
    const out = path.join(tmp, `${name}.json`);
    const r = await runCli(["lens", "--model", "smollm2-135m-instruct", "--prompt", "The capital of France is", "--json", "--out", out, ...extra], { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.stderr);
    return { json: JSON.parse(fs.readFileSync(out, "utf8")), stderr: r.stderr };
  };
  const exact = await run(["--quiet"], "exact");
  const int8 = await run(["--int8"], "int8");
  assert.equal(exact.json.model.int8_activations, undefined);
  assert.equal(int8.json.model.int8_activations, true);
  assert.match(int8.stderr, /int8 activations .*not exact/);
  const top = (j: { final: { positions: { top: { id: number; prob: number }[] }[] } }) => j.final.positions.at(-1)!.top[0]!;
  assert.equal(top(int8.json).id, top(exact.json).id, "same answer");
  const moved = Math.abs(top(int8.json).prob - top(exact.json).prob);
  assert.ok(moved > 1e-3 && moved < 0.2, `top-1 probability moved by ${moved}`);
});

for (const alias of ["smollm2-135m-instruct", "gemma3-270m"]) {
  test(`real ${alias}: the head (int8 dot products over exact slices of its input) gives the float64 product of the file's weights`, async (t) => {
    // The head's quantized product runs on MatMulNBits' int8 path over three exact slices of the
    // final normed residual (graph/builder.ts exactInt8Slices): for one row in "last" logits, and
    // for every row where the head is an 8-bit format stored as one byte plane (both models' Q8_0
    // heads). Checked against float64 sums of the same residual with the file's own weights
    // (dequantized as ggml does): measured 3e-7 to 1.0e-6 of the largest logit, fp32 rounding. Two
    // slices instead of three leave 2.2-2.9e-5 and fail here.
    const model = await LoadedModel.load(await resolveModelSource(alias, { progress: quiet }), quiet);
    const u = unembeddingOf(model.config);
    assert.ok(model.store.isQuantized(u.matrix), `${u.matrix} is quantized`);
    assert.equal(u.softcap, undefined, "a soft-capped head would need the cap in the reference");
    // The head really takes the int8 path.
    const g = new GraphBuilder("probe-head");
    g.linear(g.input("x", "float32", [1, model.config.hidden]), model.weightsFor(g).get(u.matrix), undefined, { fewRows: true });
    const levels = g.nodes.filter((n) => n.opType === "MatMulNBits").map((n) => n.attribute!.find((a) => a.name === "accuracy_level")!.i);
    assert.deepEqual(levels.map(Number), [4]);
    const H = model.config.hidden;
    const V = model.config.vocabSize;
    const weights = model.store.tensorF32(u.matrix).data; // [V, H]
    for (const prompt of [PROMPT, "Give me a seahorse emoji:"]) {
      const ids = model.tokenizer.encode(prompt);
      for (const mode of ["last", "all"] as const) {
        const run = await (await model.forward(["ln_final.hook_normalized"], mode)).run(ids);
        const h = run.hooks.get("ln_final.hook_normalized")!.subarray((ids.length - 1) * H, ids.length * H);
        const logits = run.logits!.subarray(mode === "all" ? (ids.length - 1) * V : 0);
        let scale = 0;
        let worst = 0;
        for (let v = 0; v < V; v++) {
          let exact = 0;
          for (let j = 0; j < H; j++) exact += weights[v * H + j]! * h[j]!;
          scale = Math.max(scale, Math.abs(exact));
          worst = Math.max(worst, Math.abs(exact - logits[v]!));
        }
        t.diagnostic(`${JSON.stringify(prompt)}, ${mode} logits: max difference from float64 ${worst.toExponential(2)} (largest logit ${scale.toFixed(1)})`);
        assert.ok(worst <= 5e-6 * scale, `${alias} ${mode}: logits differ from float64 by ${worst} (largest ${scale})`);
      }
    }
  });
}
