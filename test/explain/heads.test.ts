/**
 * Per-head direct logit attribution (issue 10, item 3), against TransformerLens-style attribution
 * computed by the reference tool (tools/reference/attribution.py, transformers in float64):
 * - every tiny family's committed reference (test/fixtures/tiny/<family>/attribution.json): embed,
 *   each layer's attention and MLP part, each head, the o_proj bias and the final norm's bias agree
 *   within 1e-4, and the heads sum to their layer's attention part;
 * - with LOGIT_LENS_PYTHON set (the reference venv), the tool is run now on RMSNorm, Gemma
 *   (post-attention norm) and LayerNorm fixtures and compared the same way; without it the test is
 *   reported as skipped, and when set but failing it fails.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { attribute, type Attribution } from "../../src/explain/attribution.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const TINY = path.join(REPO_ROOT, "test/fixtures/tiny");

interface Reference {
  input_ids: number[];
  position: number;
  target: number;
  versus: number;
  logit_difference: number;
  embed: number;
  attn: number[];
  mlp: number[];
  heads: number[][];
  head_bias: number[];
  final_norm_bias?: number;
}

function near(a: number, b: number, what: string): void {
  assert.ok(Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b)), `${what}: ours ${a}, reference ${b} (diff ${(a - b).toExponential(2)})`);
}

async function ours(family: string, ref: Reference): Promise<Attribution> {
  const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(TINY, family) }, quiet);
  return attribute(model, ref.input_ids, ref.position, ref.target, ref.versus);
}

function compare(a: Attribution, ref: Reference, family: string): void {
  near(a.model_logit, ref.logit_difference, `${family} logit difference`);
  near(a.logit, ref.logit_difference, `${family} sum of parts`);
  const part = (kind: string, layer: number) => a.parts.find((p) => p.kind === kind && p.layer === layer)!.value;
  near(part("embed", -1), ref.embed, `${family} embed`);
  ref.attn.forEach((v, l) => near(part("attn", l), v, `${family} attn ${l}`));
  ref.mlp.forEach((v, l) => near(part("mlp", l), v, `${family} mlp ${l}`));
  if (ref.final_norm_bias !== undefined) near(part("final_norm_bias", -1), ref.final_norm_bias, `${family} final norm bias`);
  assert.equal(a.heads!.length, ref.heads.length);
  ref.heads.forEach((row, l) => {
    assert.equal(a.heads![l]!.length, row.length, `${family} layer ${l}: number of heads`);
    row.forEach((v, h) => near(a.heads![l]![h]!, v, `${family} L${l}H${h}`));
    near(a.head_bias![l]!, ref.head_bias[l]!, `${family} L${l} o_proj bias`);
    // The heads and the bias are the layer's attention part, split.
    near(a.heads![l]!.reduce((s, v) => s + v, 0) + a.head_bias![l]!, part("attn", l), `${family} L${l} heads sum`);
  });
}

const families = fs.readdirSync(TINY).filter((d) => fs.existsSync(path.join(TINY, d, "attribution.json")));

test("every tiny family has a reference attribution", () => {
  const all = fs.readdirSync(TINY).filter((d) => fs.existsSync(path.join(TINY, d, "config.json")));
  assert.deepEqual(families, all);
  assert.ok(families.includes("gpt2") && families.includes("gemma3") && families.includes("llama"));
});

for (const family of families) {
  test(`per-head attribution agrees with the transformers reference (tiny ${family})`, { timeout: 60_000 }, async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(TINY, family, "attribution.json"), "utf8")) as Reference;
    compare(await ours(family, ref), ref, family);
  });
}

const python = process.env["LOGIT_LENS_PYTHON"]?.trim();
test(
  "per-head attribution agrees with the reference tool run now (RMSNorm, Gemma post-norm, LayerNorm)",
  { timeout: 180_000, skip: python ? false : "LOGIT_LENS_PYTHON is not set (the reference venv: tools/reference/README.md)" },
  async () => {
    for (const family of ["llama", "gemma3", "gpt2"]) {
      // Not caught: a Python without torch/transformers fails this test, it does not skip it.
      const out = execFileSync(python!, [path.join(REPO_ROOT, "tools/reference/attribution.py"), "--model", path.join(TINY, family), "--print"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 120_000,
      });
      const ref = JSON.parse(out) as Reference;
      compare(await ours(family, ref), ref, `${family} (live)`);
    }
  },
);
