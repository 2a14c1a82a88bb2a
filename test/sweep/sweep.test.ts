/**
 * Issue 9 (sweep, query, linear lens) on the tiny fixtures, with real text (a public-domain
 * excerpt of Bierce's "The Devil's Dictionary", test/fixtures/sweep/devil-excerpt.txt):
 * - the sweep graph's numbers equal the logit lens's (KL, top-1) and the model's own next-token
 *   cross-entropy at the last layer, and target probabilities equal the lens's tracked ones;
 * - the CLI writes Parquet rows that DuckDB reads back to the summary's means;
 * - a run killed with SIGKILL mid-run and rerun gives exactly the uninterrupted run's results;
 * - the linear lens fits better than the identity (least squares), saves and reads back.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { createProgress } from "../../src/progress.js";
import { SweepEvaluator } from "../../src/sweep/evaluate.js";
import { loadSweepData } from "../../src/sweep/data.js";
import { fitLinearLens, readLinearLens, saveLinearLens, translatorOf } from "../../src/sweep/linear.js";
import { querySweep } from "../../src/sweep/query.js";
import { summarize } from "../../src/sweep/stats.js";
import { CLI_PATH, REPO_ROOT, runCli } from "../helpers/run-cli.js";

const quiet = createProgress({ quiet: true });
const TINY = path.join(REPO_ROOT, "test/fixtures/tiny");
const TEXT = path.join(REPO_ROOT, "test/fixtures/sweep/devil-excerpt.txt");
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "ll-sweep-"));

function logSoftmaxAt(row: Float32Array, id: number): number {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - max);
  return row[id]! - max - Math.log(s);
}

test("sweep numbers equal the logit lens and the model's own cross-entropy", async () => {
  for (const family of ["llama", "gemma2", "gpt2"]) {
    const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(TINY, family) }, quiet);
    const data = loadSweepData(TEXT, model.tokenizer, { window: 24, limit: 2 });
    const p = data.prompt(1);
    const positions = p.ids.map((_, i) => i);
    const tracked = [p.ids[3]!, 5];
    const [ev] = await new SweepEvaluator(model).evaluate({ ids: p.ids, positions, tracked, families: [] }, [{ name: "logit" }]);
    const lens = await new LogitLens(model).apply(p.ids, { topK: 1, tracked });
    const L = model.config.nLayers;
    const logits = (await (await model.forward([], "all")).run(p.ids)).logits!;
    const V = model.config.vocabSize;
    for (let l = 0; l < L; l++) {
      positions.forEach((pos, i) => {
        const cell = lens.readouts[l]!.cells[i]!;
        assert.ok(Math.abs(ev!.kl[l]![i]! - cell.klToFinal) <= 1e-4 + 1e-4 * cell.klToFinal, `${family} KL l${l} p${pos}: ${ev!.kl[l]![i]} vs ${cell.klToFinal}`);
        assert.equal(ev!.top1Agree[l]![i], cell.topIds[0] === lens.final[i]!.topIds[0] ? 1 : 0, `${family} top1 l${l} p${pos}`);
      });
      const last = lens.readouts[l]!.cells.at(-1)!;
      tracked.forEach((_, m) => assert.ok(Math.abs(ev!.targetProb[l]![m]! - Math.exp(last.trackedLogprobs[m]!)) <= 1e-5, `${family} target l${l}`));
    }
    // The last layer's cross-entropy is the model's own next-token loss.
    positions.slice(0, -1).forEach((pos, i) => {
      const want = -logSoftmaxAt(logits.subarray(pos * V, (pos + 1) * V), p.ids[pos + 1]!);
      assert.ok(Math.abs(ev!.ce[L - 1]![i]! - want) <= 1e-4 * Math.max(1, want), `${family} CE p${pos}: ${ev!.ce[L - 1]![i]} vs ${want}`);
    });
    assert.ok(Number.isNaN(ev!.ce[0]!.at(-1)!), "no next token at the last position");
  }
});

test("bootstrap: seeded, token-weighted, interval around the mean", () => {
  const prompts = Array.from({ length: 40 }, (_, i) => ({ "logit\tkl": { sum: [i % 7, 2 * (i % 3)], n: 1 + (i % 4) } }));
  const a = summarize(prompts, 2, 500, 7);
  const b = summarize(prompts, 2, 500, 7);
  assert.deepEqual(a, b);
  const s = a[0]!;
  const totalN = prompts.reduce((x, p) => x + p["logit\tkl"].n, 0);
  assert.ok(Math.abs(s.mean[0]! - prompts.reduce((x, p) => x + p["logit\tkl"].sum[0]!, 0) / totalN) < 1e-12);
  for (let l = 0; l < 2; l++) assert.ok(s.lo[l]! < s.mean[l]! && s.mean[l]! < s.hi[l]!, `interval ${s.lo[l]} ${s.mean[l]} ${s.hi[l]}`);
  assert.notDeepEqual(summarize(prompts, 2, 500, 8)[0]!.lo, s.lo);
});

test("CLI: JSONL with targets and token sets, Parquet rows read back by DuckDB", async () => {
  const dir = tmp();
  const jsonl = path.join(dir, "prompts.jsonl");
  fs.writeFileSync(
    jsonl,
    [
      JSON.stringify({ text: "The cat sat on the", targets: { noun: " mat" }, token_sets: { m: "word:mat" } }),
      JSON.stringify({ messages: [{ role: "user", content: "Say hello" }], targets: [" hello"] }),
      JSON.stringify({ text: "A dog and a", targets: { noun: [" cat", " bird"] }, token_sets: { m: ["word:mouse", "word:mat"] } }),
    ].join("\n") + "\n",
  );
  const out = path.join(dir, "results");
  const r = await runCli(["sweep", "--model", path.join(TINY, "llama"), "--data", jsonl, "--out", out, "--bootstrap", "100", "--quiet"], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /layer\s+kl\s+ce\s+top1\s+target:noun/);
  for (const f of ["manifest.json", "summary.json", "summary.txt", "figure.svg", "parts/unit-000000.parquet"]) assert.ok(fs.existsSync(path.join(out, f)), f);
  const summary = JSON.parse(fs.readFileSync(path.join(out, "summary.json"), "utf8"));
  const kl = summary.series.find((s: { metric: string }) => s.metric === "kl");
  const q = await querySweep(out, "SELECT layer, avg(kl) AS kl, count(*) AS n FROM rows WHERE kind = 'position' GROUP BY layer ORDER BY layer");
  assert.equal(q.rows.length, 2);
  q.rows.forEach((row, l) => assert.ok(Math.abs(Number(row[1]) - kl.mean[l]) < 1e-6, `layer ${l}: ${row[1]} vs ${kl.mean[l]}`));
  const noun = summary.series.find((s: { metric: string }) => s.metric === "target:noun");
  assert.equal(noun.prompts, 2);
  const t = await querySweep(out, "SELECT count(*) FROM rows WHERE kind = 'target' AND label = 'noun'");
  assert.equal(Number(t.rows[0]![0]), 2 * 2);
  const set = await querySweep(out, "SELECT min(prob), max(prob) FROM rows WHERE kind = 'token_set'");
  assert.ok(Number(set.rows[0]![0]) > 0 && Number(set.rows[0]![1]) <= 1);
  const svg = fs.readFileSync(path.join(out, "figure.svg"), "utf8");
  assert.match(svg, /class="band"/);
  assert.match(svg, /probability at the last position/);
  // The same figure as PNG and in the HTML report (with the table of means and intervals).
  const png = fs.readFileSync(path.join(out, "figure.png"));
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(png.readUInt32BE(16) >= 1000, `PNG width ${png.readUInt32BE(16)}`);
  const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
  assert.match(html, /<svg[^>]*>[\s\S]*class="band"[\s\S]*<\/svg>/);
  assert.match(html, new RegExp(`<tr><th scope="row">0</th><td><span class="mean">${kl.mean[0].toFixed(3)}</span>`));
  assert.doesNotMatch(html, /<script(?! type="application\/json")/);
  // The query command itself.
  const qc = await runCli(["query", out, "SELECT layer, avg(kl) FROM rows GROUP BY layer ORDER BY layer"], { timeoutMs: 20_000 });
  assert.equal(qc.code, 0, qc.stderr);
  assert.match(qc.stdout, /\(2 rows\)/);
  const bad = await runCli(["query", out, "SELECT nope FROM rows"], { timeoutMs: 20_000 });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^logit-lens: query failed: .*\n$/);
  // Same folder, other settings: refused.
  const other = await runCli(["sweep", "--model", path.join(TINY, "llama"), "--data", jsonl, "--out", out, "--metrics", "kl", "--quiet"], { timeoutMs: 30_000 });
  assert.equal(other.code, 2);
  assert.match(other.stderr, /holds a different sweep/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("resume after SIGKILL gives the uninterrupted run's results exactly", async () => {
  const dir = tmp();
  const args = (out: string) => [CLI_PATH, "sweep", "--model", path.join(TINY, "llama"), "--data", TEXT, "--window", "16", "--unit-size", "1", "--limit", "60", "--bootstrap", "200", "--out", out, "--quiet"];
  const full = path.join(dir, "full");
  const r = await runCli(args(full).slice(1), { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);

  const killed = path.join(dir, "killed");
  const child = spawn(process.execPath, args(killed), { stdio: "ignore" });
  const parts = path.join(killed, "parts");
  const doneUnits = () => (fs.existsSync(parts) ? fs.readdirSync(parts).filter((f) => f.endsWith(".json")).length : 0);
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
  const deadline = Date.now() + 20_000;
  while (doneUnits() < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
  child.kill("SIGKILL");
  assert.equal(await exited, "SIGKILL", "the sweep was killed, not finished");
  const before = doneUnits();
  assert.ok(before >= 5 && before < 60, `killed mid-run with ${before} of 60 units done`);
  assert.ok(!fs.existsSync(path.join(killed, "summary.json")));

  const again = await runCli(args(killed).slice(1).filter((a) => a !== "--quiet"), { timeoutMs: 30_000 });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`${60 - before} units computed, ${before} already done`));
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(killed, "summary.json"), "utf8")), JSON.parse(fs.readFileSync(path.join(full, "summary.json"), "utf8")));
  const all = "SELECT * FROM rows ORDER BY prompt, kind, position, label, layer";
  const a = await querySweep(full, all);
  const b = await querySweep(killed, all);
  assert.equal(a.rows.length, b.rows.length);
  assert.deepEqual(b.rows, a.rows);
  assert.equal(fs.readdirSync(parts).filter((f) => f.endsWith(".tmp")).length, 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("linear lens: least squares beats the identity, saves and reads back, sweeps as a lens", async () => {
  const dir = tmp();
  const model = await LoadedModel.load({ kind: "hf-folder", dir: path.join(TINY, "llama") }, quiet);
  const data = loadSweepData(TEXT, model.tokenizer, { window: 32, limit: 40 });
  const lens = await fitLinearLens(model, data, { ridge: 1e-6, dataFile: TEXT, window: 32, log: null });
  const file = path.join(dir, "lens.safetensors");
  await saveLinearLens(file, lens);
  const back = readLinearLens(file, model);
  assert.deepEqual(back.weights, lens.weights);
  assert.deepEqual(back.biases, lens.biases);
  assert.equal(back.metadata["model_name"], lens.metadata["model_name"]);
  assert.match(back.metadata["model_sha256"]!, /^[0-9a-f]{64}$/);
  // On the fitting text, the fitted map's squared error is below the identity's (least squares).
  const H = model.config.hidden;
  const L = model.config.nLayers;
  const fwd = await model.forward(Array.from({ length: L }, (_, l) => `blocks.${l}.hook_resid_post`), "none");
  let errFit = 0;
  let errId = 0;
  for (let i = 0; i < 5; i++) {
    const run = await fwd.run(data.prompt(i).ids);
    const x = run.hooks.get("blocks.0.hook_resid_post")!;
    const y = run.hooks.get(`blocks.${L - 1}.hook_resid_post`)!;
    for (let t = 1; t < x.length / H; t++) {
      for (let o = 0; o < H; o++) {
        let v = lens.biases[0]![o]!;
        for (let k = 0; k < H; k++) v += lens.weights[0]![o * H + k]! * x[t * H + k]!;
        errFit += (v - y[t * H + o]!) ** 2;
        errId += (x[t * H + o]! - y[t * H + o]!) ** 2;
      }
    }
  }
  assert.ok(errFit < 0.9 * errId, `fitted ${errFit} vs identity ${errId}`);
  // The translator's last layer is the identity, so the KL reference stays the model's output.
  const tr = translatorOf(back, L);
  assert.equal(tr.weight[(L - 1) * H * H], 1);
  // Both lenses in one sweep.
  const out = path.join(dir, "eval");
  const r = await runCli(["sweep", "--model", path.join(TINY, "llama"), "--data", TEXT, "--window", "32", "--limit", "6", "--lens", `logit,linear:${file}`, "--metrics", "kl,ce", "--bootstrap", "50", "--out", out, "--quiet"], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /kl \(linear\)\s+kl \(logit\)/);
  const q = await querySweep(out, "SELECT lens, avg(kl) FROM rows WHERE layer = 0 GROUP BY lens ORDER BY lens");
  assert.deepEqual(q.rows.map((row) => row[0]), ["linear", "logit"]);
  // `lens --lens linear:FILE`: layer 0 read through its map, the last layer and the output untouched.
  const lr = await runCli(["lens", "--model", path.join(TINY, "llama"), "--prompt", "The cat sat on the mat", "--lens", `linear:${file}`, "--json", "--quiet"], { timeoutMs: 30_000 });
  assert.equal(lr.code, 0, lr.stderr);
  const plain = await runCli(["lens", "--model", path.join(TINY, "llama"), "--prompt", "The cat sat on the mat", "--json", "--quiet"], { timeoutMs: 30_000 });
  const [rl, rp] = [JSON.parse(lr.stdout), JSON.parse(plain.stdout)];
  assert.match(rl.lens.description, /^Linear shortcut lens/);
  assert.deepEqual(rl.layers.at(-1).positions, rp.layers.at(-1).positions);
  assert.deepEqual(rl.final, rp.final);
  assert.notDeepEqual(rl.layers[0].positions.map((c: { kl_to_final: number }) => c.kl_to_final), rp.layers[0].positions.map((c: { kl_to_final: number }) => c.kl_to_final));
  fs.rmSync(dir, { recursive: true, force: true });
});
