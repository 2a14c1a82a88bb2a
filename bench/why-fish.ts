/**
 * Costs of issue 10's per-head attribution and candidate expansion (BENCHMARKS.md, "Why the fish:
 * costs"), measured through the library on the real models with the model already loaded (warm
 * sessions): attribution without and with the per-head split, and the expansion of the
 * character-starting candidate ` ðŁ` (greedy, top-5) and of every such candidate among the top 10.
 * Prints a markdown table with the CPU and the load average and writes it to --out (default
 * $TMPDIR/why-fish-costs.md).
 *
 *   npm run build && node dist/bench/why-fish.js [--models smollm2-135m-instruct,gemma3-270m] [--runs 5] [--out FILE]
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadModel } from "../src/index.js";
import { attribute } from "../src/explain/attribution.js";
import { splitAtDifference } from "../src/explain/cli.js";
import { expandCandidate, expandTopCandidates } from "../src/explain/expand.js";

const PROMPT = "Fish emoji: 🐠, horse emoji: 🐴, seahorse emoji:";

const { values } = parseArgs({ options: { models: { type: "string" }, runs: { type: "string" }, out: { type: "string" } } });
const models = (values.models ?? "smollm2-135m-instruct,gemma3-270m").split(",");
const runs = Number(values.runs ?? 5);
const out = values.out ?? path.join(os.tmpdir(), "why-fish-costs.md");

/** Median wall time of `runs` calls after one warm-up call, in ms. */
async function time(fn: () => Promise<unknown>): Promise<number> {
  await fn();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await fn();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)]!;
}

const cpu = os.cpus()[0]?.model ?? "unknown CPU";
const lines = [
  `${cpu}, ${os.cpus().length} logical CPUs (shared), load average at start ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}; median of ${runs} warm runs after one warm-up, model loaded once; prompt "${PROMPT}".`,
  "",
  "| model | what | median |",
  "|---|---|---|",
];
for (const alias of models) {
  const model = await loadModel(alias);
  const ids = model.tokenizer.encode(PROMPT);
  const split = splitAtDifference(model, " 🐠", " 🐴");
  const seq = [...ids, ...split.prefix];
  const rows: [string, number][] = [
    ["attribute 🐠 vs 🐴, layers only", await time(() => attribute(model, seq, -1, split.target, split.versus, { heads: false }))],
    [`attribute 🐠 vs 🐴, with ${model.config.nLayers} x ${model.config.nHeads} heads`, await time(() => attribute(model, seq, -1, split.target, split.versus))],
  ];
  const start = model.tokenizer.tokenId("ĠðŁ");
  if (start !== undefined) {
    rows.push(["expand ` ðŁ`, greedy", await time(() => expandCandidate(model, ids, -1, start, { k: 1 }))]);
    rows.push(["expand ` ðŁ`, top-5 (beam 10)", await time(() => expandCandidate(model, ids, -1, start, { k: 5 }))]);
  }
  const top = await expandTopCandidates(model, ids, -1, 10, { k: 5 });
  rows.push([`expand top 10 candidates (${top.length} start a character), top-5 each`, await time(() => expandTopCandidates(model, ids, -1, 10, { k: 5 }))]);
  for (const [what, ms] of rows) lines.push(`| ${alias} | ${what} | ${ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`} |`);
}
const md = lines.join("\n") + "\n";
process.stdout.write(md);
fs.writeFileSync(out, md);
process.stdout.write(`\nwritten to ${out}\n`);
