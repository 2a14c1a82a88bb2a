/**
 * What our stack can use on a GPU machine (issue "Big models", GPU part): onnxruntime-node's
 * execution providers as bundled (`listSupportedBackends`), the kernels the lens relies on (fp32
 * MatMul and the 4-bit MatMulNBits at an 8B layer's MLP shape) on each provider, and a whole logit
 * lens through the engine with LOGIT_LENS_EP set, compared with the CPU run cell by cell.
 * Needs only the engine's modules (no CLI), so it can run from a small copy of the project:
 *
 *   node dist/bench/gpu-probe.js [--providers cpu,webgpu] [--out FILE]                # the kernels
 *   node dist/bench/gpu-probe.js --model FILE.gguf [--providers cpu,webgpu] [--out FILE]  # a whole lens
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import ort from "onnxruntime-node";
import { GraphBuilder } from "../src/graph/builder.js";
import { LoadedModel } from "../src/engine/model.js";
import { LogitLens } from "../src/lens/logit-lens.js";
import type { Progress } from "../src/progress.js";

const { values } = parseArgs({ options: { model: { type: "string" }, providers: { type: "string" }, out: { type: "string" }, tokens: { type: "string" } } });
const providers = (values.providers ?? "cpu,webgpu").split(",");
const lines: string[] = [];
const say = (s: string) => { console.log(s); lines.push(s); };
const quiet: Progress = { start() {}, update() {}, done() {}, info() {} };

say(`# GPU probe, ${new Date().toISOString()}`);
say(`CPU: ${os.cpus()[0]?.model} x ${os.cpus().length}; onnxruntime-node backends: ${JSON.stringify((ort as unknown as { listSupportedBackends?: () => unknown }).listSupportedBackends?.())}`);

/** A [K, N] product, fp32 or 4-bit blocks of 32, timed on one provider (best of 5 after a warm-up). */
async function kernel(kind: "fp32" | "q4", ep: string, rows: number, K: number, N: number): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gpu-probe-"));
  try {
    const g = new GraphBuilder(`k-${kind}`);
    const x = g.input("x", "float32", ["rows", K]);
    let y;
    if (kind === "fp32") {
      const w = new Float32Array(K * N).map((_, i) => Math.sin(i) * 0.01);
      fs.writeFileSync(path.join(dir, "w.bin"), new Uint8Array(w.buffer));
      y = g.matmul(x, g.weight("w", { location: "w.bin", offset: 0, length: w.byteLength, shape: [K, N] }));
    } else {
      const data = new Uint8Array((N * K) / 2).map((_, i) => (i * 2654435761) >>> 24);
      const scales = new Float32Array((N * K) / 32).fill(0.01);
      fs.writeFileSync(path.join(dir, "w.bin"), Buffer.concat([Buffer.from(data), Buffer.from(scales.buffer)]));
      g.weight("w", { location: "w.bin", offset: 0, length: data.length, shape: [N, K / 32, 16] }, "uint8");
      const s = g.weight("s", { location: "w.bin", offset: data.length, length: scales.byteLength, shape: [N, K / 32] });
      y = g.op("MatMulNBits", [x, { name: "w" }, s], { K, N, bits: 4, block_size: 32, accuracy_level: 0 }, { domain: "com.microsoft" })[0]!;
    }
    g.output(y, "y");
    const session = await ort.InferenceSession.create(g.toModelProto(), {
      executionProviders: [ep],
      graphOptimizationLevel: "all",
      logSeverityLevel: 3,
      extra: { session: { model_external_initializers_file_folder_path: dir } },
    });
    const xs = new ort.Tensor("float32", new Float32Array(rows * K).map((_, i) => Math.cos(i)), [rows, K]);
    await session.run({ x: xs });
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await session.run({ x: xs });
      best = Math.min(best, performance.now() - t);
    }
    await session.release();
    return `${best.toFixed(2)} ms (${((2 * rows * K * N) / best / 1e6).toFixed(0)} GFLOP/s)`;
  } catch (e) {
    return `failed: ${String((e as Error).message).split("\n")[0]}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (!values.model) {
  say("\n## Kernels, [rows x 4096] @ [4096 x 14336] (an 8B layer's MLP)");
  for (const ep of providers) {
    for (const rows of [1, 64, 512]) say(`- ${ep}, ${rows} rows: fp32 MatMul ${await kernel("fp32", ep, rows, 4096, 14336)}; 4-bit MatMulNBits ${await kernel("q4", ep, rows, 4096, 14336)}`);
  }
}

if (values.model) {
  say(`\n## Whole logit lens through the engine: ${path.basename(values.model)}`);
  const text = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is";
  const results: Record<string, { top: number[]; ms: number; load: number }> = {};
  for (const ep of providers) {
    process.env["LOGIT_LENS_EP"] = ep;
    try {
      let t = performance.now();
      const model = await LoadedModel.load({ kind: "gguf", path: values.model }, quiet);
      const ids = model.tokenizer.encode(text).slice(0, Number(values.tokens ?? 64));
      const lens = new LogitLens(model);
      await lens.apply(ids, { topK: 1 });
      const load = performance.now() - t;
      t = performance.now();
      const r = await lens.apply(ids, { topK: 1 });
      const ms = performance.now() - t;
      const top = [...r.readouts.flatMap((l) => l.cells.map((c) => c.topIds[0]!)), ...r.final.map((c) => c.topIds[0]!)];
      results[ep] = { top, ms, load };
      say(`- ${ep}: load + first lens ${(load / 1000).toFixed(1)} s; warm lens over ${ids.length} tokens x ${r.readouts.length} readouts ${(ms / 1000).toFixed(2)} s`);
    } catch (e) {
      say(`- ${ep}: failed: ${String((e as Error).message).split("\n")[0]}`);
    }
  }
  const cpu = results["cpu"];
  for (const [ep, r] of Object.entries(results)) {
    if (ep === "cpu" || !cpu) continue;
    const same = r.top.filter((id, i) => id === cpu.top[i]).length;
    say(`- ${ep} vs cpu: top-1 equal in ${same} of ${r.top.length} cells; ${(cpu.ms / r.ms).toFixed(2)}x the CPU's speed`);
  }
}
if (values.out) fs.writeFileSync(values.out, lines.join("\n") + "\n");
