/**
 * Expanding a candidate that starts a character (issue 10, item 5), on the real SmolLM2: after
 * "…seahorse emoji:" the model's top candidate ` ðŁ` (20 F0 9F) is two bytes short of an emoji.
 * Expanded, it becomes complete characters, each with the probability of the token path that makes
 * it (checked against one teacher-forced forward pass), the parts add to 1, greedy expansion is what
 * step-by-step argmax decoding writes, and a candidate that starts no character is a one-line error.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
// Through the library's entry point (package.json "exports"), as a user imports it.
import { expandCandidate, expandTopCandidates } from "../../src/index.js";
import { loadReal } from "../helpers/real-models.js";
import { rejectsOneLine } from "../helpers/assert-user-error.js";
import { runCli } from "../helpers/run-cli.js";

const PROMPT = "Fish emoji: 🐠, horse emoji: 🐴, seahorse emoji:";

function logSoftmaxAt(row: Float32Array, id: number): number {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return row[id]! - max - Math.log(sum);
}

test("a character-starting candidate expands into complete characters (real SmolLM2)", { timeout: 240_000 }, async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const tok = model.tokenizer;
  const ids = tok.encode(PROMPT);
  const start = tok.tokenId("ĠðŁ")!;
  const x = await expandCandidate(model, ids, -1, start, { k: 5 });
  assert.equal(x.pending, "f09f");
  assert.equal(x.completions.length, 5);
  const V = model.config.vocabSize;
  for (const c of x.completions) {
    // One whole emoji: a single code point in the animal/pictograph block.
    assert.equal([...c.character].length, 1, c.character);
    assert.ok(c.character.codePointAt(0)! >= 0x1f300, c.character);
    // The bytes the tokens spell are that character, after the pending F0 9F.
    const bytes = Buffer.concat([Buffer.from([0xf0, 0x9f]), ...c.tokens.map((t) => Buffer.from(tok.tokenBytes(t.id)))]);
    assert.equal(bytes.toString("utf8").slice(0, 2), c.character);
    // Its probability is at least its best path's, computed in one teacher-forced pass.
    const seq = [...ids, start, ...c.tokens.map((t) => t.id)];
    const logits = (await (await model.forward([], "all")).run(seq)).logits!;
    let lp = 0;
    c.tokens.forEach((t, i) => (lp += logSoftmaxAt(logits.subarray((ids.length + i) * V, (ids.length + i + 1) * V), t.id)));
    assert.ok(c.probability >= Math.exp(lp) * (1 - 1e-4), `${c.character}: ${c.probability} < path ${Math.exp(lp)}`);
    assert.ok(c.probability <= Math.exp(lp) * 1.5, `${c.character}: ${c.probability} far above its best path ${Math.exp(lp)}`);
  }
  for (let i = 1; i < x.completions.length; i++) assert.ok(x.completions[i - 1]!.probability >= x.completions[i]!.probability);
  const total = x.completions.reduce((s, c) => s + c.probability, 0) + x.rest + x.other + x.unexplored;
  assert.ok(Math.abs(total - 1) < 1e-6, `parts add to ${total}`);

  // Greedy: what argmax decoding writes after the candidate, step by step.
  const greedy = await expandCandidate(model, ids, -1, start, { k: 1 });
  assert.equal(greedy.mode, "greedy");
  const seq = [...ids, start];
  for (let i = 0; i < greedy.completions[0]!.tokens.length; i++) {
    const row = (await (await model.forward([], "last")).run(seq)).logits!;
    seq.push(row.indexOf(Math.max(...row)));
  }
  assert.deepEqual(seq.slice(ids.length + 1), greedy.completions[0]!.tokens.map((t) => t.id));
  assert.ok(greedy.completions[0]!.probability > 0);

  // "top": the top candidates that start a character, the first of them ` ðŁ`.
  const top = await expandTopCandidates(model, ids, -1, 3, { k: 3 });
  assert.equal(top[0]!.candidate.id, start);
  assert.deepEqual(top[0]!.completions.map((c) => c.character), x.completions.slice(0, 3).map((c) => c.character));

  await rejectsOneLine(expandCandidate(model, ids, -1, tok.encode(" Paris", { addSpecialTokens: false })[0]!), /does not start a character after this context/);
});

test("explain --expand: CLI text and JSON", { timeout: 180_000 }, async () => {
  const r = await runCli(["explain", "--quiet", "--prompt", PROMPT, "--expand", "ĠðŁ", "--expand-k", "3", "--json"], { timeoutMs: 180_000 });
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.expansions[0].completions.length, 3);
  const t = await runCli(["explain", "--quiet", "--prompt", PROMPT, "--expand", "top", "--top-k", "1"], { timeoutMs: 180_000 });
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /"␣⟨F0 9F⟩" \(\d+\.\d %\) → \p{Extended_Pictographic} \d+\.\d %/u);
  const bad = await runCli(["explain", "--quiet", "--prompt", PROMPT], { timeoutMs: 60_000 });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^logit-lens: explain needs --layer L \(the cell's snap\) and\/or --expand top\|<token>/);
});
