/**
 * Reference 1 on the two real models: transformers (tools/reference/make_real_references.py) loaded
 * the same GGUF files dequantized to fp32 and recorded, for a plain prompt, an emoji prompt and a
 * chat-templated prompt: the token ids, the logit-lens top-5 at every layer and position, and the
 * final logits at the last position. We must tokenize identically, agree on every layer's top-1
 * lens token at every position, and give final logits within 1e-3 (relative to their scale). And,
 * from the llama.cpp test's prompts (next_token.*), the model's next-token distribution at every
 * position within KL 1e-3 of transformers' (issue 7).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { unembeddingOf } from "../../src/architectures/index.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { readSafetensors } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";
import { klDivergence, logSoftmax } from "../helpers/distributions.js";

const root = REPO_ROOT;
const quiet = createProgress({ quiet: true });

interface RefPrompt {
  kind: "plain" | "chat";
  text: string;
  messages: { role: string; content: string }[] | null;
  input_ids: number[];
  lens_top1: number[][];
  final_top20: number[][];
  full_last_logits_stored: boolean;
}

for (const alias of ["smollm2-135m-instruct", "gemma3-270m"]) {
  test(`${alias}: tokens, every layer's top-1 lens token and the final logits match transformers`, async (t) => {
    const dir = path.join(root, "test/fixtures/real", alias);
    const ref = JSON.parse(fs.readFileSync(path.join(dir, "reference.json"), "utf8")) as { prompts: RefPrompt[]; num_layers: number };
    const tensors = readSafetensors(path.join(dir, "reference.safetensors")).tensors;
    const refTensor = (name: string) => readTensorF32(tensors.find((t) => t.name === name) ?? assert.fail(`reference lacks ${name}`));
    const model = await LoadedModel.load(await resolveModelSource(alias, { progress: quiet }), quiet);
    const lens = new LogitLens(model);
    const forward = await model.forward([], "last");
    const L = model.config.nLayers;
    assert.equal(L, ref.num_layers);

    let cells = 0;
    let nearTies = 0;
    for (const [i, prompt] of ref.prompts.entries()) {
      const ids = prompt.kind === "chat"
        ? model.tokenizer.encodeChat(prompt.messages!, { addGenerationPrompt: true })
        : model.tokenizer.encode(prompt.text);
      assert.deepEqual(ids, prompt.input_ids, `${alias} prompt ${i}: token ids`);

      const result = await lens.apply(ids, { topK: 5 });
      const refLogits = refTensor(`p${i}/lens_top5_logits`); // [L, T, 5]
      const refIds = prompt.lens_top1;
      for (let l = 0; l < L; l++) {
        for (let p = 0; p < ids.length; p++) {
          cells++;
          const ours = result.readouts[l]!.cells[p]!;
          if (ours.topIds[0] === refIds[l]![p]) continue;
          // Only a near-tie may differ: our top-1 must be their runner-up with a logit within 1e-3.
          const k = (l * ids.length + p) * 5;
          const gap = refLogits[k]! - refLogits[k + 1]!;
          assert.ok(gap < 1e-3 && ours.topIds[1] === refIds[l]![p], `${alias} prompt ${i} layer ${l} position ${p}: top-1 ${ours.topIds[0]} vs ${refIds[l]![p]} (their gap ${gap})`);
          nearTies++;
        }
      }
      // The full last-position logits where stored (they are 1 MB for a 262k vocabulary), else the top 20.
      const mine = (await forward.run(ids)).logits!;
      let scale = 0;
      let err = 0;
      if (prompt.full_last_logits_stored) {
        const theirs = refTensor(`p${i}/last_logits`);
        for (let v = 0; v < theirs.length; v++) {
          scale = Math.max(scale, Math.abs(theirs[v]!));
          err = Math.max(err, Math.abs(theirs[v]! - mine[v]!));
        }
      } else {
        const T = ids.length;
        const top = refTensor(`p${i}/top20_logits`).subarray((T - 1) * 20, T * 20);
        prompt.final_top20[T - 1]!.forEach((id, k) => {
          scale = Math.max(scale, Math.abs(top[k]!));
          err = Math.max(err, Math.abs(top[k]! - mine[id]!));
        });
      }
      assert.ok(err / scale <= 1e-3, `${alias} prompt ${i}: final logits differ by ${err} (scale ${scale})`);
      t.diagnostic(`prompt ${i}: final logits max abs difference ${err.toExponential(2)} (scale ${scale.toFixed(1)})`);
    }
    t.diagnostic(`${cells} layer x position cells, ${nearTies} near-ties where the top-1 differs`);
    assert.ok(nearTies <= cells * 0.01, `${nearTies} near-ties out of ${cells} cells`);
  });
}

interface NextTokenPrompt {
  name: string;
  input_ids: number[];
  top_ids: number[];
  top_logprobs: number[];
}

for (const alias of ["smollm2-135m-instruct", "gemma3-270m"]) {
  test(`${alias}: the model's next-token distribution at every position is within KL 1e-3 of transformers'`, async (t) => {
    // Issue 7: KL(transformers || ours) <= 1e-3 at every position. Storing transformers' whole
    // distribution at every position would take megabytes (a 262k vocabulary), so the reference
    // (tools/reference/make_real_references.py --next-token) stores its final normed residual at
    // every position, and the distribution is rebuilt here in float64 with the file's own head
    // (the same dequantized weights transformers multiplies). The rebuilding is checked against the
    // stored float64 log-probabilities of transformers' own logits at the last position.
    const dir = path.join(root, "test/fixtures/real", alias);
    const ref = JSON.parse(fs.readFileSync(path.join(dir, "next_token.json"), "utf8")) as { prompts: NextTokenPrompt[] };
    const tensors = readSafetensors(path.join(dir, "next_token.safetensors")).tensors;
    const refTensor = (name: string) => readTensorF32(tensors.find((x) => x.name === name) ?? assert.fail(`next_token.safetensors lacks ${name}: regenerate with tools/reference/make_real_references.py --next-token`));
    const model = await LoadedModel.load(await resolveModelSource(alias, { progress: quiet }), quiet);
    const u = unembeddingOf(model.config);
    assert.equal(u.softcap, undefined, "a soft-capped head would need the cap in the rebuilt reference");
    const H = model.config.hidden;
    const V = model.config.vocabSize;
    const W = model.store.tensorF32(u.matrix).data; // [V, H]
    const forward = await model.forward([], true);
    let positions = 0;
    let worst = 0;
    let worstAt = "";
    let rebuildError = 0;
    for (const [i, prompt] of ref.prompts.entries()) {
      const ids = prompt.input_ids;
      const T = ids.length;
      const hidden = refTensor(`q${i}/final_hidden`);
      assert.equal(hidden.length, T * H, `q${i}/final_hidden is [${T}, ${H}]`);
      const ours = (await forward.run(ids)).logits!;
      // Every position's logits, one row of the head at a time (read once for all positions).
      const refLogits = new Float64Array(T * V);
      for (let v = 0; v < V; v++) {
        const row = W.subarray(v * H, (v + 1) * H);
        for (let p = 0; p < T; p++) {
          let z = 0;
          for (let j = 0; j < H; j++) z += row[j]! * hidden[p * H + j]!;
          refLogits[p * V + v] = z;
        }
      }
      for (let p = 0; p < T; p++) {
        const theirs = logSoftmax(refLogits.subarray(p * V, (p + 1) * V));
        const mine = logSoftmax(ours.subarray(p * V, (p + 1) * V));
        const kl = klDivergence(theirs, mine);
        positions++;
        if (kl > worst) [worst, worstAt] = [kl, `${prompt.name}, position ${p}`];
        if (p === T - 1) prompt.top_ids.forEach((id, k) => (rebuildError = Math.max(rebuildError, Math.abs(theirs[id]! - prompt.top_logprobs[k]!))));
      }
    }
    t.diagnostic(`${positions} positions: largest KL(transformers || ours) ${worst.toExponential(2)} (${worstAt}); rebuilt reference vs transformers' own log-probs ${rebuildError.toExponential(2)}`);
    // The rebuilt distribution is transformers' own, up to the fp32 rounding of its head (measured 7e-6 to 1.8e-5).
    assert.ok(rebuildError <= 1e-4, `the rebuilt reference differs from transformers' log-probs by ${rebuildError}`);
    assert.ok(worst <= 1e-3, `KL(transformers || ours) = ${worst} at ${worstAt}`);
  });
}
