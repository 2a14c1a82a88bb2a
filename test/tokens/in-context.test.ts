/**
 * Candidates read in context (issue 10, item 5): after a context that stops inside a character,
 * a candidate byte that finishes it is shown as the character, in the JSON (`in_context`), the
 * terminal, the SVG and the compact round trip. Unit cases, then the real SmolLM2 at the byte that
 * picks the animal of " 🐠".
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { pendingBytes, readInContext } from "../../src/tokens/in-context.js";
import { executeLensJob } from "../../src/lens/job.js";
import { buildReport } from "../../src/outputs/report.js";
import { terminalView } from "../../src/outputs/terminal.js";
import { toSvg } from "../../src/outputs/svg.js";
import { compactReport, expandReport } from "../../src/outputs/compact.js";
import { readoutHooks } from "../../src/cli/options.js";
import { createProgress } from "../../src/progress.js";
import { loadReal } from "../helpers/real-models.js";

const b = (...xs: number[]) => Uint8Array.from(xs);

test("pending bytes: only a character cut off at the end of the context", () => {
  assert.deepEqual(pendingBytes([b(0x20, 0xf0, 0x9f), b(0x90)]), b(0xf0, 0x9f, 0x90));
  assert.deepEqual(pendingBytes([b(0x41), b(0x20, 0xf0, 0x9f)]), b(0xf0, 0x9f));
  assert.deepEqual(pendingBytes([b(0x20, 0xf0, 0x9f, 0x90, 0xa0)]), b()); // " 🐠" is whole
  assert.deepEqual(pendingBytes([b(0x90)]), b()); // a stray continuation opens nothing
  assert.deepEqual(pendingBytes([b(0x68, 0x69)]), b());
});

test("a candidate that finishes the pending character reads as that character", () => {
  const pending = b(0xf0, 0x9f, 0x90);
  assert.equal(readInContext(pending, b(0xa0)), "🐠");
  assert.equal(readInContext(pending, b(0xb2)), "🐲");
  assert.equal(readInContext(pending, b(0xb4, 0x20, 0x69)), "🐴␣i");
  assert.equal(readInContext(b(0xf0, 0x9f), b(0x90)), undefined); // continues, does not finish
  assert.equal(readInContext(pending, b(0x68)), undefined); // breaks the character
  assert.equal(readInContext(b(), b(0xa0)), undefined);
});

test("real SmolLM2: at ' ðŁ','Ĳ' the top candidates read as emoji in JSON, terminal, SVG and compact JSON", { timeout: 240_000 }, async () => {
  const { model } = await loadReal("smollm2-135m-instruct");
  const tok = model.tokenizer;
  const fish = tok.encode(" 🐠", { addSpecialTokens: false });
  assert.equal(fish.length, 3);
  const ids = [...tok.encode("Tropical fish emoji:"), fish[0]!, fish[1]!];
  const job = await executeLensJob(model, { promptIds: ids, readouts: readoutHooks(undefined, model.config).hooks, topK: 10, variant: "logit", targets: [], families: [] }, createProgress({ quiet: true }));
  const report = buildReport(model, { prompt: "", chat: false, job, targets: [], families: [], topK: 10, points: ["resid_post"] });
  const last = report.final.positions.at(-1)!;
  // Each candidate byte, read after F0 9F 90, is the emoji U+1F400 + (byte - 0x80): 🐀..🐿.
  const first = last.top[0]!;
  assert.match(first.bytes, /^[89ab][0-9a-f]$/, `top candidate ${first.text}`);
  assert.equal(first.in_context, String.fromCodePoint(0x1f400 + parseInt(first.bytes, 16) - 0x80));
  for (const e of last.top) {
    // Every single continuation byte finishes F0 9F 90 into a character.
    if (/^[89ab][0-9a-f]$/.test(e.bytes)) assert.match(e.in_context ?? "", /^\p{Extended_Pictographic}/u, e.bytes);
  }
  // Positions whose context ends on a whole character read nothing in context: only the last two
  // (after F0 9F and after F0 9F 90) can.
  const inside = report.final.positions.filter((c) => c.top.some((e) => e.in_context !== undefined)).map((c) => c.position);
  assert.deepEqual(inside.filter((p) => p < ids.length - 2), []);
  assert.ok(inside.includes(ids.length - 1));
  const top1 = last.top[0]!.in_context ?? last.top[0]!.text;
  assert.ok(terminalView(report, { width: 400, color: false }).includes(top1));
  assert.ok(toSvg(report).includes(first.in_context!));
  assert.deepEqual(expandReport(JSON.parse(JSON.stringify(compactReport(report)))), report);
});
