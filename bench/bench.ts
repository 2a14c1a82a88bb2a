/**
 * `npm run bench`: logit-lens (onnxruntime-node) against transformers + PyTorch and llama.cpp
 * (node-llama-cpp), on the real models, side by side; writes BENCHMARKS.md and prints the tables.
 *
 *   npm run bench [-- --models smollm2-135m-instruct,gemma3-270m] [--threads 2] [--runs 3]
 *                 [--budget 15] [--no-torch] [--no-llama] [--quick] [--out BENCHMARKS.md]
 *
 * Every measurement of one engine on one model runs in its own child process, so that the peak
 * memory (VmHWM / ru_maxrss) of one does not leak into another:
 *   1. `prepare`: resolve the alias (fetching it if needed) and load it once, so the fp32 weights are
 *      converted and cached; the timed child then measures a warm load. The same for PyTorch: the
 *      GGUF is dequantized by transformers once and saved as fp32 safetensors.
 *   2. `ours`: load, full lens (split into forward pass and lens graph), prefill, decode, profile.
 *   3. `llama`: node-llama-cpp on the same GGUF (quantized weights, run as they are).
 *   4. `reference_bench.py measure`: transformers + PyTorch.
 * All three get the same token ids (from our tokenizer). Each timing: a warm-up, then up to
 * `--runs` runs (5 for the cheap prefill runs), fewer once `--budget` seconds are spent; the tables
 * give the best run (this machine is shared, and contention only ever adds time), the raw samples
 * are at the end of BENCHMARKS.md.
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type ort from "onnxruntime-node";
import { LoadedModel } from "../src/engine/model.js";
import { LogitLens } from "../src/lens/logit-lens.js";
import { createProgress } from "../src/progress.js";
import { resolveModelSource } from "../src/sources/resolve.js";
import { cacheRoot } from "../src/sources/cache.js";
import { ort as runtime } from "../src/graph/session.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Repository root: this file runs as dist/bench/bench.js. */
const ROOT = path.resolve(HERE, "..", "..");
const PEAK_GFLOPS = 77;
const MODELS = ["smollm2-135m-instruct", "gemma3-270m"];
/** The PyTorch lens keeps one [layers x chunk x vocab] fp32 buffer within this, as logit-lens does. */
const CHUNK_BYTES = 192 * 1024 * 1024;

/** English prose, long enough for 256 tokens with either tokenizer. */
const PROMPT = [
  "The logit lens is a simple way to look inside a language model. A transformer keeps a running",
  "vector for every token, the residual stream, and each layer adds its own contribution to it.",
  "At the very end, a final normalisation and the unembedding matrix turn that vector into scores",
  "for every word in the vocabulary. The trick is to apply that same read-out to the residual",
  "stream after every layer, not only the last one, and to see what the model would predict if it",
  "had to stop there. Early layers often guess the current token or something close to it, middle",
  "layers begin to form the answer, and late layers sharpen it. When a model is asked for an emoji",
  "that does not exist, such as a seahorse, the middle layers can be seen assembling the idea of a",
  "sea creature and the idea of an emoji, and the last layers snapping it to the closest token that",
  "does exist, often a tropical fish. Researchers use this to find where facts are recalled, where",
  "a translation switches language, and where a wrong answer first appears. Engineers use it to",
  "debug fine-tuning runs, and curious readers use it to build an intuition for what the numbers",
  "inside a network are doing. The method has known traps: the norm must be recomputed for every",
  "layer's residual rather than reusing the final layer's scale, some families add one to their",
  "norm weights, others scale the embeddings, and a few soft-cap their logits with a hyperbolic",
  "tangent before the softmax. A careful tool handles each of these, reports entropy and the",
  "divergence from the final distribution, and shows the raw bytes of tokens that are only parts",
  "of a character, so that an emoji split over three tokens is not hidden behind replacement marks.",
  "Running all of this on a laptop, without Python, on the quantized files people already have,",
  "is the point of the project, and it has to be fast enough that nobody waits for the answer.",
].join(" ");

// ---------------------------------------------------------------------------------------------
// shared helpers

interface Timing {
  best: number;
  median: number;
  samples: number[];
}

interface Spec {
  alias: string;
  threads: number;
  runs: number;
  budgetS: number;
  /** Runs for the cheap measurements (prefill); the budget still caps them. */
  prefillRuns: number;
  prefill: number[];
  lens: number[];
  decodePrompt: number;
  decodeNew: number;
  ids?: number[];
  chunkBytes: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function summary(samples: number[]): Timing {
  return { best: Math.min(...samples), median: median(samples), samples };
}

/**
 * One warm-up (optional), then up to `runs` timed runs, stopping once `budgetS` is spent. `fn` may
 * return the seconds it measured itself (to leave set-up out); otherwise its wall time counts.
 */
async function timed(fn: () => Promise<number | void>, runs: number, budgetS: number, warmup = true): Promise<Timing> {
  if (warmup) await fn();
  const samples: number[] = [];
  while (samples.length < runs && (samples.length === 0 || samples.reduce((a, b) => a + b, 0) < budgetS)) {
    const t0 = performance.now();
    const own = await fn();
    samples.push(typeof own === "number" ? own : (performance.now() - t0) / 1000);
  }
  return summary(samples);
}

function procStatus(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync("/proc/self/status", "utf8").split("\n")) {
    const m = /^(Vm\w+|Rss\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]!] = Number(m[2]) * 1024;
  }
  return out;
}

function argmax(a: Float32Array, offset: number, n: number): number {
  let best = offset;
  for (let i = offset + 1; i < offset + n; i++) if (a[i]! > a[best]!) best = i;
  return best - offset;
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

/** One timed onnxruntime run. */
interface RecordedRun {
  session: ort.InferenceSession;
  feeds: Record<string, ort.Tensor>;
  seconds: number;
}

/**
 * Wraps onnxruntime's InferenceSession.create and .run (the engine's sessions are made through the
 * same module): remembers each session's .onnx file, and times runs while `calls` is set. This
 * splits a lens call into forward pass and lens graph without touching the engine's code.
 */
const recorder: { calls: RecordedRun[] | undefined; files: Map<ort.InferenceSession, string> } = { calls: undefined, files: new Map() };
{
  type Create = (...args: unknown[]) => Promise<ort.InferenceSession>;
  type Run = (this: ort.InferenceSession, feeds: Record<string, ort.Tensor>, ...rest: unknown[]) => Promise<unknown>;
  const factory = runtime.InferenceSession as unknown as { create: Create; prototype: { run: Run } };
  const create = factory.create.bind(factory);
  factory.create = async (...args: unknown[]) => {
    const session = await create(...args);
    if (typeof args[0] === "string") recorder.files.set(session, args[0]);
    return session;
  };
  const run = factory.prototype.run;
  factory.prototype.run = async function (this: ort.InferenceSession, feeds: Record<string, ort.Tensor>, ...rest: unknown[]) {
    const t0 = performance.now();
    const out = await run.call(this, feeds, ...rest);
    recorder.calls?.push({ session: this, feeds, seconds: (performance.now() - t0) / 1000 });
    return out;
  };
}

/** Layer x position rows in a lens-graph feed (`resid` is [.., .., hidden]). */
function residRows(feeds: Record<string, ort.Tensor>): number {
  const r = feeds["resid"];
  return r ? r.size / (r.dims[r.dims.length - 1] as number) : 0;
}

// ---------------------------------------------------------------------------------------------
// child: warm-up load (converts the weights once)

async function childPrepare(spec: Spec): Promise<object> {
  const progress = createProgress({ quiet: true });
  const compiled = path.join(cacheRoot(), "compiled");
  const before = new Set(fs.existsSync(compiled) ? fs.readdirSync(compiled) : []);
  const t0 = performance.now();
  const source = await resolveModelSource(spec.alias, { progress });
  const model = await LoadedModel.load(source, progress);
  const loadS = (performance.now() - t0) / 1000;
  const fresh = path.basename(model.store.dir);
  return { loadS, converted: !before.has(fresh), path: source.kind === "gguf" ? source.path : source.dir };
}

// ---------------------------------------------------------------------------------------------
// child: logit-lens

async function childOurs(spec: Spec): Promise<object> {
  const progress = createProgress({ quiet: true });
  const mem: Record<string, number> = {};
  const t0 = performance.now();
  const source = await resolveModelSource(spec.alias, { progress });
  const model = await LoadedModel.load(source, progress);
  const loadS = (performance.now() - t0) / 1000;
  mem["afterLoad"] = procStatus()["VmHWM"]!;
  const cfg = model.config;
  const V = cfg.vocabSize;
  const H = cfg.hidden;
  const L = cfg.nLayers;
  let ids = model.tokenizer.encode(PROMPT);
  while (ids.length < Math.max(...spec.prefill, ...spec.lens)) ids = ids.concat(model.tokenizer.encode(` ${PROMPT}`));
  ids = ids.slice(0, Math.max(...spec.prefill, ...spec.lens, spec.decodePrompt));
  const { runs, budgetS } = spec;

  // The full lens first (so the peak after it is the `lens` command's own). Every onnxruntime run
  // is timed by the recorder: each lens call splits into its forward pass (the session fed
  // input_ids) and the lens graph (every other session run); the rest is JavaScript.
  const lens = new LogitLens(model);
  const lensRun: Record<string, Timing> = {};
  const forwardHooks: Record<string, Timing> = {};
  const lensOnly: Record<string, Timing> = {};
  let lensFirstS = 0;
  let lensTop1: number[][] = [];
  let lensCalls: RecordedRun[] = [];
  for (const [i, n] of spec.lens.entries()) {
    const x = ids.slice(0, n);
    if (i === 0) {
      // Doubles as the warm-up: it builds the hook and lens sessions.
      const t = performance.now();
      const first = await lens.run(x, { topK: 10 });
      lensFirstS = (performance.now() - t) / 1000;
      lensTop1 = first.readouts.map((r) => r.cells.map((c) => c.topIds[0]!));
    }
    const fw: number[] = [];
    const lg: number[] = [];
    lensRun[n] = await timed(
      async () => {
        recorder.calls = [];
        await lens.run(x, { topK: 10 });
        const calls = recorder.calls;
        recorder.calls = undefined;
        fw.push(calls.filter((c) => "input_ids" in c.feeds).reduce((a, c) => a + c.seconds, 0));
        const lensPart = calls.filter((c) => !("input_ids" in c.feeds));
        lg.push(lensPart.reduce((a, c) => a + c.seconds, 0));
        if (i === 0) lensCalls = lensPart;
      },
      runs,
      budgetS,
      false,
    );
    forwardHooks[n] = summary(fw);
    lensOnly[n] = summary(lg);
    log(`  ours lens ${n}: ${lensRun[n]!.best.toFixed(3)} s (forward+hooks ${forwardHooks[n]!.best.toFixed(3)} s, lens graph ${lensOnly[n]!.best.toFixed(3)} s)`);
  }
  mem["afterLens"] = procStatus()["VmHWM"]!;

  // Forward pass: logits for every position (what PyTorch's model(ids) computes), and the last only.
  let t = performance.now();
  const fwdLogits = await model.forward([], true);
  const sessionLogitsS = (performance.now() - t) / 1000;
  t = performance.now();
  const fwdLast = await model.forward([], "last");
  const sessionLastS = (performance.now() - t) / 1000;
  const prefill: Record<string, Timing> = {};
  const prefillLast: Record<string, Timing> = {};
  for (const n of spec.prefill) {
    const x = ids.slice(0, n);
    prefill[n] = await timed(async () => void (await fwdLogits.run(x)), spec.prefillRuns, budgetS);
    prefillLast[n] = await timed(async () => void (await fwdLast.run(x)), spec.prefillRuns, budgetS);
    log(`  ours prefill ${n}: ${prefill[n]!.best.toFixed(3)} s (last-position logits ${prefillLast[n]!.best.toFixed(3)} s)`);
  }
  mem["afterPrefill"] = procStatus()["VmHWM"]!;

  // Greedy decoding with the KV cache: time the decodeNew single-token steps after the prompt.
  const prompt = ids.slice(0, spec.decodePrompt);
  let decodeTokens: number[] = [];
  const decode = async (): Promise<number> => {
    let r = await fwdLast.run(prompt);
    let tok = argmax(r.logits!, r.logits!.length - V, V);
    const toks = [tok];
    const start = performance.now();
    for (let i = 0; i < spec.decodeNew; i++) {
      r = await fwdLast.run([tok], r.cache);
      tok = argmax(r.logits!, 0, V);
      toks.push(tok);
    }
    const s = (performance.now() - start) / 1000;
    decodeTokens = toks;
    return s;
  };
  const decodeT = await timed(decode, runs, budgetS);
  log(`  ours decode: ${(spec.decodeNew / decodeT.best).toFixed(1)} tok/s`);
  const status = procStatus();

  // Where the lens graph's time goes (after the peak was read).
  let profile: object | undefined;
  try {
    profile = await profileLens(lensCalls, spec.threads);
  } catch (e) {
    profile = { error: String((e as Error).message) };
  }

  return {
    ids,
    config: { nLayers: L, hidden: H, vocab: V, architecture: cfg.architecture },
    params: model.info.parameters,
    fileSize: model.info.fileSize,
    tensorTypes: model.info.tensorTypes,
    weightsBinBytes: fs.statSync(path.join(model.store.dir, "weights.bin")).size,
    loadS,
    sessionLogitsS,
    sessionLastS,
    lensFirstS,
    prefill,
    prefillLast,
    lens: lensRun,
    forwardHooks,
    lensOnly,
    // Rows (layer x position) the lens graph multiplied for the first lens size, and in how many runs.
    lensExecutedRows: lensCalls.reduce((a, c) => a + residRows(c.feeds), 0),
    lensChunks: lensCalls.length,
    lensTop1,
    decode: { ...decodeT, newTokens: spec.decodeNew, tokens: decodeTokens },
    peakRssBytes: status["VmHWM"],
    rssFileBytes: status["RssFile"],
    rssAnonBytes: status["RssAnon"],
    hwmBy: mem,
    profile,
  };
}

/**
 * Replays a few recorded lens-graph runs in a session of the same .onnx file with onnxruntime's
 * profiler on, and sums kernel time by operator type (scaled to one run per replayed chunk).
 */
async function profileLens(calls: RecordedRun[], threads: number): Promise<object> {
  const file = calls[0] ? recorder.files.get(calls[0].session) : undefined;
  if (!file) return { error: "no recorded lens-graph run" };
  // A few chunks are enough for the breakdown: one warm-up, then up to 4 profiled.
  const feeds = calls.slice(0, 5).map((c) => c.feeds);
  const warm = feeds.length > 1 ? feeds.shift()! : feeds[0]!;
  const rows = feeds.reduce((a, f) => a + residRows(f), 0);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-prof-"));
  try {
    const session = await runtime.InferenceSession.create(file, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      logSeverityLevel: 3,
      enableProfiling: true,
      profileFilePrefix: path.join(tmp, "lens"),
    });
    await session.run(warm);
    const t0 = performance.now();
    for (const f of feeds) await session.run(f);
    const wallS = (performance.now() - t0) / 1000;
    session.endProfiling();
    await session.release();
    const json = fs.readdirSync(tmp).filter((f) => f.endsWith(".json"));
    if (json.length === 0) return { error: "onnxruntime wrote no profile" };
    type Event = { cat?: string; name?: string; dur?: number; args?: { op_name?: string } };
    const events = JSON.parse(fs.readFileSync(path.join(tmp, json[0]!), "utf8")) as Event[];
    const byOp: Record<string, number> = {};
    let runUs = 0;
    let runs = 0;
    for (const e of events) {
      if (e.cat === "Node" && e.name?.endsWith("_kernel_time") && e.args?.op_name) {
        byOp[e.args.op_name] = (byOp[e.args.op_name] ?? 0) + (e.dur ?? 0) / 1e6;
      }
      if (e.cat === "Session" && e.name === "model_run") {
        runUs += e.dur ?? 0;
        runs++;
      }
    }
    // Profiling records from session start, so the warm-up run is in the file too: scale it out.
    const scale = feeds.length / Math.max(1, runs);
    const perRun = Object.fromEntries(Object.entries(byOp).map(([k, v]) => [k, v * scale]));
    return { wallS, chunks: feeds.length, of: calls.length, rows, modelRunS: (runUs / 1e6) * scale, byOpS: perRun, file: path.basename(file) };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// child: llama.cpp through node-llama-cpp

async function childLlama(spec: Spec, modelPath: string): Promise<object> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  type Token = import("node-llama-cpp").Token;
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath });
  const loadS = (performance.now() - t0) / 1000;
  const context = await model.createContext({ contextSize: 512, threads: spec.threads, batchSize: 512 });
  const seq = context.getSequence();
  const ids = spec.ids! as Token[];
  const { runs, budgetS } = spec;
  const prefill: Record<string, Timing> = {};
  for (const n of spec.prefill) {
    const x = ids.slice(0, n);
    prefill[n] = await timed(
      async () => {
        await seq.clearHistory();
        const s = performance.now();
        await seq.evaluateWithoutGeneratingNewTokens(x);
        return (performance.now() - s) / 1000;
      },
      spec.prefillRuns,
      budgetS,
    );
    log(`  llama.cpp prefill ${n}: ${prefill[n]!.best.toFixed(3)} s`);
  }
  const prompt = ids.slice(0, spec.decodePrompt);
  const greedy = { generateNext: { token: true, options: { temperature: 0 } } };
  let decodeTokens: Token[] = [];
  const decode = async (): Promise<number> => {
    await seq.clearHistory();
    const first = await seq.controlledEvaluate([...prompt.slice(0, -1), [prompt[prompt.length - 1]!, greedy]]);
    let tok = first[prompt.length - 1]!.next.token!;
    const toks = [tok];
    const s = performance.now();
    for (let i = 0; i < spec.decodeNew; i++) {
      const r = await seq.controlledEvaluate([[tok, greedy]]);
      tok = r[0]!.next.token!;
      toks.push(tok);
    }
    const secs = (performance.now() - s) / 1000;
    decodeTokens = toks;
    return secs;
  };
  const decodeT = await timed(decode, runs, budgetS);
  log(`  llama.cpp decode: ${(spec.decodeNew / decodeT.best).toFixed(1)} tok/s`);
  const status = procStatus();
  const release = llama.llamaCppRelease;
  const result = {
    loadS,
    prefill,
    decode: { ...decodeT, newTokens: spec.decodeNew, tokens: decodeTokens },
    peakRssBytes: status["VmHWM"],
    llamaCpp: `${release.repo}@${release.release}`,
    buildType: llama.buildType,
  };
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return result;
}

// ---------------------------------------------------------------------------------------------
// parent

interface Options {
  models: string[];
  threads: number;
  runs: number;
  budgetS: number;
  torch: boolean;
  llama: boolean;
  quick: boolean;
  out: string;
  argv: string[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    models: MODELS,
    threads: 2,
    runs: 3,
    budgetS: 15,
    torch: true,
    llama: true,
    quick: false,
    out: path.join(ROOT, "BENCHMARKS.md"),
    argv,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--models") o.models = next().split(",").map((s) => s.trim()).filter(Boolean);
    else if (a === "--threads") o.threads = Number(next());
    else if (a === "--runs") o.runs = Number(next());
    else if (a === "--budget") o.budgetS = Number(next());
    else if (a === "--no-torch") o.torch = false;
    else if (a === "--no-llama") o.llama = false;
    else if (a === "--quick") o.quick = true;
    else if (a === "--out") o.out = path.resolve(next());
    else if (a === "--help" || a === "-h") {
      const src = fs.readFileSync(path.join(ROOT, "bench", "bench.ts"), "utf8");
      process.stdout.write(`${src.split("*/")[0]!}*/\n`);
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  if (!Number.isInteger(o.threads) || o.threads < 1) throw new Error("--threads wants a positive integer");
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error("--runs wants a positive integer");
  if (o.quick) o.runs = 1;
  return o;
}

interface ChildResult {
  ok: boolean;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  value?: any;
  error?: string;
  wallS: number;
  loadavg: [number, number];
}

function runChild(cmd: string, args: string[], env: Record<string, string>, stdoutJson: boolean, outFile?: string): Promise<ChildResult> {
  const la0 = os.loadavg()[0]!;
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      const s = d.toString();
      err += s;
      // The children's own progress lines start with two spaces.
      for (const line of s.split("\n")) if (/^\s{2}\S/.test(line)) log(line);
    });
    child.on("error", (e) => resolve({ ok: false, error: e.message, wallS: 0, loadavg: [la0, os.loadavg()[0]!] }));
    child.on("close", (code) => {
      const wallS = (performance.now() - t0) / 1000;
      const loadavg: [number, number] = [la0, os.loadavg()[0]!];
      try {
        if (code !== 0) throw new Error(`exit code ${code}`);
        const text = stdoutJson ? out.trim().split("\n").pop()! : fs.readFileSync(outFile!, "utf8");
        resolve({ ok: true, value: JSON.parse(text), wallS, loadavg });
      } catch (e) {
        const tail = err.trim().split("\n").slice(-6).join(" | ");
        resolve({ ok: false, error: `${(e as Error).message}: ${tail}`, wallS, loadavg });
      }
    });
  });
}

async function nodeChild(mode: string, spec: Spec, extra: string[] = []): Promise<ChildResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-bench-"));
  const specFile = path.join(dir, "spec.json");
  const outFile = path.join(dir, "out.json");
  fs.writeFileSync(specFile, JSON.stringify(spec));
  try {
    const script = fileURLToPath(import.meta.url);
    return await runChild(process.execPath, [script, "--child", mode, specFile, outFile, ...extra], { LOGIT_LENS_THREADS: String(spec.threads) }, false, outFile);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function findPython(): Promise<{ python?: string; note: string }> {
  const candidates = [process.env["LOGIT_LENS_PYTHON"]?.trim(), path.join(ROOT, ".venv", "bin", "python"), "/work/cache/refvenv/bin/python"].filter(
    (c): c is string => Boolean(c),
  );
  const tried: string[] = [];
  for (const c of candidates) {
    const r = await runChild(c, ["-c", "import json, torch, transformers, gguf; print(json.dumps([torch.__version__, transformers.__version__]))"], {}, true);
    if (r.ok) return { python: c, note: `${c} (torch ${r.value[0]}, transformers ${r.value[1]})` };
    tried.push(c);
  }
  return { note: `no python with torch + transformers + gguf found (tried ${tried.join(", ")}; set LOGIT_LENS_PYTHON)` };
}

function machineFacts(): Record<string, string> {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  const simd = ["avx2", "fma", "avx512f"].filter((f) => flags.includes(f)).join(", ") || "none of avx2/fma/avx512f";
  const req = createRequire(import.meta.url);
  const version = (pkg: string): string => {
    try {
      return (JSON.parse(fs.readFileSync(path.join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;
    } catch {
      try {
        return (req(`${pkg}/package.json`) as { version: string }).version;
      } catch {
        return "not installed";
      }
    }
  };
  return {
    nproc: String(os.availableParallelism()),
    cpu: `${model} (${simd})`,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    "onnxruntime-node": version("onnxruntime-node"),
    "node-llama-cpp": version("node-llama-cpp"),
  };
}

/**
 * The machine's real fp32 FMA peak, measured with a small C loop (10 independent AVX2 FMA chains
 * per thread) when a C compiler is at hand; undefined otherwise.
 */
function measureFmaPeak(threads: number): number | undefined {
  const flags = /^flags\s*:\s*(.*)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("avx2") || !flags.includes("fma")) return undefined;
  const cc = ["cc", "gcc", "clang"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0);
  if (!cc) return undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-fma-"));
  try {
    const acc = Array.from({ length: 10 }, (_, i) => `a${i}`);
    const src = `#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define N 200000000L
static void *work(void *arg) {
  volatile float seed = (float)(long)arg * 1e-12f;
  ${acc.map((a, i) => `__m256 ${a} = _mm256_set1_ps(1.0f + ${i + 1}e-4f + seed);`).join(" ")}
  __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-5f);
  for (long i = 0; i < N; i++) { ${acc.map((a) => `${a} = _mm256_fmadd_ps(${a}, b, c);`).join(" ")} }
  __m256 s = ${acc.slice(1).reduce((e, a) => `_mm256_add_ps(${e}, ${a})`, acc[0]!)};
  float o[8]; _mm256_storeu_ps(o, s);
  return (void *)(long)(o[0] > 1e30f);
}
int main(int argc, char **argv) {
  int t = atoi(argv[1]); pthread_t th[256]; struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < t; i++) pthread_create(&th[i], 0, work, (void *)(long)(i + 1));
  for (int i = 0; i < t; i++) pthread_join(th[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%f\\n", t * N * ${acc.length} * 16.0 / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / 1e9);
  return 0;
}
`;
    fs.writeFileSync(path.join(dir, "fma.c"), src);
    const exe = path.join(dir, "fma");
    if (spawnSync(cc, ["-O2", "-mavx2", "-mfma", "-pthread", "-o", exe, path.join(dir, "fma.c")], { stdio: "ignore" }).status !== 0) return undefined;
    let best = 0;
    for (let i = 0; i < 3; i++) {
      const r = spawnSync(exe, [String(threads)], { encoding: "utf8" });
      const v = Number(r.stdout.trim());
      if (r.status === 0 && Number.isFinite(v)) best = Math.max(best, v);
    }
    return best > 0 ? best : undefined;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// --- formatting

const ms = (s: number | undefined): string => (s === undefined ? "n/a" : s < 10 ? `${(s * 1000).toFixed(s < 0.1 ? 1 : 0)} ms` : `${s.toFixed(1)} s`);
const mib = (b: number | undefined): string => (b === undefined ? "n/a" : `${(b / 2 ** 20).toFixed(0)} MiB`);
/** Speed of ours relative to another: > 1 means ours is faster. */
function ratio(ours: number | undefined, other: number | undefined, higherIsBetter = false): string {
  if (ours === undefined || other === undefined || !(ours > 0) || !(other > 0)) return "";
  const r = higherIsBetter ? ours / other : other / ours;
  return r >= 1 ? `**${r.toFixed(2)}x faster**` : `${(1 / r).toFixed(2)}x slower`;
}

interface ModelReport {
  alias: string;
  prep: ChildResult;
  ours: ChildResult;
  llama?: ChildResult;
  torchPrep?: ChildResult;
  torch?: ChildResult;
}

function bestOf(t: Timing | undefined): number | undefined {
  return t?.best;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

function report(
  opts: Options,
  facts: Record<string, string>,
  pythonNote: string,
  reports: ModelReport[],
  started: Date,
  totalS: number,
  spec: Omit<Spec, "alias">,
  measuredPeak: number | undefined,
): { md: string; targets: string[] } {
  const lines: string[] = [];
  const targetLines: string[] = [];
  const cmd = `npm run bench${opts.argv.length ? ` -- ${opts.argv.join(" ")}` : ""}`;
  const torchVersion = reports.find((r) => r.torch?.ok)?.torch?.value;
  const llamaVersion = reports.find((r) => r.llama?.ok)?.llama?.value;
  lines.push("# Benchmarks", "");
  lines.push(
    `Written by \`${cmd}\` (bench/bench.ts) on ${started.toISOString().slice(0, 16).replace("T", " ")} UTC; the whole run took ${(totalS / 60).toFixed(1)} min.`,
    "Every figure below comes from that one run; rerun the command to regenerate this file.",
    "",
  );
  lines.push("## Machine and versions", "");
  lines.push("| | |", "|---|---|");
  for (const [k, v] of Object.entries(facts)) lines.push(`| ${k} | ${v} |`);
  lines.push(`| torch / transformers | ${torchVersion ? `${torchVersion.torch} / ${torchVersion.transformers}` : "not run"} |`);
  lines.push(`| llama.cpp (node-llama-cpp binary) | ${llamaVersion ? `${llamaVersion.llamaCpp} (${llamaVersion.buildType})` : "not run"} |`);
  lines.push(`| reference python | ${pythonNote} |`);
  lines.push(`| threads (all three engines) | ${opts.threads} |`);
  lines.push(`| fp32 peak used for the targets | ${PEAK_GFLOPS} GFLOP/s (shared/DESIGN.md: 2 cores, AVX2 FMA) |`);
  lines.push(
    `| fp32 FMA peak measured now | ${measuredPeak ? `${measuredPeak.toFixed(0)} GFLOP/s (C loop of 10 independent AVX2 FMA chains per thread, ${opts.threads} threads)` : "not measured (no C compiler or no AVX2/FMA)"} |`,
  );
  lines.push("");
  lines.push("## How it is measured", "");
  lines.push(
    `- Same token ids for all three engines (our tokenizer on an English paragraph, the first N of ${Math.max(...spec.prefill, ...spec.lens)} tokens).`,
    `- Each figure: a warm-up, then up to ${opts.runs} runs (${spec.prefillRuns} for prefill), fewer once ${opts.budgetS} s are spent; **the tables give the best run**, the raw samples are at the end. The machine is shared with other work and contention only ever adds time, so the best run is the fairest single number; the load average before/after each child is listed under each model.`,
    "- Each engine x model runs in its own child process; peak memory is that process's VmHWM (Python: ru_maxrss).",
    "- **Load** is a warm load: the weights were already converted to fp32 by an earlier child (ours: `~/.cache/logit-lens/compiled`; PyTorch: transformers dequantized the GGUF once, saved as fp32 safetensors under `~/.cache/logit-lens/bench-reference`) and the files are in the page cache. A cold first load (conversion) is listed when it happened during the run; so is transformers' own GGUF load, which dequantizes on every load. llama.cpp maps the quantized GGUF as it is.",
    "- **Prefill, all positions**: one forward pass over N tokens producing logits for every position and the KV cache (ours: `model.forward([], true)`; PyTorch: `model(ids)` under `torch.no_grad()`).",
    '- **Prefill, last position**: the same producing only the last position\'s logits (ours: `model.forward([], "last")`; PyTorch: `logits_to_keep=1`; llama.cpp: `evaluateWithoutGeneratingNewTokens`, which computes the last position only).',
    "- **Full lens**: `new LogitLens(model).run(ids, {topK: 10})`: forward pass with every layer's `hook_resid_post`, then the final norm (statistics recomputed per residual), unembedding, log-softmax, top-10, entropy and KL to the final layer for every layer x position. PyTorch, as a careful researcher writes it: `output_hidden_states=True` (plus a forward hook on the last layer, because transformers replaces `hidden_states[-1]` by the final-normed state), `model.model.norm` on all residuals, `lm_head` as one matmul per chunk of positions, `log_softmax`, `topk(10)`, entropy, KL; chunks keep one [layers x chunk x vocab] fp32 buffer within 192 MiB.",
    "- **Forward + hooks** and **lens graph alone** split each full-lens run: ours times every onnxruntime run inside the very `LogitLens.run` calls above (the forward session with per-layer hook outputs vs the lens session's runs over chunks of positions; the remainder is JavaScript); PyTorch times its two halves inside each run the same way.",
    "- **Lens GFLOP/s** = 2 x layers x positions x hidden x vocab / time: the useful matrix-product work (the lens graph also runs the final layer once more, as the KL reference).",
    `- **Decode**: greedy, KV cache, ${spec.decodeNew} single-token steps after a ${spec.decodePrompt}-token prompt (the prompt's prefill is not timed); tokens/s = ${spec.decodeNew} / time of those steps.`,
    "",
  );

  for (const r of reports) {
    const o: Json = r.ours.ok ? r.ours.value : undefined;
    const p: Json = r.torch?.ok ? r.torch.value : undefined;
    const l: Json = r.llama?.ok ? r.llama.value : undefined;
    lines.push(`## ${r.alias}`, "");
    if (!o) {
      lines.push(`logit-lens failed: ${r.ours.error ?? r.prep.error}`, "");
      continue;
    }
    const cfg = o.config as { nLayers: number; hidden: number; vocab: number; architecture: string };
    const fp32Bytes = (o.params as number) * 4;
    lines.push(
      `${cfg.architecture}, ${cfg.nLayers} layers, hidden ${cfg.hidden}, vocab ${cfg.vocab.toLocaleString("en-US")}; ${(o.params / 1e6).toFixed(1)} M parameters = ${mib(fp32Bytes)} in fp32 (GGUF file ${mib(o.fileSize)}: ${Object.entries(o.tensorTypes as Record<string, number>)
        .map(([k, v]) => `${v} ${k}`)
        .join(", ")}).`,
      "",
    );
    lines.push(
      "| measure | logit-lens (onnxruntime, fp32) | transformers + PyTorch (fp32) | llama.cpp (quantized GGUF) | ours vs PyTorch | ours vs llama.cpp |",
      "|---|---:|---:|---:|---:|---:|",
    );
    const row = (name: string, ov: number | undefined, pv: number | undefined, lv: number | undefined, fmt = ms, higher = false): void => {
      lines.push(`| ${name} | ${fmt(ov)} | ${p ? fmt(pv) : "-"} | ${lv === undefined ? "-" : fmt(lv)} | ${ratio(ov, pv, higher)} | ${ratio(ov, lv, higher)} |`);
    };
    row("load, warm", o.loadS, p?.loadS, l?.loadS, (s) => (s === undefined ? "n/a" : `${s.toFixed(2)} s`));
    for (const n of spec.prefill) row(`prefill ${n} tokens, all-position logits`, bestOf(o.prefill[n]), bestOf(p?.prefill[n]), undefined);
    for (const n of spec.prefill) row(`prefill ${n} tokens, last-position logits`, bestOf(o.prefillLast[n]), bestOf(p?.prefillLast[n]), bestOf(l?.prefill[n]));
    for (const n of spec.lens) row(`**full lens, ${n} tokens** (${cfg.nLayers} layers x ${n} positions)`, bestOf(o.lens[n]), bestOf(p?.lens[n]), undefined);
    for (const n of spec.lens) row(`of which forward + hooks, ${n} tokens`, bestOf(o.forwardHooks[n]), bestOf(p?.forwardHidden[n]), undefined);
    for (const n of spec.lens) row(`of which lens graph alone, ${n} tokens`, bestOf(o.lensOnly[n]), bestOf(p?.lensOnly[n]), undefined);
    const flops = (n: number): number => 2 * cfg.nLayers * n * cfg.hidden * cfg.vocab;
    const gf = (n: number, t: number | undefined): number | undefined => (t ? flops(n) / t / 1e9 : undefined);
    const gfFmt = (v: number | undefined): string =>
      v === undefined ? "n/a" : `${v.toFixed(1)} (${((100 * v) / PEAK_GFLOPS).toFixed(0)} %${measuredPeak ? ` / ${((100 * v) / measuredPeak).toFixed(0)} %` : ""})`;
    for (const n of spec.lens) {
      row(`lens GFLOP/s over the full lens, ${n} tok (% of ${PEAK_GFLOPS}${measuredPeak ? ` / of measured ${measuredPeak.toFixed(0)}` : ""})`, gf(n, bestOf(o.lens[n])), gf(n, bestOf(p?.lens[n])), undefined, gfFmt, true);
      row(`lens GFLOP/s over the lens graph alone, ${n} tok (% of ${PEAK_GFLOPS}${measuredPeak ? ` / of measured ${measuredPeak.toFixed(0)}` : ""})`, gf(n, bestOf(o.lensOnly[n])), gf(n, bestOf(p?.lensOnly[n])), undefined, gfFmt, true);
    }
    const tps = (d: { best: number; newTokens: number } | undefined): number | undefined => (d ? d.newTokens / d.best : undefined);
    row("decode, tokens/s (greedy, KV cache)", tps(o.decode), tps(p?.decode), tps(l?.decode), (v) => (v === undefined ? "n/a" : v.toFixed(1)), true);
    const peakFmt = (b: number | undefined): string => (b === undefined ? "n/a" : `${mib(b)} (${(b / fp32Bytes).toFixed(2)}x)`);
    lines.push(`| peak memory, load + full lens (x fp32 weights) | ${peakFmt(o.hwmBy.afterLens)} | ${p ? peakFmt(p.peakRssAfterLensBytes) : "-"} | - | | |`);
    lines.push(`| peak memory, whole child process (x fp32 weights) | ${peakFmt(o.peakRssBytes)} | ${p ? peakFmt(p.peakRssBytes) : "-"} | ${l ? peakFmt(l.peakRssBytes) : "-"} | | |`);
    lines.push("");

    // Targets
    const t: string[] = [];
    const verdict = (ok: boolean | undefined): string => (ok === undefined ? "not measured" : ok ? "**met**" : "**missed**");
    if (p) {
      const fw = spec.prefill.map((n) => ({ n, r: p.prefill[n].best / o.prefill[n].best }));
      t.push(
        `- Forward pass no slower than transformers + PyTorch: ${verdict(fw.every((x) => x.r >= 1))} (PyTorch time / ours, all-position logits: ${fw.map((x) => `${x.n} tok ${x.r.toFixed(2)}x`).join(", ")}; decode speed ours / PyTorch ${(tps(o.decode)! / tps(p.decode)!).toFixed(2)}x).`,
      );
      const ls = spec.lens.map((n) => ({ n, r: p.lens[n].best / o.lens[n].best }));
      t.push(`- Full lens at least 2x faster than transformers + PyTorch: ${verdict(ls.every((x) => x.r >= 2))} (${ls.map((x) => `${x.n} tok ${x.r.toFixed(2)}x`).join(", ")}).`);
    } else {
      t.push("- Forward pass and full lens against transformers + PyTorch: not measured (no PyTorch column).");
    }
    const lg = spec.lens.map((n) => ({ n, g: gf(n, bestOf(o.lensOnly[n]))! }));
    t.push(
      `- Lens matrix products at >= 75 % of ${PEAK_GFLOPS} GFLOP/s (lens graph alone): ${verdict(lg.every((x) => x.g >= 0.75 * PEAK_GFLOPS))} (${lg
        .map((x) => `${x.n} tok ${x.g.toFixed(1)} GFLOP/s = ${((100 * x.g) / PEAK_GFLOPS).toFixed(0)} %`)
        .join(", ")}; over the full lens incl. the forward pass: ${spec.lens.map((n) => `${((100 * gf(n, bestOf(o.lens[n]))!) / PEAK_GFLOPS).toFixed(0)} %`).join(", ")}).${
        measuredPeak ? ` Against the peak measured on this machine (${measuredPeak.toFixed(0)} GFLOP/s) the lens graph reaches ${lg.map((x) => `${((100 * x.g) / measuredPeak).toFixed(0)} %`).join(", ")}.` : ""
      }`,
    );
    const peakRatio = o.hwmBy.afterLens / fp32Bytes;
    const wholeRatio = o.peakRssBytes / fp32Bytes;
    t.push(
      `- Peak memory < 1.5x the fp32 weights (${mib(fp32Bytes)}): ${verdict(peakRatio < 1.5)} for load + full lens (${mib(o.hwmBy.afterLens)} = ${peakRatio.toFixed(2)}x); the whole bench child, which adds two more forward sessions, peaks at ${mib(o.peakRssBytes)} = ${wholeRatio.toFixed(2)}x.`,
    );
    lines.push("Targets:", "", ...t, "");
    targetLines.push(`${r.alias}:`, ...t);

    // Notes and breakdowns
    const extra: string[] = [];
    extra.push(
      `- Cold first load (fp32 conversion into the cache) ${r.prep.value?.converted ? `happened in this run: ${r.prep.value.loadS.toFixed(1)} s` : `did not happen in this run (already converted; the prepare child's load took ${r.prep.value?.loadS?.toFixed(2) ?? "?"} s)`}. Building onnxruntime sessions is not part of "load": forward with all-position logits ${o.sessionLogitsS.toFixed(2)} s, with last-position logits ${o.sessionLastS.toFixed(2)} s; the first full lens call (hook and lens sessions built) took ${o.lensFirstS.toFixed(2)} s.`,
    );
    if (p) extra.push(`- transformers loading the GGUF itself (dequantizing, as it does on every load; timed once, when the fp32 cache was made): ${p.ggufLoadS.toFixed(1)} s, via ${p.ggufLoader}. PyTorch attention: ${p.attnImplementation}.`);
    extra.push(
      `- Peak memory of ours by phase (VmHWM): after load ${mib(o.hwmBy.afterLoad)}; after the lens (the \`lens\` command's path: forward session with hooks + lens session) ${mib(o.hwmBy.afterLens)}; after the prefill timings (two more forward sessions) ${mib(o.hwmBy.afterPrefill)}; at the end ${mib(o.peakRssBytes)}, of which resident then ${mib(o.rssFileBytes)} file-backed and ${mib(o.rssAnonBytes)} anonymous (weights.bin is ${mib(o.weightsBinBytes)}).${p ? ` PyTorch right after loading: ${mib(p.peakRssAfterLoadBytes)}.` : ""}`,
    );
    if (p?.lensTop1) {
      let same = 0;
      let total = 0;
      let sameFinal = 0;
      const last = o.lensTop1.length - 1;
      (o.lensTop1 as number[][]).forEach((rowIds, li) =>
        rowIds.forEach((id, pi) => {
          total++;
          if (p.lensTop1[li]?.[pi] === id) {
            same++;
            if (li === last) sameFinal++;
          }
        }),
      );
      extra.push(`- Sanity: our lens top-1 token equals PyTorch's in ${same} / ${total} cells (${((100 * same) / total).toFixed(1)} %) at ${spec.lens[0]} tokens; final layer ${sameFinal} / ${o.lensTop1[last].length}.`);
    }
    const agree = (a: number[] | undefined, b: number[] | undefined): string => {
      if (!a || !b) return "n/a";
      let i = 0;
      while (i < a.length && a[i] === b[i]) i++;
      return i === a.length ? `all ${a.length} identical` : `first ${i} of ${a.length} identical`;
    };
    extra.push(`- Sanity, greedy tokens: ours vs PyTorch ${agree(o.decode.tokens, p?.decode.tokens)}; ours vs llama.cpp (quantized weights) ${agree(o.decode.tokens, l?.decode.tokens)}.`);
    if (o.profile?.byOpS) {
      const byOpS = o.profile.byOpS as Record<string, number>;
      const byOp = Object.entries(byOpS).sort((a, b) => b[1] - a[1]);
      const sum = byOp.reduce((s, [, v]) => s + v, 0);
      const gemm = (byOpS["Gemm"] ?? 0) + (byOpS["MatMul"] ?? 0);
      const executed = 2 * o.profile.rows * cfg.hidden * cfg.vocab;
      extra.push(
        `- Where the lens graph's time goes (onnxruntime profiler on ${o.profile.chunks} of the ${o.profile.of} chunks of the ${spec.lens[0]}-token lens, ${(o.profile.rows / o.profile.chunks).toFixed(0)} layer x position rows per chunk; kernel time ${ms(sum)}): ${byOp
          .slice(0, 8)
          .map(([k, v]) => `${k} ${((100 * v) / sum).toFixed(0)} %`)
          .join(", ")}.${gemm ? ` The unembedding Gemm alone runs at ${(executed / gemm / 1e9).toFixed(1)} GFLOP/s (${((100 * executed) / gemm / 1e9 / PEAK_GFLOPS).toFixed(0)} % of ${PEAK_GFLOPS}${measuredPeak ? `, ${((100 * executed) / gemm / 1e9 / measuredPeak).toFixed(0)} % of the measured ${measuredPeak.toFixed(0)}` : ""}).` : ""} Over the whole ${spec.lens[0]}-token lens the graph multiplied ${o.lensExecutedRows} layer x position rows in ${o.lensChunks} runs, for ${cfg.nLayers * spec.lens[0]!} useful ones.`,
      );
    } else if (o.profile?.error) {
      extra.push(`- Lens profile failed: ${o.profile.error}`);
    }
    if (!p) extra.push(`- PyTorch column: ${r.torch ? `failed (${r.torch.error ?? r.torchPrep?.error})` : "skipped"}.`);
    if (l) {
      extra.push("- llama.cpp runs the quantized GGUF blocks directly (no fp32 weights) and computes logits for the last position only; it has no lens, so only load, last-position prefill and decode have a llama.cpp figure.");
    } else {
      extra.push(`- llama.cpp column: ${r.llama ? `failed (${r.llama.error})` : "skipped"}.`);
    }
    const la = (
      [
        ["ours", r.ours],
        ["llama.cpp", r.llama],
        ["PyTorch", r.torch],
      ] as Array<[string, ChildResult | undefined]>
    )
      .filter((e): e is [string, ChildResult] => Boolean(e[1]))
      .map(([name, c]) => `${name} ${c.loadavg[0].toFixed(1)} -> ${c.loadavg[1].toFixed(1)} (${c.wallS.toFixed(0)} s)`);
    extra.push(`- Load average (1 min) before -> after each child, and the child's wall time: ${la.join("; ")}.`);
    lines.push("Notes:", "", ...extra, "");
  }

  lines.push("## Raw samples", "", "<details><summary>every timing sample, in seconds</summary>", "", "```json");
  const keep = (v: Json, keys: string[]): Json =>
    v === undefined
      ? undefined
      : Object.fromEntries(
          keys
            .filter((k) => v[k] !== undefined)
            .map((k) => [k, JSON.parse(JSON.stringify(v[k], (key, x) => (key === "best" || key === "median" || key === "tokens" ? undefined : x)))]),
        );
  const raw = reports.map((r) => ({
    model: r.alias,
    ours: keep(r.ours.value, ["loadS", "prefill", "prefillLast", "lens", "forwardHooks", "lensOnly", "decode", "profile"]),
    torch: keep(r.torch?.value, ["loadS", "prefill", "prefillLast", "lens", "forwardHidden", "lensOnly", "decode"]),
    llama: keep(r.llama?.value, ["loadS", "prefill", "decode"]),
  }));
  lines.push(JSON.stringify(raw, (_k, v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v)), "```", "", "</details>", "");
  return { md: lines.join("\n"), targets: targetLines };
}

async function parent(opts: Options): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const facts = machineFacts();
  const measuredPeak = measureFmaPeak(opts.threads);
  const spec: Omit<Spec, "alias"> = {
    threads: opts.threads,
    runs: opts.runs,
    budgetS: opts.budgetS,
    prefillRuns: opts.quick ? 1 : Math.max(opts.runs, 5),
    prefill: opts.quick ? [8, 64] : [8, 64, 256],
    lens: opts.quick ? [64] : [64, 256],
    decodePrompt: 8,
    decodeNew: opts.quick ? 8 : 32,
    chunkBytes: CHUNK_BYTES,
  };
  const py = opts.torch ? await findPython() : { note: "skipped (--no-torch)" };
  log(`logit-lens bench: ${facts["cpu"]}, ${facts["nproc"]} CPUs, ${opts.threads} threads; models ${opts.models.join(", ")}`);
  if (opts.torch) log(`reference python: ${py.note}`);
  const reports: ModelReport[] = [];
  for (const alias of opts.models) {
    const s: Spec = { ...spec, alias };
    log(`${alias}: preparing (fetch and fp32 conversion when not cached)`);
    const prep = await nodeChild("prepare", s);
    if (!prep.ok) {
      log(`  prepare failed: ${prep.error}`);
      reports.push({ alias, prep, ours: prep });
      continue;
    }
    log(`${alias}: logit-lens`);
    const ours = await nodeChild("ours", s);
    const rep: ModelReport = { alias, prep, ours };
    reports.push(rep);
    if (!ours.ok) {
      log(`  failed: ${ours.error}`);
      continue;
    }
    const withIds: Spec = { ...s, ids: ours.value.ids as number[] };
    if (opts.llama) {
      log(`${alias}: llama.cpp`);
      rep.llama = await nodeChild("llama", withIds, [prep.value.path as string]);
      if (!rep.llama.ok) log(`  failed: ${rep.llama.error}`);
    }
    if (py.python) {
      const cacheDir = path.join(cacheRoot(), "bench-reference", alias);
      const env = {
        OMP_NUM_THREADS: String(opts.threads),
        MKL_NUM_THREADS: String(opts.threads),
        HF_HUB_OFFLINE: "1",
        TRANSFORMERS_VERBOSITY: "error",
        HF_HUB_DISABLE_PROGRESS_BARS: "1",
        TQDM_DISABLE: "1",
        PYTHONWARNINGS: "ignore",
      };
      const script = path.join(ROOT, "bench", "reference_bench.py");
      if (!fs.existsSync(path.join(cacheDir, "bench-meta.json"))) {
        log(`${alias}: transformers loads the GGUF (dequantizing; saved as fp32 safetensors for warm loads)`);
        fs.mkdirSync(path.dirname(cacheDir), { recursive: true });
        rep.torchPrep = await runChild(py.python, [script, "prepare", prep.value.path as string, cacheDir], env, true);
        if (!rep.torchPrep.ok) log(`  failed: ${rep.torchPrep.error}`);
      }
      if (fs.existsSync(path.join(cacheDir, "bench-meta.json"))) {
        log(`${alias}: transformers + PyTorch`);
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-bench-"));
        const specFile = path.join(dir, "spec.json");
        fs.writeFileSync(specFile, JSON.stringify({ ...withIds, maxRuns: opts.runs }));
        rep.torch = await runChild(py.python, [script, "measure", cacheDir, specFile, String(opts.threads)], env, true);
        fs.rmSync(dir, { recursive: true, force: true });
        if (!rep.torch.ok) log(`  failed: ${rep.torch.error}`);
      } else {
        rep.torch = rep.torchPrep;
      }
    }
  }
  const totalS = (performance.now() - t0) / 1000;
  const { md, targets } = report(opts, facts, py.note, reports, started, totalS, spec, measuredPeak);
  fs.writeFileSync(opts.out, md);
  process.stdout.write(md.split("## Raw samples")[0]!);
  process.stdout.write(`\nTargets:\n${targets.join("\n")}\n\nwritten to ${path.relative(process.cwd(), opts.out) || opts.out} in ${(totalS / 60).toFixed(1)} min\n`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--child") {
    const [, mode, specFile, outFile, ...rest] = argv;
    const spec = JSON.parse(fs.readFileSync(specFile!, "utf8")) as Spec;
    let result: object;
    if (mode === "prepare") result = await childPrepare(spec);
    else if (mode === "ours") result = await childOurs(spec);
    else if (mode === "llama") result = await childLlama(spec, rest[0]!);
    else throw new Error(`unknown child mode ${mode}`);
    fs.writeFileSync(outFile!, JSON.stringify(result));
    process.exit(0);
  }
  await parent(parseArgs(argv));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
