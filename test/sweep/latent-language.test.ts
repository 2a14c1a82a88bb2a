/**
 * The committed latent-language prompts (data/latent-language/fr-zh.jsonl, fr-de.jsonl) are what
 * tools/sweep/latent-language.mjs makes from words.tsv, in the paper's five-shot format, and each
 * prompt's English and target token sets share no token on the real tokenizers' rule (checked on
 * the tiny llama's vocabulary, byte-level like SmolLM2's).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { createProgress } from "../../src/progress.js";
import { loadSweepData } from "../../src/sweep/data.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const DIR = path.join(REPO_ROOT, "data/latent-language");

test("latent-language prompts: regenerated identically, five-shot, the answer left open, disjoint token sets", async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ll-latent-"));
  try {
    for (const lang of ["zh", "de"]) {
      const out = path.join(tmp, `fr-${lang}.jsonl`);
      const r = spawnSync(process.execPath, [path.join(REPO_ROOT, "tools/sweep/latent-language.mjs"), lang, out], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      const committed = fs.readFileSync(path.join(DIR, `fr-${lang}.jsonl`), "utf8");
      assert.equal(fs.readFileSync(out, "utf8"), committed, `fr-${lang}.jsonl is the tool's output`);
      const label = lang === "zh" ? "中文" : "Deutsch";
      for (const line of committed.trim().split("\n")) {
        const p = JSON.parse(line) as { id: string; text: string; token_sets: Record<string, string> };
        const rows = p.text.split("\n");
        assert.equal(rows.length, 6);
        rows.slice(0, 5).forEach((row) => assert.match(row, new RegExp(`^Français: "[^"]+" - ${label}: "[^"]+"$`)));
        assert.match(rows[5]!, new RegExp(`^Français: "[^"]+" - ${label}: "$`));
        assert.equal(p.token_sets["en"], `word:${p.id}`);
        const target = p.token_sets[lang]!.slice(5);
        assert.ok(!rows.slice(0, 5).some((row) => row.endsWith(`"${target}"`)), `${p.id}: the answer is not among the demonstrations`);
      }
    }
    const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(REPO_ROOT, "test/fixtures/tiny/llama") }, createProgress({ quiet: true }));
    for (const lang of ["zh", "de"]) {
      const data = loadSweepData(path.join(DIR, `fr-${lang}.jsonl`), model.tokenizer, { window: 128 });
      for (let i = 0; i < data.count; i++) {
        const [en, other] = data.prompt(i).tokenSets.map((s) => s.mask);
        assert.ok(!en!.some((v, k) => v > 0 && other![k]! > 0), `prompt ${i}: the en and ${lang} sets overlap`);
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
