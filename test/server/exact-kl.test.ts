/**
 * The explorer's exact difference view (POST /api/kl, src/lens/compare.ts) against a direct
 * computation: the lens read with top-k = the whole vocabulary gives every cell's full
 * distribution, and KL(A ‖ B) = sum_v pA (log pA - log pB) is summed here in float64. Also: two
 * models with different vocabularies get a clear one-line error, not a number.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { blockHook } from "../../src/architectures/forward.js";
import { LogitLens, type LensCell } from "../../src/lens/logit-lens.js";
import type { KlResult } from "../../src/server/jobs.js";
import type { CreatedServer } from "../../src/server/server.js";
import { loadReal, realSource } from "../helpers/real-models.js";
import { startTestServer } from "../helpers/serve.js";

const MODEL = "smollm2-135m-instruct";
const A = "The capital of France is";
const B = "The capital of Germany is";

let server: CreatedServer;
let base: string;

before(async () => {
  ({ server, base } = await startTestServer(MODEL));
});

after(async () => {
  await server?.app.close();
});

async function kl(body: unknown): Promise<{ status: number; events: { type: string; [k: string]: unknown }[]; error?: string }> {
  const res = await fetch(`${base}/api/kl`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (res.status !== 200) return { status: res.status, events: [], error: ((await res.json()) as { error: string }).error };
  const text = await res.text();
  return { status: 200, events: text.trim().split("\n").map((l) => JSON.parse(l)) };
}

/** Full log-probabilities of a cell from a top-k = V lens reading, by token id. */
function fullLogprobs(cell: LensCell, V: number): Float64Array {
  const out = new Float64Array(V);
  cell.topIds.forEach((id, k) => (out[id] = cell.topLogprobs[k]!));
  return out;
}

function directKl(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let v = 0; v < a.length; v++) s += Math.exp(a[v]!) * (a[v]! - b[v]!);
  return s;
}

test("POST /api/kl: the exact per-cell KL of two prompts equals the KL summed over the whole vocabulary", async () => {
  const { model } = await loadReal(MODEL);
  const V = model.config.vocabSize;
  const points = ["resid_mid", "resid_post"];
  const positions = "1,3,-1";
  const { status, events } = await kl({ a: { prompt: A, points, positions }, b: { prompt: B, points, positions } });
  assert.equal(status, 200);
  const done = events.at(-1)!;
  assert.equal(done.type, "kl", JSON.stringify(done));
  const r = done["result"] as KlResult;
  const L = model.config.nLayers;
  assert.equal(r.rows.length, 2 * L + 1, "every readout of both points, then the output");
  assert.equal(r.rows.at(-1), "output");
  assert.equal(r.columns, 3);

  // Direct: the lens with top-k = V at the same readouts and positions, KL summed in float64.
  const lens = new LogitLens(model);
  const readouts = r.rows.slice(0, -1);
  assert.ok(readouts.includes(blockHook(3, "hook_resid_mid")));
  const read = async (prompt: string, pos: number[]) => lens.apply(model.tokenizer.encode(prompt), { readouts, topK: V, positions: pos });
  const la = await read(A, r.positions_a);
  const lb = await read(B, r.positions_b);
  let worst = 0;
  let largest = 0;
  for (let row = 0; row < r.rows.length; row++) {
    for (let c = 0; c < r.columns; c++) {
      const ca = row < readouts.length ? la.readouts[row]!.cells[c]! : la.final[c]!;
      const cb = row < readouts.length ? lb.readouts[row]!.cells[c]! : lb.final[c]!;
      const pa = fullLogprobs(ca, V);
      const pb = fullLogprobs(cb, V);
      for (const [served, want] of [[r.kl_ab[row]![c]!, directKl(pa, pb)], [r.kl_ba[row]![c]!, directKl(pb, pa)]] as const) {
        // Served values are rounded to 4 significant digits; the graph sums in float32.
        const err = Math.abs(served - want);
        assert.ok(err <= 1e-3 + 2e-3 * want, `${r.rows[row]} column ${c}: served ${served}, direct ${want}`);
        worst = Math.max(worst, err);
        largest = Math.max(largest, want);
      }
    }
  }
  // The prompts agree up to "France"/"Germany": column 0 (position 1, " capital") reads the same text in both runs.
  assert.ok(r.kl_ab.every((row) => row[0]! < 1e-3), "identical contexts: zero KL");
  assert.ok(largest > 1, `the last column differs (largest KL ${largest.toFixed(2)} nats)`);
  console.log(`exact KL: ${r.rows.length} rows x ${r.columns} columns, largest ${largest.toFixed(3)} nats, worst difference from the direct sum ${worst.toExponential(2)}`);
});

test("POST /api/kl: models with different vocabularies get a one-line error", async () => {
  await realSource("gemma3-270m");
  const { events } = await kl({ a: { prompt: A, positions: "-1" }, b: { prompt: A, model: "gemma3-270m", positions: "-1" } });
  const last = events.at(-1)!;
  assert.equal(last.type, "error");
  assert.match(last["error"] as string, /different vocabularies \(49152 and 262144 tokens\)/);
  assert.ok(!(last["error"] as string).includes("\n"));
});

test("POST /api/kl: malformed bodies are refused by the schema", async () => {
  const r = await kl({ a: { prompt: A, track: ["x"] }, b: { prompt: B } });
  assert.equal(r.status, 400);
  assert.match(r.error!, /additional properties/);
  const r2 = await kl({ a: { prompt: A } });
  assert.equal(r2.status, 400);
  assert.match(r2.error!, /'b'/);
});
