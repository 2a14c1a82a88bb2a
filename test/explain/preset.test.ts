/**
 * --preset seahorse (issue 10, item 6): the options it fills in, an unknown preset as a one-line
 * error (exit 2), and the story on a real run of the tiny Llama (its key positions, every readout
 * point named).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { applyPreset, seahorseStory, SEAHORSE, type PresetOptions } from "../../src/explain/preset.js";
import { runCli, REPO_ROOT } from "../helpers/run-cli.js";

test("seahorse preset: the question in the chat template, targets added to the user's, points kept when given", () => {
  const o: PresetOptions = { preset: "seahorse" };
  applyPreset(o);
  assert.equal(o.prompt, SEAHORSE.question);
  assert.equal(o.chat, true);
  assert.equal(o.points, "resid_post,attn_out,mlp_out");
  assert.deepEqual(o.track, [" 🐠", " 🐴", " sea", " horse"]);
  const mine: PresetOptions = { preset: "seahorse", prompt: "Fish emoji: 🐠, horse emoji:", points: "resid_post", track: [" horse", " fish"] };
  applyPreset(mine);
  assert.equal(mine.chat, undefined, "a prompt of the user's own is taken as written");
  assert.equal(mine.points, "resid_post");
  assert.deepEqual(mine.track, [" horse", " fish", " 🐠", " 🐴", " sea"]);
});

test("unknown preset: one line, exit 2", async () => {
  const r = await runCli(["lens", "--preset", "unicorn", "--prompt", "x"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr.trim(), /^[^\n]*unknown --preset 'unicorn' \(presets: seahorse\)$/);
});

test("seahorse story on the tiny Llama: each readout point and the last layer at the answer's first position", { timeout: 120_000 }, async () => {
  const r = await runCli(["lens", "--model", path.join(REPO_ROOT, "test/fixtures/tiny/llama"), "--preset", "seahorse", "--prompt", "Fish emoji:", "--json", "--quiet"]);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.lens.points, ["resid_post", "attn_out", "mlp_out"]);
  assert.deepEqual(report.targets.map((t: { label: string }) => t.label), SEAHORSE.track);
  const story = seahorseStory(report);
  assert.equal(r.stderr.trim(), story.trim(), "with JSON on stdout the story goes to stderr");
  const last = report.prompt_length - 1;
  assert.match(story, new RegExp(`position ${last} \\(predicts .*the answer's first token\\)`));
  for (const p of ["resid_post", "attn_out", "mlp_out"]) assert.match(story, new RegExp(`  ${p} +sea/horse in the top-10 at layers: `));
  assert.ok(story.includes(`final: ${report.final.positions.at(-1).top[0].text}`));
});
