/**
 * A model that does not fit the memory budget runs a block of layers at a time (engine/model.ts,
 * graph/slice.ts). What a user checks: the streamed run gives exactly the same JSON as the run in
 * memory, for the lens (every readout point) and for generation through the KV cache, and the
 * progress says which layers are running.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCli, REPO_ROOT } from "../helpers/run-cli.js";
import { parseSize } from "../../src/cli/options.js";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { allHookNames } from "../../src/architectures/forward.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { createProgress } from "../../src/progress.js";

const quiet = createProgress({ quiet: true });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-blocks-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
const TIMEOUT_MS = 240_000;

async function lensJson(args: string[], name: string): Promise<{ json: string; stderr: string }> {
  const out = path.join(tmp, `${name}.json`);
  const r = await runCli([...args, "--json", "--out", out], { timeoutMs: TIMEOUT_MS });
  assert.equal(r.code, 0, r.stderr);
  const json = fs.readFileSync(out, "utf8");
  // The run's own timing is the only field allowed to differ.
  return { json: json.replace(/"(elapsed|duration)[a-z_]*":\s*[\d.e+-]+/g, ""), stderr: r.stderr };
}

test("streamed lens and generation equal the in-memory run (real SmolLM2, quantized)", { timeout: TIMEOUT_MS }, async () => {
  const lens = ["lens", "--model", "smollm2-135m-instruct", "--prompt", "Fish emoji: 🐠, horse emoji: 🐴, seahorse emoji:", "--points", "embed,resid_pre,attn_out,resid_mid,mlp_out,resid_post", "--track", " 🐠"];
  const inMemory = await lensJson([...lens, "--quiet"], "lens-memory");
  const streamed = await lensJson([...lens, "--max-memory", "64M"], "lens-streamed");
  assert.match(streamed.stderr, /running layer 29 from disk, a block at a time/);
  assert.equal(streamed.json, inMemory.json);

  const gen = ["generate", "--model", "smollm2-135m-instruct", "--chat", "--prompt", "Is there a seahorse emoji?", "--max-new-tokens", "6"];
  const genMemory = await lensJson([...gen, "--quiet"], "gen-memory");
  const genStreamed = await lensJson([...gen, "--max-memory", "96M", "--quiet"], "gen-streamed");
  assert.equal(genStreamed.json, genMemory.json);
});

test("streamed mixture-of-experts model gives the same router readouts and lens (tiny Qwen3-MoE)", { timeout: TIMEOUT_MS }, async () => {
  const source = await resolveModelSource(path.join(REPO_ROOT, "test", "fixtures", "tiny", "qwen3moe", "model.gguf"), { progress: quiet });
  const whole = await LoadedModel.load(source, quiet);
  const streamed = await LoadedModel.load(source, quiet, { maxMemory: 1 }); // every layer its own block
  const ids = whole.tokenizer.encode("The capital of France is Paris.");
  const hooks = allHookNames(whole.config);
  const [a, b] = [await whole.forward(hooks, "all"), await streamed.forward(hooks, "all")];
  assert.equal(a.pieceCount, 1);
  assert.equal(b.pieceCount, whole.config.nLayers + 2); // embedding, each layer, final norm
  const [ra, rb] = [await a.run(ids), await b.run(ids)];
  for (const h of hooks) assert.deepEqual(rb.hooks.get(h), ra.hooks.get(h), h);
  assert.deepEqual(rb.logits, ra.logits);
  // One more token through the KV cache, block by block.
  const [na, nb] = [await a.run([ids[1]!], ra.cache), await b.run([ids[1]!], rb.cache)];
  assert.deepEqual(nb.logits, na.logits);
  assert.deepEqual(await new LogitLens(streamed).apply(ids, { topK: 5 }), await new LogitLens(whole).apply(ids, { topK: 5 }));
});

test("a budget smaller than one block says so once; the run still equals the in-memory one (tiny Qwen3-MoE)", { timeout: TIMEOUT_MS }, async () => {
  const source = await resolveModelSource(path.join(REPO_ROOT, "test", "fixtures", "tiny", "qwen3moe", "model.gguf"), { progress: quiet });
  const said = (lines: string[]) => ({ start() {}, update() {}, done() {}, info: (m: string) => void lines.push(m) });
  const tight: string[] = [];
  const roomy: string[] = [];
  const whole = await LoadedModel.load(source, quiet, { maxMemory: 2 ** 30, progress: said(roomy) });
  const streamed = await LoadedModel.load(source, quiet, { maxMemory: 1, progress: said(tight) });
  const ids = whole.tokenizer.encode("The capital of France is Paris.");
  for (const hooks of [[], allHookNames(whole.config)]) {
    const [a, b] = [await (await whole.forward(hooks, "all")).run(ids), await (await streamed.forward(hooks, "all")).run(ids)];
    assert.deepEqual(b.logits, a.logits);
  }
  const warnings = tight.filter((m) => m.startsWith("warning:"));
  assert.equal(warnings.length, 1, `one warning for two forward sessions: ${JSON.stringify(tight)}`);
  assert.match(warnings[0]!, /^warning: this model's largest block, the (embedding|layer \d+|final norm) \(about \d+ MiB once open\), is bigger than the memory budget \(0 MiB\) and cannot be split/);
  assert.deepEqual(roomy, [], "a budget the model fits in says nothing");
});

test("--max-memory sizes", () => {
  assert.equal(parseSize("4G", "--max-memory"), 4 * 2 ** 30);
  assert.equal(parseSize("512M", "--max-memory"), 512 * 2 ** 20);
  assert.equal(parseSize("1.5GB", "--max-memory"), 1.5 * 2 ** 30);
  assert.equal(parseSize(undefined, "--max-memory"), undefined);
  assert.throws(() => parseSize("lots", "--max-memory"), /--max-memory must be a size such as 4G/);
  assert.throws(() => parseSize("1K", "--max-memory"), /too small/);
});

test("a bad --max-memory is one line and exit 2", async () => {
  const r = await runCli(["lens", "--prompt", "hi", "--max-memory", "-3G"], { timeoutMs: 60_000 });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^logit-lens: --max-memory must be a size such as 4G, 512M or 16GB, not '-3G'\n$/);
});

test("activation patching through cut points: self-patch changes nothing, the final residual carries the output", { timeout: TIMEOUT_MS }, async () => {
  const source = await resolveModelSource(path.join(REPO_ROOT, "test", "fixtures", "tiny", "llama", "model.gguf"), { progress: quiet });
  const model = await LoadedModel.load(source, quiet);
  const L = model.config.nLayers;
  const h = model.config.hidden;
  const a = model.tokenizer.encode("The capital of France is");
  const b = a.slice();
  b[a.length - 2] = a[1]!; // same length, one token different
  const boundaries = [...Array.from({ length: L }, (_, l) => `blocks.${l}.hook_resid_pre`), `blocks.${L - 1}.hook_resid_post`];
  const plain = await model.forward(boundaries, "all");
  const [ra, rb] = [await plain.run(a), await plain.run(b)];
  const cut = await model.forward([], "all", { cutsAt: Array.from({ length: L + 1 }, (_, l) => l) });
  assert.equal(cut.pieceCount, L + 2);
  const row = (hook: string, r: typeof ra, p: number) => r.hooks.get(hook)!.slice(p * h, (p + 1) * h);
  // A into itself, at every layer and position: the output is A's, bit for bit.
  for (let l = 0; l <= L; l++) {
    const p = l % a.length;
    const self = await cut.run(a, undefined, [{ layer: l, position: p, vector: row(boundaries[l]!, ra, p) }]);
    assert.deepEqual(self.logits, ra.logits, `self-patch at layer ${l}`);
  }
  // A's final residual at the last position, put into B, gives A's output there and B's elsewhere.
  const last = a.length - 1;
  const patched = await cut.run(b, undefined, [{ layer: L, position: last, vector: row(boundaries[L]!, ra, last) }]);
  const V = model.config.vocabSize;
  assert.deepEqual(patched.logits!.slice(last * V), ra.logits!.slice(last * V));
  assert.deepEqual(patched.logits!.slice(0, last * V), rb.logits!.slice(0, last * V));
  // A patch where the session was not cut is refused in one line.
  await assert.rejects(plain.run(b, undefined, [{ layer: 1, position: 0, vector: new Float32Array(h) }]), /cannot patch layer 1: the forward session was not cut there/);
});
