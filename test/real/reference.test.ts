/**
 * Reference 1 on the two real models: transformers (tools/reference/make_real_references.py) loaded
 * the same GGUF files dequantized to fp32 and recorded, for a plain prompt, an emoji prompt and a
 * chat-templated prompt: the token ids, the logit-lens top-5 at every layer and position, and the
 * final logits at the last position. We must tokenize identically, agree on every layer's top-1
 * lens token at every position, and give final logits within 1e-3 (relative to their scale).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { readSafetensors } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

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
