/**
 * What quantization does to the lens (issue 8's comparison, docs/serve-compare.md): SmolLM2-135M
 * in F16 and in Q4_0 (test/web/smollm2-variants.ts makes both from the cached model), one prompt,
 * read through the explorer's own API on 127.0.0.1: both lens reports (POST /api/lens) and the exact
 * per-cell KL (POST /api/kl). Prints, per readout, the mean and largest KL(F16 ‖ Q4_0) over the
 * positions, the mean KL(Q4_0 ‖ F16), and at how many positions the two lenses' top-1 agree.
 *
 *   npm run build && node dist/bench/serve-compare.js ["prompt"]
 */
import { loadModel } from "../src/index.js";
import type { LensReport } from "../src/outputs/report.js";
import type { KlResult } from "../src/server/jobs.js";
import { createServer } from "../src/server/server.js";
import { smollm2Variants } from "../test/web/smollm2-variants.js";

const prompt = process.argv[2] ?? "The capital of France is Paris. The capital of Germany is";
const { f16, q4 } = await smollm2Variants();
const server = await createServer({ port: 0, model: f16, load: (spec) => loadModel(spec) });
await server.app.listen({ host: "127.0.0.1", port: 0 });
const port = (server.app.server.address() as { port: number }).port;
server.setPort(port);

/** The last event of an NDJSON job stream. */
async function last(route: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const e = JSON.parse((await res.text()).trim().split("\n").at(-1)!) as Record<string, unknown>;
  if (e["type"] === "error") throw new Error(e["error"] as string);
  return e;
}

const a = (await last("/api/lens", { prompt, model: f16 }))["report"] as LensReport;
const b = (await last("/api/lens", { prompt, model: q4 }))["report"] as LensReport;
const kl = (await last("/api/kl", { a: { prompt, model: f16 }, b: { prompt, model: q4 } }))["result"] as KlResult;
await server.app.close();

const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const top1 = (r: LensReport, layer: number) => (layer === -1 ? r.final.positions : r.layers[layer]!.positions).map((c) => c.top[0]!.id);
console.log(`prompt: ${JSON.stringify(prompt)} (${a.tokens.length} tokens: ${a.tokens.map((t) => t.text).join("|")})`);
console.log(`A: ${f16}\nB: ${q4}\n`);
console.log("| readout | mean KL(F16 ‖ Q4_0) | largest (position) | mean KL(Q4_0 ‖ F16) | same top-1 |");
console.log("|---|---|---|---|---|");
kl.rows.forEach((_, i) => {
  const layer = kl.layers[i]!;
  const ta = top1(a, layer);
  const tb = top1(b, layer);
  const max = Math.max(...kl.kl_ab[i]!);
  const agree = ta.filter((id, j) => id === tb[j]).length;
  console.log(`| ${layer === -1 ? "output" : `L${layer}`} | ${mean(kl.kl_ab[i]!).toFixed(3)} | ${max.toFixed(2)} (${kl.kl_ab[i]!.indexOf(max)}) | ${mean(kl.kl_ba[i]!).toFixed(3)} | ${agree}/${ta.length} |`);
});
const fmt = (r: LensReport, p: number) => r.final.positions[p]!.top.slice(0, 3).map((t) => `${t.text} ${(t.prob * 100).toFixed(1)}%`).join(", ");
for (const p of [4, a.positions.length - 1]) console.log(`\noutput after position ${p} (${a.tokens[p]!.text}): F16 ${fmt(a, p)} | Q4_0 ${fmt(b, p)}`);
