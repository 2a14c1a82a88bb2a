#!/usr/bin/env node
/**
 * The translation prompts of Wendler et al. 2024 ("Do Llamas Work in English?", section 3.3) from
 * data/latent-language/words.tsv, as sweep JSONL:
 *
 *   node tools/sweep/latent-language.mjs <zh|de> [out.jsonl]      (default data/latent-language/fr-<lang>.jsonl)
 *
 * One prompt per word: five demonstrations (other words, drawn with a fixed seed), then the word to
 * translate, in the paper's format:
 *
 *   Français: "fleur" - 中文: "花"
 *   ...
 *   Français: "livre" - 中文: "
 *
 * with the paper's token-set rule for the answer: `token_sets` {"en": "word:book", "zh": "word:书"},
 * every token that is a prefix of the word, with or without a leading space (src/lens/targets.ts).
 * Words are left out where the two sets could share a token (English and target word beginning
 * with the same letter, any case) and where the French word gives the English one away (same first
 * three letters: papier/paper), so English mass cannot come from copying the source.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const [lang, outArg] = process.argv.slice(2);
const LANGS = { zh: "中文", de: "Deutsch" };
if (!LANGS[lang]) {
  console.error("usage: latent-language.mjs <zh|de> [out.jsonl]");
  process.exit(2);
}
const out = outArg ?? path.join(root, "data/latent-language", `fr-${lang}.jsonl`);
const lines = fs.readFileSync(path.join(root, "data/latent-language/words.tsv"), "utf8").split("\n").filter((l) => l && !l.startsWith("#"));
const header = lines.shift().split("\t");
const rows = lines.map((l) => Object.fromEntries(l.split("\t").map((v, i) => [header[i], v])));

const fold = (s) => s.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
const kept = rows.filter((r) => fold(r[lang])[0] !== fold(r.en)[0] && fold(r.fr).slice(0, 3) !== fold(r.en).slice(0, 3));

// mulberry32, the project's seeded generator (src/lens/sampling.ts), inlined so that this script
// runs without a build.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pair = (r, answer) => `Français: "${r.fr}" - ${LANGS[lang]}: "${answer ? `${r[lang]}"` : ""}`;
const jsonl = kept.map((r, i) => {
  const next = mulberry32(1000 + i);
  const others = kept.filter((o) => o !== r);
  const demos = [];
  while (demos.length < 5) {
    const o = others[Math.floor(next() * others.length)];
    if (!demos.includes(o)) demos.push(o);
  }
  const text = [...demos.map((d) => pair(d, true)), pair(r, false)].join("\n");
  return JSON.stringify({ id: r.en, text, token_sets: { en: `word:${r.en}`, [lang]: `word:${r[lang]}` } });
});
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, jsonl.join("\n") + "\n");
console.log(`wrote ${out}: ${kept.length} of ${rows.length} words (French -> ${LANGS[lang]}), five-shot`);
