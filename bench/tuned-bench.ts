/**
 * The tuned lens's training cost (issue 9), printed as a Markdown section for BENCHMARKS.md and
 * written to --out (default: $TMPDIR/logit-lens-tuned-bench.md):
 *
 * 1. Training time against the tuned-lens package (0.2.0) on PyTorch, same model weights (the
 *    GGUF, dequantized to fp32 for PyTorch), same windows of the same text, same steps, same
 *    optimiser: seconds per step, and the training KL of both, step by step (the same numbers
 *    up to float rounding: a check that the two implement the same training).
 * 2. The choice of engine for the gradient: one layer's loss and gradient for 128 tokens with our
 *    onnxruntime graph (src/tuned/graph.ts) and with TensorFlow.js's automatic differentiation
 *    (tf.grads) on its WebAssembly (XNNPACK) and pure-JS CPU backends.
 *
 *   npm run build && LOGIT_LENS_PYTHON=/path/to/venv/bin/python \
 *     TUNED_LENS_SITE=/folder/with/tuned_lens TFJS_NODE_MODULES=/folder/node_modules \
 *     node dist/bench/tuned-bench.js [--models smollm2-135m-instruct,gemma3-270m] [--steps 4]
 *       [--threads 2] [--window 128] [--autocast none,bf16] [--no-engines] [--data train.txt]
 *       [--out file.md]
 *
 * TUNED_LENS_SITE: `pip install --no-deps --target DIR tuned-lens` (its import needs only torch
 * and transformers; its declared dependencies would change the venv's packages). Without it, or
 * without LOGIT_LENS_PYTHON, the PyTorch rows are skipped with a note. TFJS_NODE_MODULES: a
 * node_modules folder with @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm 4.22.0
 * (`npm install --prefix DIR ...`); without it the TF.js rows are skipped.
 * --data: a text file (default: The Devil's Dictionary from Debian's dict-devil, made with
 * tools/sweep/devils-dictionary.mjs).
 */
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { loadModel } from "../src/index.js";
import { cacheRoot } from "../src/sources/cache.js";
import { resolveModelSource } from "../src/sources/resolve.js";
import { createProgress } from "../src/progress.js";
import { loadSweepData } from "../src/sweep/data.js";
import { unembeddingOf } from "../src/architectures/index.js";
import { DEFAULT_OPTIMIZER } from "../src/tuned/optimizer.js";
import { stepWindows, trainTunedLens, TunedLensGradient } from "../src/tuned/train.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { values: args } = parseArgs({
  options: {
    models: { type: "string", default: "smollm2-135m-instruct,gemma3-270m" },
    steps: { type: "string", default: "4" },
    threads: { type: "string", default: "2" },
    data: { type: "string" },
    out: { type: "string", default: path.join(os.tmpdir(), "logit-lens-tuned-bench.md") },
    window: { type: "string", default: "128" },
    autocast: { type: "string", default: "none,bf16" },
    "no-engines": { type: "boolean", default: false },
  },
});
const STEPS = Number(args.steps);
const THREADS = Number(args.threads);
const WINDOW = Number(args.window);
process.env["LOGIT_LENS_THREADS"] = String(THREADS);
const PYTHON = process.env["LOGIT_LENS_PYTHON"];
const SITE = process.env["TUNED_LENS_SITE"];
const TFJS = process.env["TFJS_NODE_MODULES"];
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const log = (s: string) => process.stderr.write(`${s}\n`);

function dataFile(): string {
  if (args.data) return args.data;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ll-tuned-bench-"));
  execFileSync(process.execPath, [path.join(ROOT, "tools/sweep/devils-dictionary.mjs"), dir], { stdio: "inherit" });
  return path.join(dir, "train.txt");
}

/** PyTorch's fp32 copy of the GGUF, made once by reference_bench.py (as `npm run bench` does). */
async function referenceFolder(alias: string): Promise<string> {
  const dir = path.join(cacheRoot(), "bench-reference", alias);
  if (fs.existsSync(path.join(dir, "model.safetensors"))) return dir;
  const src = await resolveModelSource(alias, { progress: createProgress({ quiet: true }) });
  if (src.kind !== "gguf") throw new Error(`${alias} is not a GGUF`);
  execFileSync(PYTHON!, [path.join(ROOT, "bench/reference_bench.py"), "prepare", src.path, dir, String(THREADS)], { stdio: ["ignore", "ignore", "inherit"] });
  return dir;
}

interface TrainRow {
  model: string;
  tokensPerStep: number;
  layers: number;
  vocab: number;
  ours: { stepS: number[]; history: number[] };
  torch?: { stepS: number[]; history: number[]; autocast: string; torch: string }[];
  torchNote?: string;
}

async function trainComparison(alias: string, text: string): Promise<TrainRow> {
  const model = await loadModel(alias);
  const data = loadSweepData(text, model.tokenizer, { window: WINDOW });
  const settings = { optimizer: { ...DEFAULT_OPTIMIZER, steps: STEPS }, windowsPerStep: 1, seed: 0 };
  const stamps: number[] = [];
  let t = Date.now();
  log(`${alias}: logit-lens, ${STEPS} steps`);
  const trained = await trainTunedLens(model, data, {
    ...settings,
    log: (line) => {
      const now = Date.now();
      stamps.push((now - t) / 1000);
      t = now;
      log(line);
    },
  });
  const row: TrainRow = { model: alias, tokensPerStep: WINDOW, layers: model.config.nLayers - 1, vocab: model.config.vocabSize, ours: { stepS: stamps, history: trained.lossHistory } };
  if (!PYTHON || !SITE) {
    row.torchNote = "LOGIT_LENS_PYTHON or TUNED_LENS_SITE not set";
    return row;
  }
  const dir = await referenceFolder(alias);
  const steps = stepWindows(data.count, settings.seed, STEPS, 1).map((w) => w.map((i) => data.prompt(i).ids));
  row.torch = [];
  for (const autocast of args.autocast!.split(",")) {
    const job = path.join(os.tmpdir(), `ll-tuned-bench-${process.pid}.json`);
    fs.writeFileSync(job, JSON.stringify({ steps, threads: THREADS, autocast }));
    log(`${alias}: tuned-lens on PyTorch (${autocast === "bf16" ? "bf16 autocast" : "fp32"}), ${STEPS} steps`);
    const r = spawnSync(PYTHON, [path.join(ROOT, "bench/tuned_reference.py"), dir, job], {
      env: { ...process.env, PYTHONPATH: [SITE, process.env["PYTHONPATH"]].filter(Boolean).join(path.delimiter), OMP_NUM_THREADS: String(THREADS) },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      maxBuffer: 1 << 26,
    });
    fs.rmSync(job, { force: true });
    if (r.status !== 0) {
      row.torchNote = `tuned_reference.py failed (exit ${r.status})`;
      break;
    }
    const o = JSON.parse(r.stdout) as { step_s: number[]; loss_history: number[]; autocast: string; torch: string };
    row.torch.push({ stepS: o.step_s, history: o.loss_history, autocast: o.autocast, torch: o.torch });
  }
  return row;
}

/** The part of TensorFlow.js this bench calls (it is not a dependency of the project: no types). */
type TfTensor = { data(): Promise<Float32Array> };
type TfFn = (...args: unknown[]) => TfTensor;
interface Tf {
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  valueAndGrads(f: (...x: TfTensor[]) => TfTensor): (x: TfTensor[]) => { value: TfTensor; grads: TfTensor[] };
  dispose(x: unknown): void;
  disposeVariables(): void;
  [op: string]: unknown;
}

interface GradRow {
  engine: string;
  seconds: number[];
  loss: number;
  note?: string;
}

/** One layer's loss + gradient, N = WINDOW tokens of SmolLM2: onnxruntime graph vs TF.js autodiff. */
async function engineComparison(text: string): Promise<{ rows: GradRow[]; shape: string }> {
  const model = await loadModel("smollm2-135m-instruct");
  const cfg = model.config;
  const H = cfg.hidden;
  const V = cfg.vocabSize;
  const data = loadSweepData(text, model.tokenizer, { window: WINDOW });
  const g = new TunedLensGradient(model);
  const batch = await g.residuals([data.prompt(0).ids]);
  const N = batch.tokens;
  const layer = 14;
  const two = [batch.resid[layer]!, batch.resid[cfg.nLayers - 1]!];
  const zeroW = new Float32Array(H * H);
  const zeroB = new Float32Array(H);
  const rows: GradRow[] = [];
  // Ours: one layer's residual, then the final one.
  const ours: number[] = [];
  let oursLoss = 0;
  for (let i = 0; i < 4; i++) {
    const t = performance.now();
    const o = await g.lossAndGradient(two, N, zeroW, zeroB);
    ours.push((performance.now() - t) / 1000);
    oursLoss = o.loss[0]!;
  }
  rows.push({ engine: "onnxruntime graph (ours)", seconds: ours.slice(1), loss: oursLoss });
  if (!TFJS) return { rows, shape: `N ${N}, hidden ${H}, vocab ${V}` };

  const req = createRequire(path.join(TFJS, "noop.js"));
  // The umbrella package: tfjs-core, the CPU backend, and the gradients registered (core alone has none).
  const tf = req("@tensorflow/tfjs") as Tf;
  const op = (name: string) => tf[name] as TfFn;
  const [mul, add, sub, div, rsqrt, mean, square, logSoftmax, matMul, exp, sum] = ["mul", "add", "sub", "div", "rsqrt", "mean", "square", "logSoftmax", "matMul", "exp", "sum"].map(op) as TfFn[];
  const wasm = req("@tensorflow/tfjs-backend-wasm") as { setThreadsCount?: (n: number) => void };
  wasm.setThreadsCount?.(THREADS);
  // The unembedding and final-norm weight as the lens reads them (fp32).
  const U = await unembeddingMatrix(model);
  const normW = await normWeight(model);
  const eps = unembeddingOf(cfg).eps;
  for (const backend of ["wasm", "cpu"]) {
    await tf.setBackend(backend);
    await tf.ready();
    const h = op("tensor2d")(two[0]!, [N, H]);
    const hf = op("tensor2d")(two[1]!, [N, H]);
    const Ut = op("tensor2d")(U, [V, H]);
    const w = op("tensor1d")(normW);
    const norm = (x: TfTensor) => mul!(mul!(x, rsqrt!(add!(mean!(square!(x), -1, true), eps))), w);
    const logp = logSoftmax!(matMul!(norm(hf), Ut, false, true));
    const p = exp!(logp);
    const f = (A: TfTensor, b: TfTensor) => {
      const hp = add!(add!(h, matMul!(h, A)), b);
      const logq = logSoftmax!(matMul!(norm(hp), Ut, false, true));
      return div!(sum!(mul!(p, sub!(logp, logq))), N);
    };
    const A = op("zeros")([H, H]);
    const b = op("zeros")([H]);
    const secs: number[] = [];
    let loss = NaN;
    const runs = backend === "cpu" ? 2 : 4;
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      const { value, grads } = tf.valueAndGrads(f)([A, b]);
      await Promise.all(grads.map((x) => x.data()));
      loss = (await value.data())[0]!;
      secs.push((performance.now() - t) / 1000);
      tf.dispose([value, ...grads]);
      log(`tfjs ${backend}: ${f2(secs.at(-1)!)} s`);
    }
    rows.push({ engine: `TensorFlow.js 4.22 tf.valueAndGrads, ${backend === "wasm" ? "WebAssembly backend (XNNPACK, SIMD)" : "pure-JS CPU backend"}`, seconds: secs.slice(1), loss });
    tf.disposeVariables();
    tf.dispose([h, hf, Ut, w, logp, p, A, b]);
  }
  return { rows, shape: `N ${N} tokens, hidden ${H}, vocab ${V}` };
}

/** The unembedding and norm weight in fp32, read back through a one-op onnxruntime graph (the lens's own copy). */
async function unembeddingMatrix(model: Awaited<ReturnType<typeof loadModel>>): Promise<Float32Array> {
  return readWeight(model, unembeddingOf(model.config).matrix, true);
}
async function normWeight(model: Awaited<ReturnType<typeof loadModel>>): Promise<Float32Array> {
  return readWeight(model, unembeddingOf(model.config).normWeight, false);
}
async function readWeight(model: Awaited<ReturnType<typeof loadModel>>, name: string, lens: boolean): Promise<Float32Array> {
  const { GraphBuilder } = await import("../src/graph/builder.js");
  const { createSession, runSession } = await import("../src/graph/session.js");
  const g = new GraphBuilder(`bench-read-${name.replace(/\W/g, "-")}`);
  const w = lens ? model.lensWeightsFor(g) : model.weightsFor(g);
  g.output(g.op1("Identity", [w.get(name)]), "w");
  const s = await createSession(g, model.store.dir, model.lensTuning());
  const o = await runSession(s, lens ? model.lensFeeds() : {}, "bench weight read");
  return o["w"]!.data as Float32Array;
}

async function main(): Promise<void> {
  const text = dataFile();
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const load = os.loadavg().map(f2).join(", ");
  const train: TrainRow[] = [];
  for (const alias of args.models!.split(",").filter(Boolean)) train.push(await trainComparison(alias.trim(), text));
  let engines: Awaited<ReturnType<typeof engineComparison>> | undefined;
  let enginesNote = "";
  try {
    engines = args["no-engines"] ? undefined : await engineComparison(text);
  } catch (e) {
    enginesNote = `engine comparison failed: ${(e as Error).message.split("\n")[0]}`;
    log(enginesNote);
  }
  const lines = [
    `## The tuned lens: training time (issue 9)`,
    ``,
    `Measured by \`node dist/bench/tuned-bench.js --steps ${STEPS} --threads ${THREADS}\` on ${cpu}, ${os.cpus().length} cores, ${THREADS} threads for every engine; load average at the start ${load} (a shared machine: other work was running). Data: ${path.basename(text)} (Bierce, "The Devil's Dictionary", public domain, Debian's dict-devil), windows of ${WINDOW} tokens, one window per step, the same windows in the same order for both. Steps of the tuned-lens recipe: SGD + Nesterov, lr 0.1, clip 1, translators of blocks 0..L-2.`,
    ``,
    `| model | engine | s / step (median of steps 2..${STEPS}) | first step | token-layers / s | training KL, step 1 -> ${STEPS} (mean over layers) |`,
    `|---|---|---|---|---|---|`,
  ];
  for (const r of train) {
    const perStep = (s: number[]) => median(s.slice(1));
    const rate = (s: number[]) => (r.tokensPerStep * r.layers) / perStep(s);
    lines.push(`| ${r.model} (${r.layers} translators, vocab ${r.vocab}) | logit-lens (onnxruntime) | ${f2(perStep(r.ours.stepS))} | ${f2(r.ours.stepS[0]!)} | ${rate(r.ours.stepS).toFixed(0)} | ${r.ours.history.map(f2).join(" → ")} |`);
    for (const t of r.torch ?? []) {
      lines.push(`| | tuned-lens 0.2.0, PyTorch ${t.torch}${t.autocast === "bf16" ? ", bf16 autocast (as tuned-lens)" : ", fp32"} | ${f2(perStep(t.stepS))} | ${f2(t.stepS[0]!)} | ${rate(t.stepS).toFixed(0)} | ${t.history.map(f2).join(" → ")} |`);
    }
    if (r.torchNote) lines.push(`| | tuned-lens: not run (${r.torchNote}) | | | | |`);
  }
  if (engines) lines.push(
    ``,
    `One layer's loss and gradient (${engines.shape}; SmolLM2's layer 14; median of the warm runs, seconds):`,
    ``,
    `| engine | seconds | loss (nats) |`,
    `|---|---|---|`,
    ...engines.rows.map((r) => `| ${r.engine} | ${f2(median(r.seconds))} | ${r.loss.toFixed(4)} |`),
  );
  if (enginesNote) lines.push(``, enginesNote);
  if (engines && !TFJS) lines.push(``, `TF.js rows not run: TFJS_NODE_MODULES not set.`);
  const md = lines.join("\n");
  process.stdout.write(`${md}\n`);
  fs.writeFileSync(args.out!, `${md}\n`);
  log(`written to ${args.out}`);
}

await main();
