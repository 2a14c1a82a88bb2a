/**
 * `npm run bench`: logit-lens (onnxruntime-node) against transformers + PyTorch and llama.cpp
 * (node-llama-cpp 3.21.1) on the real test models and on synthetic Llama 3 shapes (8B, and a 70B
 * cut to 2 and 4 layers for the per-layer cost); writes BENCHMARKS.md with the figures, ratios and
 * the targets of issue 7, and prints them.
 *
 *   npm run bench [-- --only smollm2,gemma3,8b,70b] [--threads 2] [--runs 3] [--budget 15]
 *                 [--no-torch] [--no-llama] [--quick] [--out FILE]
 *
 * --only takes model names (smollm2, gemma3, 8b, 70b, or any alias / .gguf path); a run with
 * --only or --quick writes to a file in the temp folder unless --out is given, so BENCHMARKS.md is
 * only ever rewritten by a full run.
 *
 * Environment (no fixed paths in the code):
 *   LOGIT_LENS_PYTHON            a Python with torch, transformers and gguf: the PyTorch column, and
 *                                the maker of missing synthetic GGUFs (gguf + numpy suffice there).
 *                                Without it: `.venv/bin/python` in the repository, else no column.
 *   LOGIT_LENS_BENCH_SYNTHETIC   folder of the synthetic GGUFs (tools/synthetic/make_synthetic_gguf.py
 *                                names); default $LOGIT_LENS_SYNTHETIC_DIR, else <cache>/synthetic.
 *                                Missing files are made there when the Python has gguf; otherwise
 *                                those rows are skipped with a note.
 *   LOGIT_LENS_CACHE             logit-lens's cache (compiled weights, bench-reference for PyTorch).
 *
 * Every measure runs in its own child process, so each peak RSS (VmHWM / ru_maxrss) is that
 * measure's own:
 *   prepare  resolve the model (fetching it if needed) and load it once, so the converted weights
 *            are cached and later children measure a warm load;
 *   lens     load + full lens (VmHWM read right after the first lens size: "load + full lens");
 *   forward  prefill (all-position and last-position logits) and decode with the KV cache;
 *   maxmem   load with a memory budget (LoadedModel.load(..., { maxMemory })) + full lens;
 *   llama    node-llama-cpp on the same GGUF;
 *   reference_bench.py measure   transformers + PyTorch (where fp32 weights fit in RAM).
 * All engines get the same token ids (from our tokenizer). Each timing: a warm-up, then up to
 * `--runs` runs, fewer once `--budget` seconds are spent; the tables give the best run (the machine
 * is shared, and contention only ever adds time), the raw samples are at the end of the report.
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
/** The PyTorch lens keeps one [layers x chunk x vocab] fp32 buffer within this, as logit-lens does. */
const CHUNK_BYTES = 192 * 1024 * 1024;
const GB = 1e9;
const GIB = 2 ** 30;
/** The budget of the streamed rows (`--max-memory 4G`: binary units, as the CLI parses it). */
const MAX_MEMORY = 4 * GIB;
/**
 * The budget the 70B cuts stream under: small enough that neither cut's blocks stay open between
 * passes (at 4 GiB the 2-layer cut's three blocks all fit, so it rebuilt nothing and the per-layer
 * streamed cost took every block's rebuilding from the 4-layer cut alone), as in a 70B in 16 GB,
 * whose 80 layers never fit.
 */
const CUT_MAX_MEMORY = 2 * GIB;
/** The 70B that the cuts stand for: 80 layers, with 16 GB of RAM. */
const FULL_70B_LAYERS = 80;
const RAM_70B = 16 * GIB;

/** English prose, long enough for 256 tokens with any of the tokenizers. */
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

/** What one child measures (the same object goes to every child of one model). */
interface Spec {
  /** Alias or path given to resolveModelSource. */
  source: string;
  threads: number;
  runs: number;
  budgetS: number;
  /** Runs for the cheap measurements (prefill); the budget still caps them. */
  prefillRuns: number;
  /** Prefill sizes with logits for every position (compared with PyTorch's model(ids)). */
  prefillAll: number[];
  /** Prefill sizes with last-position logits (compared with llama.cpp and PyTorch logits_to_keep=1). */
  prefillLast: number[];
  /** Full-lens sizes; the first is the memory measure (VmHWM read right after it). */
  lens: number[];
  /** Timed lens runs after the first (cold) call; 0 = the first call only. */
  lensRuns: number;
  decodePrompt: number;
  decodeNew: number;
  ids?: number[];
  chunkBytes: number;
  maxMemory?: number;
  /** Load with int8 activations (`--int8`, LoadOptions.int8): the fast, inexact mode. */
  int8?: boolean;
  profile: boolean;
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
  while (samples.length < Math.max(1, runs) && (samples.length === 0 || samples.reduce((a, b) => a + b, 0) < budgetS)) {
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
 * same module): remembers each session's .onnx file, counts and times session creations, and times
 * runs while `calls` is set. This splits a lens call into forward pass, lens graph and session
 * building without touching the engine's code.
 */
const recorder: { calls: RecordedRun[] | undefined; files: Map<ort.InferenceSession, string>; creates: { file: string; seconds: number }[] } = {
  calls: undefined,
  files: new Map(),
  creates: [],
};
{
  type Create = (...args: unknown[]) => Promise<ort.InferenceSession>;
  type Run = (this: ort.InferenceSession, feeds: Record<string, ort.Tensor>, ...rest: unknown[]) => Promise<unknown>;
  const factory = runtime.InferenceSession as unknown as { create: Create; prototype: { run: Run } };
  const create = factory.create.bind(factory);
  factory.create = async (...args: unknown[]) => {
    const t0 = performance.now();
    const session = await create(...args);
    const file = typeof args[0] === "string" ? args[0] : "(bytes)";
    recorder.creates.push({ file: path.basename(file), seconds: (performance.now() - t0) / 1000 });
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

/**
 * Rows x vocabulary columns one lens-graph run multiplies, as a fraction of the vocabulary: the
 * lens reads a tile [first, end) of it per run (src/lens/lens-graph.ts).
 */
function residRowsOverVocab(feeds: Record<string, ort.Tensor>, vocab: number): number {
  const first = feeds["first"]?.data as BigInt64Array | undefined;
  const end = feeds["end"]?.data as BigInt64Array | undefined;
  const share = first && end ? Number(end[0]! - first[0]!) / vocab : 1;
  return residRows(feeds) * share;
}

/** A forward-graph run is one fed input_ids, or (a later block of layers) a residual cut. */
function isForwardRun(c: RecordedRun): boolean {
  const file = recorder.files.get(c.session) ?? "";
  return "input_ids" in c.feeds || path.basename(file).startsWith("forward");
}

async function loadFor(spec: Spec): Promise<{ model: LoadedModel; loadS: number; maxMemoryHonoured?: boolean }> {
  const progress = createProgress({ quiet: true });
  const t0 = performance.now();
  const source = await resolveModelSource(spec.source, { progress });
  // Written against LoadedModel.load(source, progress, { maxMemory }); an engine without the
  // option simply ignores it, which the budget check below reports as "not available".
  const load = LoadedModel.load as unknown as (s: unknown, p: unknown, o: object) => Promise<LoadedModel>;
  const model = await load(source, progress, { ...(spec.maxMemory ? { maxMemory: spec.maxMemory } : {}), ...(spec.int8 ? { int8: true } : {}) });
  const loadS = (performance.now() - t0) / 1000;
  const budget = (model as unknown as { blocks?: { budget?: number } }).blocks?.budget;
  return { model, loadS, maxMemoryHonoured: spec.maxMemory ? budget === spec.maxMemory : undefined };
}

function promptIds(model: LoadedModel, n: number): number[] {
  let ids = model.tokenizer.encode(PROMPT);
  while (ids.length < n) ids = ids.concat(model.tokenizer.encode(` ${PROMPT}`));
  return ids.slice(0, n);
}

function weightsBinBytes(model: LoadedModel): number {
  return fs.statSync(path.join(model.store.dir, "weights.bin")).size;
}

/** Blocks of layers the lens's forward pass runs as (1 in memory; more when streamed). */
async function lensPieces(model: LoadedModel): Promise<number | undefined> {
  const L = model.config.nLayers;
  const hooks = Array.from({ length: L }, (_, l) => `blocks.${l}.hook_resid_post`);
  const fwd = (await model.forward(hooks, "none")) as unknown as { pieceCount?: number };
  return fwd.pieceCount;
}

// ---------------------------------------------------------------------------------------------
// child: warm-up load (converts the weights once)

async function childPrepare(spec: Spec): Promise<object> {
  const compiled = path.join(cacheRoot(), "compiled");
  const before = new Set(fs.existsSync(compiled) ? fs.readdirSync(compiled) : []);
  const progress = createProgress({ quiet: true });
  const t0 = performance.now();
  const source = await resolveModelSource(spec.source, { progress });
  const model = await LoadedModel.load(source, progress);
  const loadS = (performance.now() - t0) / 1000;
  const fresh = path.basename(model.store.dir);
  const cfg = model.config;
  return {
    loadS,
    converted: !before.has(fresh),
    path: source.kind === "gguf" ? source.path : source.dir,
    config: { nLayers: cfg.nLayers, hidden: cfg.hidden, vocab: cfg.vocabSize, architecture: cfg.architecture },
    params: model.info.parameters,
    fileSize: model.info.fileSize,
    tensorTypes: model.info.tensorTypes,
    weightsBinBytes: weightsBinBytes(model),
    peakRssBytes: procStatus()["VmHWM"],
  };
}

// ---------------------------------------------------------------------------------------------
// child: the full lens (also the memory measure: load + full lens)

async function childLens(spec: Spec): Promise<object> {
  const { model, loadS, maxMemoryHonoured } = await loadFor(spec);
  if (spec.maxMemory && !maxMemoryHonoured) return { maxMemoryHonoured: false };
  const hwm: Record<string, number> = { afterLoad: procStatus()["VmHWM"]! };
  const ids = promptIds(model, Math.max(...spec.lens));
  const lens = new LogitLens(model);
  // lensRead: the lens's own time, the whole call less the forward pass and building sessions
  // (lens graph runs, tiles dequantized in JavaScript, merges); lensGraph: its graph runs alone.
  const out: Record<string, { total: Timing; forward: Timing; lensGraph: Timing; lensRead: Timing; sessions: Timing; runsCount: number }> = {};
  let first: { seconds: number; forwardS: number; lensS: number; createS: number } | undefined;
  let lensTop1: number[][] = [];
  let lensCalls: RecordedRun[] = [];
  let peakAfterFirst = 0;
  let pieces: number | undefined;
  for (const [i, n] of spec.lens.entries()) {
    const x = ids.slice(0, n);
    const fw: number[] = [];
    const lg: number[] = [];
    const lr: number[] = [];
    const cr: number[] = [];
    const once = async (): Promise<number> => {
      recorder.calls = [];
      const creates0 = recorder.creates.length;
      const t = performance.now();
      const r = await lens.apply(x, { topK: 10 });
      const s = (performance.now() - t) / 1000;
      const calls = recorder.calls;
      recorder.calls = undefined;
      fw.push(calls.filter(isForwardRun).reduce((a, c) => a + c.seconds, 0));
      const lensPart = calls.filter((c) => !isForwardRun(c));
      lg.push(lensPart.reduce((a, c) => a + c.seconds, 0));
      cr.push(recorder.creates.slice(creates0).reduce((a, c) => a + c.seconds, 0));
      lr.push(s - fw[fw.length - 1]! - cr[cr.length - 1]!);
      if (i === 0) {
        lensCalls = lensPart;
        lensTop1 = r.readouts.map((ro) => ro.cells.map((c) => c.topIds[0]!));
      }
      return s;
    };
    // The first call builds the sessions (in memory; a streamed model builds them on every call).
    const s0 = await once();
    if (i === 0) first = { seconds: s0, forwardS: fw[0]!, lensS: lg[0]!, createS: cr[0]! };
    const lensRead0 = lr[0]!;
    fw.length = lg.length = lr.length = cr.length = 0;
    const total = spec.lensRuns > 0 ? await timed(once, spec.lensRuns, spec.budgetS, false) : summary([s0]);
    if (spec.lensRuns === 0) {
      fw.push(first!.forwardS);
      lg.push(first!.lensS);
      cr.push(first!.createS);
      lr.push(lensRead0);
    }
    out[n] = { total, forward: summary(fw), lensGraph: summary(lg), lensRead: summary(lr), sessions: summary(cr), runsCount: total.samples.length };
    log(`  lens ${n}: ${total.best.toFixed(3)} s (forward ${out[n]!.forward.best.toFixed(3)} s, lens ${out[n]!.lensRead.best.toFixed(3)} s of which graph runs ${out[n]!.lensGraph.best.toFixed(3)} s, sessions built ${out[n]!.sessions.best.toFixed(3)} s)`);
    if (i === 0) {
      peakAfterFirst = procStatus()["VmHWM"]!;
      pieces = await lensPieces(model);
    }
  }
  hwm["afterLens"] = peakAfterFirst;
  let profile: object | undefined;
  if (spec.profile) {
    try {
      profile = await profileLens(lensCalls, spec.threads, model.config.vocabSize);
    } catch (e) {
      profile = { error: String((e as Error).message) };
    }
  }
  const status = procStatus();
  const cfg = model.config;
  return {
    ids,
    config: { nLayers: cfg.nLayers, hidden: cfg.hidden, vocab: cfg.vocabSize, architecture: cfg.architecture },
    params: model.info.parameters,
    fileSize: model.info.fileSize,
    weightsBinBytes: weightsBinBytes(model),
    unembeddingBytes: (model as unknown as { unembeddingBytes?: () => number }).unembeddingBytes?.(),
    maxMemoryHonoured,
    loadS,
    first,
    lens: out,
    pieces,
    lensExecutedRows: Math.round(lensCalls.reduce((a, c) => a + residRowsOverVocab(c.feeds, model.config.vocabSize), 0)),
    lensChunks: lensCalls.length,
    lensTop1,
    hwm,
    peakRssBytes: status["VmHWM"],
    rssFileBytes: status["RssFile"],
    rssAnonBytes: status["RssAnon"],
    profile,
  };
}

// ---------------------------------------------------------------------------------------------
// child: forward pass only (prefill) and decoding with the KV cache

async function childForward(spec: Spec): Promise<object> {
  const { model, loadS } = await loadFor(spec);
  const V = model.config.vocabSize;
  const ids = spec.ids ?? promptIds(model, Math.max(...spec.prefillAll, ...spec.prefillLast, spec.decodePrompt));
  const { runs, budgetS } = spec;
  const prefill: Record<string, Timing> = {};
  const prefillLast: Record<string, Timing> = {};
  let sessionAllS: number | undefined;
  if (spec.prefillAll.length) {
    const t = performance.now();
    const fwdAll = await model.forward([], true);
    await fwdAll.run(ids.slice(0, 1));
    sessionAllS = (performance.now() - t) / 1000;
    for (const n of spec.prefillAll) {
      const x = ids.slice(0, n);
      prefill[n] = await timed(async () => void (await fwdAll.run(x)), spec.prefillRuns, budgetS);
      log(`  prefill ${n}, all-position logits: ${prefill[n]!.best.toFixed(3)} s`);
    }
  }
  const hwmAfterAll = procStatus()["VmHWM"];
  let t = performance.now();
  const fwdLast = await model.forward([], "last");
  await fwdLast.run(ids.slice(0, 1));
  const sessionLastS = (performance.now() - t) / 1000;
  for (const n of spec.prefillLast) {
    const x = ids.slice(0, n);
    prefillLast[n] = await timed(async () => void (await fwdLast.run(x)), spec.prefillRuns, budgetS);
    log(`  prefill ${n}, last-position logits: ${prefillLast[n]!.best.toFixed(3)} s`);
  }
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
  t = performance.now();
  const decodeT = await timed(decode, runs, budgetS);
  log(`  decode: ${(spec.decodeNew / decodeT.best).toFixed(2)} tok/s`);
  const fwdPieces = (fwdLast as unknown as { pieceCount?: number }).pieceCount;
  const status = procStatus();
  return {
    loadS,
    sessionAllS,
    sessionLastS,
    prefill,
    prefillLast,
    decode: { ...decodeT, newTokens: spec.decodeNew, tokens: decodeTokens },
    pieces: fwdPieces,
    hwmAfterAll,
    peakRssBytes: status["VmHWM"],
  };
}

/**
 * Replays a few recorded lens-graph runs in a session of the same .onnx file with onnxruntime's
 * profiler on, and sums kernel time by operator type (scaled to one run per replayed chunk).
 */
async function profileLens(calls: RecordedRun[], threads: number, vocab: number): Promise<object> {
  const file = calls[0] ? recorder.files.get(calls[0].session) : undefined;
  if (!file) return { error: "no recorded lens-graph run" };
  const feeds = calls.slice(0, 5).map((c) => c.feeds);
  const warm = feeds.length > 1 ? feeds.shift()! : feeds[0]!;
  // Rows-equivalents over the whole vocabulary (each run reads one tile of it).
  const rows = feeds.reduce((a, f) => a + residRowsOverVocab(f, vocab), 0);
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
  for (const n of spec.prefillLast) {
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
  log(`  llama.cpp decode: ${(spec.decodeNew / decodeT.best).toFixed(2)} tok/s`);
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
// parent: what to run

interface Options {
  only: string[] | undefined;
  threads: number;
  runs: number;
  budgetS: number;
  torch: boolean;
  llama: boolean;
  quick: boolean;
  out: string;
  partial: boolean;
  argv: string[];
}

const SHORT: Record<string, string> = { smollm2: "smollm2-135m-instruct", gemma3: "gemma3-270m" };
const DEFAULT_ENTRIES = ["smollm2", "gemma3", "8b", "70b"];

function parseArgs(argv: string[]): Options {
  const o: Options = { only: undefined, threads: 2, runs: 3, budgetS: 15, torch: true, llama: true, quick: false, out: "", partial: false, argv };
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--only" || a === "--models") o.only = next().split(",").map((s) => s.trim()).filter(Boolean);
    else if (a === "--threads") o.threads = Number(next());
    else if (a === "--runs") o.runs = Number(next());
    else if (a === "--budget") o.budgetS = Number(next());
    else if (a === "--no-torch") o.torch = false;
    else if (a === "--no-llama") o.llama = false;
    else if (a === "--quick") o.quick = true;
    else if (a === "--out") out = path.resolve(next());
    else if (a === "--help" || a === "-h") {
      const src = fs.readFileSync(path.join(ROOT, "bench", "bench.ts"), "utf8");
      process.stdout.write(`${src.split("*/")[0]!}*/\n`);
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  if (!Number.isInteger(o.threads) || o.threads < 1) throw new Error("--threads wants a positive integer");
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error("--runs wants a positive integer");
  if (o.quick) o.runs = 1;
  o.partial = o.quick || o.only !== undefined;
  o.out = out ?? (o.partial ? path.join(os.tmpdir(), "logit-lens-BENCHMARKS.partial.md") : path.join(ROOT, "BENCHMARKS.md"));
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
    child.on("close", (code, signal) => {
      const wallS = (performance.now() - t0) / 1000;
      const loadavg: [number, number] = [la0, os.loadavg()[0]!];
      try {
        if (code !== 0) throw new Error(signal ? `killed by ${signal}` : `exit code ${code}`);
        const text = stdoutJson ? out.trim().split("\n").pop()! : fs.readFileSync(outFile!, "utf8");
        resolve({ ok: true, value: JSON.parse(text), wallS, loadavg });
      } catch (e) {
        const tail = err.trim().split("\n").slice(-6).join(" | ");
        resolve({ ok: false, error: `${(e as Error).message}${tail ? `: ${tail}` : ""}`, wallS, loadavg });
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

interface PythonInfo {
  python?: string;
  /** torch + transformers + gguf: the PyTorch column. */
  torch: boolean;
  /** gguf + numpy: can make synthetic GGUFs. */
  gguf: boolean;
  accelerate?: string;
  note: string;
}

async function findPython(): Promise<PythonInfo> {
  const candidates = [process.env["LOGIT_LENS_PYTHON"]?.trim(), path.join(ROOT, ".venv", "bin", "python")].filter((c): c is string => Boolean(c) && (c !== path.join(ROOT, ".venv", "bin", "python") || fs.existsSync(c!)));
  const probe = [
    "import importlib, importlib.metadata, json",
    "r = {}",
    "for m in ('torch', 'transformers', 'gguf', 'numpy', 'accelerate'):",
    "    try:",
    "        importlib.import_module(m)",
    "        r[m] = importlib.metadata.version(m)",
    "    except Exception:",
    "        r[m] = None",
    "print(json.dumps(r))",
  ].join("\n");
  const tried: string[] = [];
  for (const c of candidates) {
    const r = await runChild(c, ["-c", probe], {}, true);
    if (!r.ok) {
      tried.push(`${c} (does not run)`);
      continue;
    }
    const v = r.value as Record<string, string | null>;
    const torch = Boolean(v["torch"] && v["transformers"] && v["gguf"]);
    const gguf = Boolean(v["gguf"] && v["numpy"]);
    if (torch || gguf) {
      return {
        python: c,
        torch,
        gguf,
        accelerate: v["accelerate"] ?? undefined,
        note: `${c} (torch ${v["torch"] ?? "missing"}, transformers ${v["transformers"] ?? "missing"}, gguf ${v["gguf"] ?? "missing"}, accelerate ${v["accelerate"] ?? "not installed"})`,
      };
    }
    tried.push(`${c} (no torch/transformers/gguf)`);
  }
  return { torch: false, gguf: false, note: `no Python with torch + transformers + gguf (${tried.length ? `tried ${tried.join(", ")}` : "LOGIT_LENS_PYTHON is not set"}; set LOGIT_LENS_PYTHON)` };
}

// --- synthetic GGUFs

function syntheticDir(): string {
  return process.env["LOGIT_LENS_BENCH_SYNTHETIC"]?.trim() || process.env["LOGIT_LENS_SYNTHETIC_DIR"]?.trim() || path.join(cacheRoot(), "synthetic");
}

/** The synthetic file (made with the Python when missing and possible), or why there is none. */
async function syntheticFile(preset: string, layers: number | undefined, py: PythonInfo): Promise<{ file?: string; note: string }> {
  const dir = syntheticDir();
  const name = `synthetic-${preset}${layers ? `-${layers}l` : ""}-q4_k_m.gguf`;
  const file = path.join(dir, name);
  if (fs.existsSync(file)) return { file, note: `${file} (found)` };
  if (!py.python || !py.gguf) {
    return { note: `${name} is not in ${dir} and no Python with gguf was given to make it (set LOGIT_LENS_BENCH_SYNTHETIC to the folder that has it, or LOGIT_LENS_PYTHON to a Python with gguf + numpy)` };
  }
  log(`making ${file} with tools/synthetic/make_synthetic_gguf.py (once)`);
  fs.mkdirSync(dir, { recursive: true });
  const args = [path.join(ROOT, "tools", "synthetic", "make_synthetic_gguf.py"), preset, "--out", file, "--quiet", ...(layers ? ["--layers", String(layers)] : [])];
  const t0 = performance.now();
  const r = spawnSync(py.python, args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "inherit", "pipe"] });
  if (r.status !== 0 || !fs.existsSync(file)) return { note: `making ${name} failed: ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" | ")}` };
  return { file, note: `${file} (made in this run, ${((performance.now() - t0) / 1000).toFixed(0)} s)` };
}

// --- machine

function cpuFlags(): string[] {
  return /^flags\s*:\s*(.*)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.split(/\s+/) ?? [];
}

function machineFacts(): Record<string, string> {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  const flags = cpuFlags();
  const simd = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"].filter((f) => flags.includes(f)).join(", ") || "no avx2/fma/avx512f";
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
    memory: `${(os.totalmem() / GIB).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    "onnxruntime-node": version("onnxruntime-node"),
    "node-llama-cpp": version("node-llama-cpp"),
  };
}

interface Peak {
  isa: "avx512" | "avx2";
  gflops: number;
}

/**
 * The CPU's fp32 FMA peak with one vector width: a small C loop of independent FMA chains per
 * thread (12 x 512-bit or 10 x 256-bit), `threads` threads, best of 3. Undefined without a C
 * compiler or the instructions.
 */
function measureFmaPeak(isa: "avx512" | "avx2", threads: number): Peak | undefined {
  const flags = cpuFlags();
  if (isa === "avx512" ? !flags.includes("avx512f") : !flags.includes("avx2") || !flags.includes("fma")) return undefined;
  const cc = ["cc", "gcc", "clang"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0);
  if (!cc) return undefined;
  const w = isa === "avx512" ? { t: "__m512", set: "_mm512_set1_ps", fma: "_mm512_fmadd_ps", add: "_mm512_add_ps", store: "_mm512_storeu_ps", lanes: 16, chains: 12, flags: ["-mavx512f"] } : { t: "__m256", set: "_mm256_set1_ps", fma: "_mm256_fmadd_ps", add: "_mm256_add_ps", store: "_mm256_storeu_ps", lanes: 8, chains: 10, flags: ["-mavx2", "-mfma"] };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-fma-"));
  try {
    const acc = Array.from({ length: w.chains }, (_, i) => `a${i}`);
    const src = `#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define N 100000000L
static void *work(void *arg) {
  volatile float seed = (float)(long)arg * 1e-12f;
  ${acc.map((a, i) => `${w.t} ${a} = ${w.set}(1.0f + ${i + 1}e-4f + seed);`).join(" ")}
  ${w.t} b = ${w.set}(0.9999f), c = ${w.set}(1e-5f);
  for (long i = 0; i < N; i++) { ${acc.map((a) => `${a} = ${w.fma}(${a}, b, c);`).join(" ")} }
  ${w.t} s = ${acc.slice(1).reduce((e, a) => `${w.add}(${e}, ${a})`, acc[0]!)};
  float o[${w.lanes}]; ${w.store}(o, s);
  return (void *)(long)(o[0] > 1e30f);
}
int main(int argc, char **argv) {
  int t = atoi(argv[1]); pthread_t th[256]; struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < t; i++) pthread_create(&th[i], 0, work, (void *)(long)(i + 1));
  for (int i = 0; i < t; i++) pthread_join(th[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%f\\n", t * N * ${acc.length} * ${2 * w.lanes}.0 / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / 1e9);
  return 0;
}
`;
    fs.writeFileSync(path.join(dir, "fma.c"), src);
    const exe = path.join(dir, "fma");
    if (spawnSync(cc, ["-O2", ...w.flags, "-pthread", "-o", exe, path.join(dir, "fma.c")], { stdio: "ignore" }).status !== 0) return undefined;
    let best = 0;
    for (let i = 0; i < 3; i++) {
      const r = spawnSync(exe, [String(threads)], { encoding: "utf8" });
      const v = Number(r.stdout.trim());
      if (r.status === 0 && Number.isFinite(v)) best = Math.max(best, v);
    }
    return best > 0 ? { isa, gflops: best } : undefined;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Sequential read bandwidth from disk, bypassing the page cache (dd iflag=direct), in bytes/s. */
function diskReadBandwidth(file: string | undefined): { bps?: number; note: string } {
  if (!file) return { note: "not measured (no big file at hand)" };
  const size = fs.statSync(file).size;
  const bs = 16 * 2 ** 20;
  const count = Math.min(64, Math.floor(size / bs));
  const r = spawnSync("dd", [`if=${file}`, "of=/dev/null", `bs=${bs}`, `count=${count}`, "iflag=direct"], { encoding: "utf8" });
  const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(r.stderr ?? "");
  if (r.status !== 0 || !m) return { note: `not measured (dd iflag=direct failed: ${(r.stderr ?? "").trim().split("\n").pop()})` };
  const bps = Number(m[1]) / Number(m[2]);
  return { bps, note: `${(bps / GB).toFixed(2)} GB/s (dd iflag=direct, ${(Number(m[1]) / GIB).toFixed(0)} GiB of ${path.basename(file)})` };
}

// --- orchestration

type Kind = "real" | "8b" | "cut";

interface ModelRun {
  id: string;
  title: string;
  kind: Kind;
  spec: Spec;
  layersOfCut?: number;
  skip?: string;
  sourceNote?: string;
  prep?: ChildResult;
  lens?: ChildResult;
  forward?: ChildResult;
  maxmem?: ChildResult;
  /** The same lens and forward children with `--int8` (int8 activations). */
  int8Lens?: ChildResult;
  int8Forward?: ChildResult;
  stream?: ChildResult;
  llama?: ChildResult;
  torchPrep?: ChildResult;
  torch?: ChildResult;
  torchNote?: string;
}

function baseSpec(opts: Options, kind: Kind, source: string): Spec {
  const q = opts.quick;
  const common = { source, threads: opts.threads, runs: opts.runs, budgetS: opts.budgetS, chunkBytes: CHUNK_BYTES, decodePrompt: 8 };
  if (kind === "real") {
    return {
      ...common,
      prefillRuns: q ? 1 : Math.max(opts.runs, 5),
      prefillAll: q ? [8, 64] : [8, 64, 256],
      prefillLast: q ? [8, 64] : [8, 64, 256],
      lens: q ? [64] : [64, 256],
      lensRuns: opts.runs,
      decodeNew: q ? 8 : 32,
      profile: !q,
    };
  }
  if (kind === "8b") {
    // Each 8B pass takes tens of seconds here: one warm-up and one timed run of each.
    return { ...common, runs: 1, prefillRuns: 1, prefillAll: [], prefillLast: [64], lens: [64], lensRuns: q ? 0 : 1, decodeNew: q ? 4 : 16, profile: false };
  }
  return { ...common, runs: 1, prefillRuns: 1, prefillAll: [], prefillLast: [], lens: [64], lensRuns: q ? 0 : 1, decodeNew: 0, profile: false };
}

async function torchColumn(r: ModelRun, py: PythonInfo, opts: Options, ids: number[], ggufPath: string): Promise<void> {
  const cacheDir = path.join(cacheRoot(), "bench-reference", r.id);
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
    log(`${r.id}: transformers loads the GGUF (dequantizing; saved as fp32 safetensors for warm loads)`);
    fs.mkdirSync(path.dirname(cacheDir), { recursive: true });
    r.torchPrep = await runChild(py.python!, [script, "prepare", ggufPath, cacheDir, String(opts.threads)], env, true);
    if (!r.torchPrep.ok) log(`  failed: ${r.torchPrep.error}`);
  }
  if (!fs.existsSync(path.join(cacheDir, "bench-meta.json"))) {
    r.torch = r.torchPrep;
    return;
  }
  log(`${r.id}: transformers + PyTorch`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-bench-"));
  const specFile = path.join(dir, "spec.json");
  const s = r.spec;
  fs.writeFileSync(
    specFile,
    JSON.stringify({ ids, prefill: s.prefillAll, lens: s.lens, decodePrompt: s.decodePrompt, decodeNew: s.decodeNew, maxRuns: s.runs, prefillRuns: s.prefillRuns, budgetS: s.budgetS, chunkBytes: s.chunkBytes }),
  );
  r.torch = await runChild(py.python!, [script, "measure", cacheDir, specFile, String(opts.threads)], env, true);
  fs.rmSync(dir, { recursive: true, force: true });
  if (!r.torch.ok) log(`  failed: ${r.torch.error}`);
}

async function runModel(r: ModelRun, opts: Options, py: PythonInfo): Promise<void> {
  const s = r.spec;
  log(`${r.id}: prepare (fetch and conversion when not cached)`);
  r.prep = await nodeChild("prepare", s);
  if (!r.prep.ok) {
    log(`  prepare failed: ${r.prep.error}`);
    return;
  }
  const ggufPath = r.prep.value.path as string;
  log(`${r.id}: logit-lens, load + full lens`);
  r.lens = await nodeChild("lens", s);
  if (!r.lens.ok) log(`  failed: ${r.lens.error}`);
  const ids: number[] | undefined = r.lens.ok ? r.lens.value.ids : undefined;
  if (r.kind === "cut") {
    log(`${r.id}: logit-lens, load + full lens streamed (max memory ${(CUT_MAX_MEMORY / GIB).toFixed(0)} GiB)`);
    r.stream = await nodeChild("lens", { ...s, maxMemory: CUT_MAX_MEMORY });
    if (!r.stream.ok) log(`  failed: ${r.stream.error}`);
    return;
  }
  const withIds: Spec = { ...s, ids };
  log(`${r.id}: logit-lens, prefill and decode`);
  r.forward = await nodeChild("forward", withIds);
  if (!r.forward.ok) log(`  failed: ${r.forward.error}`);
  // The fast mode: int8 activations, its speed and how far its lens moves from the exact one.
  log(`${r.id}: logit-lens --int8, load + full lens, then prefill and decode`);
  r.int8Lens = await nodeChild("lens", { ...s, int8: true, lens: [r.spec.lens[0]!], profile: false });
  if (!r.int8Lens.ok) log(`  failed: ${r.int8Lens.error}`);
  r.int8Forward = await nodeChild("forward", { ...withIds, int8: true, prefillAll: [], prefillLast: s.prefillLast.includes(64) ? [64] : s.prefillLast.slice(-1), profile: false });
  if (!r.int8Forward.ok) log(`  failed: ${r.int8Forward.error}`);
  if (r.kind === "8b") {
    log(`${r.id}: logit-lens with --max-memory ${(MAX_MEMORY / GIB).toFixed(0)}G, load + full lens`);
    r.maxmem = await nodeChild("lens", { ...s, maxMemory: MAX_MEMORY });
    if (!r.maxmem.ok) log(`  failed: ${r.maxmem.error}`);
    else if (r.maxmem.value.maxMemoryHonoured === false) log("  LoadedModel.load has no maxMemory option here: not available");
  }
  if (opts.llama && ids) {
    log(`${r.id}: llama.cpp`);
    r.llama = await nodeChild("llama", withIds, [ggufPath]);
    if (!r.llama.ok) log(`  failed: ${r.llama.error}`);
  }
  if (!opts.torch) {
    r.torchNote = "skipped (--no-torch)";
  } else if (!py.torch) {
    r.torchNote = `skipped: ${py.note}`;
  } else if (r.kind === "8b" || r.prep.value.params * 4 > 0.8 * os.totalmem()) {
    r.torchNote = `PyTorch fp32 cannot load this shape here: ${(r.prep.value.params / 1e9).toFixed(2)} B parameters x 4 bytes = ${((r.prep.value.params * 4) / GB).toFixed(1)} GB of fp32 weights, against ${(os.totalmem() / GIB).toFixed(1)} GiB of RAM (and transformers dequantizes the whole GGUF to fp32 before it can run)`;
  } else if (ids) {
    await torchColumn(r, py, opts, ids, ggufPath);
  }
}

// --- formatting

const secs = (s: number | undefined): string => (s === undefined ? "n/a" : s < 10 ? `${(s * 1000).toFixed(s < 0.1 ? 1 : 0)} ms` : `${s.toFixed(1)} s`);
const gb = (b: number | undefined): string => (b === undefined ? "n/a" : `${(b / GB).toFixed(2)} GB`);
const mib = (b: number | undefined): string => (b === undefined ? "n/a" : `${(b / 2 ** 20).toFixed(0)} MiB`);
/** Speed of ours relative to another: > 1 means ours is faster. */
function ratio(ours: number | undefined, other: number | undefined, higherIsBetter = false): string {
  if (ours === undefined || other === undefined || !(ours > 0) || !(other > 0)) return "";
  const r = higherIsBetter ? ours / other : other / ours;
  return r >= 1 ? `**${r.toFixed(2)}x faster**` : `${(1 / r).toFixed(2)}x slower`;
}
const verdict = (ok: boolean | undefined): string => (ok === undefined ? "not measured" : ok ? "**met**" : "**missed**");
const best = (t: Timing | undefined): number | undefined => t?.best;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const val = (c: ChildResult | undefined): Json => (c?.ok ? c.value : undefined);
const why = (c: ChildResult | undefined, none = "not run"): string => (c ? (c.ok ? "ok" : `failed (${c.error})`) : none);

interface Context {
  opts: Options;
  facts: Record<string, string>;
  py: PythonInfo;
  peaks: Peak[];
  disk: { bps?: number; note: string };
  started: Date;
  totalS: number;
  loadavg: { start: number[]; end: number[] };
}

/**
 * The peak the targets use: the best of the vector widths measured (the widest first). On CPUs
 * that split a 512-bit FMA into two 256-bit halves (AMD Zen 4) both widths give the same peak.
 */
function widest(ctx: Context): Peak | undefined {
  return ctx.peaks.reduce<Peak | undefined>((a, p) => (!a || p.gflops > a.gflops * 1.02 ? p : a), undefined);
}

function lensFlops(cfg: { nLayers: number; hidden: number; vocab: number }, n: number): number {
  return 2 * cfg.nLayers * n * cfg.hidden * cfg.vocab;
}

function memLimit(fileSize: number): number {
  return 1.5 * fileSize + 0.5 * GB;
}

function report(ctx: Context, runs: ModelRun[]): { md: string; summary: string[] } {
  const { opts, facts, py } = ctx;
  const peak = widest(ctx);
  const lines: string[] = [];
  const cmd = `npm run bench${opts.argv.length ? ` -- ${opts.argv.join(" ")}` : ""}`;
  const torchV = runs.map((r) => val(r.torch)).find(Boolean);
  const llamaV = runs.map((r) => val(r.llama)).find(Boolean);
  const cpu = facts["cpu"]!;
  lines.push("# Benchmarks", "");
  lines.push(
    `Written by \`${cmd}\` (bench/bench.ts) on ${ctx.started.toISOString().slice(0, 16).replace("T", " ")} UTC; the whole run took ${(ctx.totalS / 60).toFixed(1)} min, on **${cpu}**, ${facts["nproc"]} CPUs, ${opts.threads} threads for every engine.`,
    `Load average (1, 5, 15 min) at the start ${ctx.loadavg.start.map((x) => x.toFixed(2)).join(", ")}, at the end ${ctx.loadavg.end.map((x) => x.toFixed(2)).join(", ")} (the machine is shared; each child's own is listed under its model).`,
    "Every figure below comes from that one run; only ratios measured in one run mean anything. Rerun the command to regenerate this file.",
    "",
  );

  // ---- issue 7's targets
  const t: string[] = [];
  const sum: string[] = [];
  const add = (measure: string, model: string, figure: string, target: string, ok: boolean | undefined, verdictText = verdict(ok)): void => {
    t.push(`| ${measure} | ${model} | ${figure} | ${target} | ${verdictText} |`);
    sum.push(`${verdictText.replace(/\*/g, "")}: ${measure}, ${model}: ${figure.replace(/\*/g, "")} (target ${target})`);
  };
  for (const r of runs.filter((x) => x.kind !== "cut")) {
    const l = val(r.lens);
    const p = val(r.torch);
    if (!l) {
      add("peak RSS, load + full lens of 64 tokens", r.title, r.skip ?? why(r.lens), "<= 1.5x GGUF + 0.5 GB", undefined);
      continue;
    }
    const lim = memLimit(l.fileSize);
    const torchFig = p ? `; PyTorch fp32 ${gb(p.peakRssAfterLensBytes)}` : r.kind === "8b" ? "; PyTorch fp32 cannot load this shape here (see below)" : "";
    add("peak RSS, load + full lens of 64 tokens", r.title, `${gb(l.hwm.afterLens)} vs ${gb(lim)} = 1.5 x ${gb(l.fileSize)} + 0.5 GB (${(l.hwm.afterLens / lim).toFixed(2)}x the limit)${torchFig}`, "<= 1.5x GGUF + 0.5 GB", l.hwm.afterLens <= lim);
  }
  for (const r of runs.filter((x) => x.kind === "8b")) {
    const m = val(r.maxmem);
    const l = val(r.lens);
    if (!m || m.maxMemoryHonoured === false) {
      add("peak RSS with `--max-memory 4G`", r.title, m?.maxMemoryHonoured === false ? "not available (LoadedModel.load has no maxMemory option in this build)" : r.skip ?? why(r.maxmem), "<= 4.5 GB", undefined);
    } else {
      const n = r.spec.lens[0]!;
      add(
        "peak RSS with `--max-memory 4G`",
        r.title,
        `${gb(m.hwm.afterLens)} (load + full lens of ${n} tokens in ${m.pieces ?? "?"} blocks of layers, ${secs(m.lens[n].total.best)}${l ? ` vs ${secs(l.lens[n].total.best)} in memory` : ""})`,
        "<= 4.5 GB",
        m.hwm.afterLens <= 4.5 * GB,
      );
    }
  }
  for (const r of runs.filter((x) => x.kind !== "cut")) {
    const f = val(r.forward);
    const ll = val(r.llama);
    if (!f || !ll) {
      add("prefill, forward only, vs llama.cpp", r.title, r.skip ?? (!f ? why(r.forward) : why(r.llama, opts.llama ? "not run" : "skipped (--no-llama)")), "no slower than 1.25x", undefined);
      continue;
    }
    for (const n of r.spec.prefillLast) {
      const o = best(f.prefillLast[n])!;
      const c = best(ll.prefill[n])!;
      add(`prefill ${n} tokens, forward only (last-position logits), vs llama.cpp`, r.title, `${secs(o)} vs ${secs(c)}: ${o >= c ? `ours ${(o / c).toFixed(2)}x slower` : `**ours ${(c / o).toFixed(2)}x faster**`}`, "no slower than 1.25x", o <= 1.25 * c);
    }
  }
  for (const r of runs.filter((x) => x.kind !== "cut")) {
    const f = val(r.forward);
    const ll = val(r.llama);
    if (!f || !ll) {
      add("decode with KV cache vs llama.cpp", r.title, r.skip ?? (!f ? why(r.forward) : why(r.llama, opts.llama ? "not run" : "skipped (--no-llama)")), "no slower than 1.5x", undefined);
      continue;
    }
    const o = f.decode.newTokens / f.decode.best;
    const c = ll.decode.newTokens / ll.decode.best;
    add("decode with KV cache vs llama.cpp", r.title, `${o.toFixed(2)} vs ${c.toFixed(2)} tok/s: ${c >= o ? `ours ${(c / o).toFixed(2)}x slower` : `**ours ${(o / c).toFixed(2)}x faster**`}`, "no slower than 1.5x", c / o <= 1.5);
  }
  for (const r of runs.filter((x) => x.kind !== "cut")) {
    const fi = val(r.int8Forward);
    const ll = val(r.llama);
    if (!fi || !ll) continue;
    const o = fi.decode.newTokens / fi.decode.best;
    const c = ll.decode.newTokens / ll.decode.best;
    add("decode with KV cache vs llama.cpp, `--int8` (int8 activations, not exact: figures only)", r.title, `${o.toFixed(2)} vs ${c.toFixed(2)} tok/s: ${c >= o ? `ours ${(c / o).toFixed(2)}x slower` : `**ours ${(o / c).toFixed(2)}x faster**`}`, "(fast mode, not a target)", undefined, "figures only");
  }
  for (const r of runs.filter((x) => x.kind !== "cut")) {
    const l = val(r.lens);
    const p = val(r.torch);
    if (!l || !p) {
      add("full lens vs transformers + PyTorch", r.title, r.torchNote ?? r.skip ?? why(r.torch), ">= 2x faster", undefined);
      continue;
    }
    for (const n of r.spec.lens) {
      const o = l.lens[n].total.best;
      const q = p.lens[n].best;
      add(`full lens, ${n} tokens, vs transformers + PyTorch`, r.title, `${secs(o)} vs ${secs(q)}: **${(q / o).toFixed(2)}x faster**`, ">= 2x faster", q / o >= 2);
    }
  }
  for (const r of runs.filter((x) => x.kind !== "cut")) {
    const l = val(r.lens);
    if (!l || !peak) {
      add("lens products vs the CPU's fp32 peak", r.title, !peak ? "no peak measured (no C compiler?)" : r.skip ?? why(r.lens), ">= 75 %", undefined);
      continue;
    }
    for (const n of r.spec.lens) {
      const g = lensFlops(l.config, n) / (l.lens[n].lensRead ?? l.lens[n].lensGraph).best / 1e9;
      add(`lens products (the lens alone: graph runs, tiles dequantized, merges), ${n} tokens`, r.title, `${g.toFixed(1)} GFLOP/s = ${((100 * g) / peak.gflops).toFixed(0)} % of ${peak.gflops.toFixed(0)} (${peak.isa === "avx512" ? "AVX-512" : "AVX2"} FMA peak)`, ">= 75 %", g >= 0.75 * peak.gflops);
    }
  }
  for (const r of runs) {
    const pr = val(r.prep);
    if (!pr) continue;
    const x = pr.weightsBinBytes / pr.fileSize;
    add("compiled cache vs GGUF size", r.title, `${gb(pr.weightsBinBytes)} vs ${gb(pr.fileSize)} = ${x.toFixed(2)}x`, "<= 1.1x", x <= 1.1);
  }
  const ex = extrapolate70b(ctx, runs);
  if (ex.ok) {
    t.push(`| 70B Q4_K_M, 64-token full lens, 16 GB RAM, streamed from disk (extrapolated, see below) | 70B (from the 2- and 4-layer cuts) | ${ex.headline} | (figures only) | - |`);
    sum.push(`70B extrapolated: ${ex.headline.replace(/\*/g, "")}`);
  }
  lines.push("## Issue 7's targets", "");
  lines.push(`CPU: ${cpu}. Memory in GB = 10^9 bytes; \`--max-memory 4G\` is 4 GiB, as the CLI reads it.`, "");
  lines.push("| measure | model | figure | target | verdict |", "|---|---|---|---|---|", ...t, "");
  const torchMissing = runs.filter((r) => r.torchNote);
  if (torchMissing.length) lines.push(...torchMissing.map((r) => `- PyTorch column, ${r.title}: ${r.torchNote}.`), "");

  // ---- machine
  lines.push("## Machine and versions", "");
  lines.push("| | |", "|---|---|");
  for (const [k, v] of Object.entries(facts)) lines.push(`| ${k} | ${v} |`);
  lines.push(`| torch / transformers | ${torchV ? `${torchV.torch} / ${torchV.transformers}` : "not run"} |`);
  lines.push(`| llama.cpp (node-llama-cpp binary) | ${llamaV ? `${llamaV.llamaCpp} (${llamaV.buildType})` : "not run"} |`);
  lines.push(`| reference python (LOGIT_LENS_PYTHON) | ${py.note} |`);
  lines.push(`| synthetic GGUFs (LOGIT_LENS_BENCH_SYNTHETIC) | ${syntheticDir()} |`);
  lines.push(`| threads (all engines) | ${opts.threads} |`);
  for (const p of ctx.peaks) lines.push(`| fp32 FMA peak, ${p.isa === "avx512" ? "512-bit" : "256-bit"} vectors | ${p.gflops.toFixed(0)} GFLOP/s (C loop of independent ${p.isa === "avx512" ? "12 AVX-512" : "10 AVX2"} FMA chains per thread, ${opts.threads} threads)${p === peak ? " **: the peak used for the targets**" : ""} |`);
  if (!ctx.peaks.length) lines.push("| fp32 FMA peak | not measured (no C compiler, or neither AVX2+FMA nor AVX-512) |");
  lines.push(`| disk read bandwidth | ${ctx.disk.note} |`);
  lines.push("");

  // ---- method
  lines.push("## How it is measured", "");
  lines.push(
    "- Same token ids for all engines (our tokenizer on an English paragraph, the first N tokens).",
    `- Each figure: a warm-up, then up to ${opts.runs} runs (prefill of the small models: ${Math.max(opts.runs, 5)}), fewer once ${opts.budgetS} s are spent; the 8B shape and the 70B cuts get 1 warm-up and 1 timed run. **Tables give the best run**, the raw samples are at the end: contention only ever adds time.`,
    "- Every measure is its own child process, so each peak RSS is that measure's own (VmHWM; Python: ru_maxrss). **Peak RSS, load + full lens** is VmHWM read right after the first full lens of 64 tokens in a child that only loaded the model and ran the lens (the `lens` command's path: forward session with every layer's `hook_resid_post`, then the lens session).",
    "- **Load** is a warm load: converted weights already in `<cache>/compiled` (a `prepare` child loads each model first) and in the page cache. PyTorch loads fp32 safetensors that transformers made once from the GGUF (`<cache>/bench-reference`); llama.cpp maps the GGUF.",
    "- **Prefill, forward only**: one forward pass over N tokens, logits for the last position only (ours: `model.forward([], \"last\")`; llama.cpp: `evaluateWithoutGeneratingNewTokens`; PyTorch: `logits_to_keep=1`). All-position logits (ours `model.forward([], true)`, PyTorch `model(ids)`) are compared with PyTorch only.",
    "- **Decode**: greedy, KV cache, single-token steps after an 8-token prompt (the prompt's prefill is not timed); tokens/s = steps / their time.",
    "- **Full lens**: `new LogitLens(model).apply(ids, {topK: 10})`: the forward pass with every layer's residual, then for every layer x position the final norm (statistics recomputed), unembedding, log-softmax, top-10, entropy and KL to the final layer. PyTorch, as a careful researcher writes it (bench/reference_bench.py): `output_hidden_states=True` plus a hook on the last layer, the norm, `lm_head` over chunks of positions, `log_softmax`, `topk`, entropy, KL. Each lens run is split by timing every onnxruntime run inside it: forward graph vs lens graph; the rest is JavaScript and, for a streamed model, building sessions.",
    `- **Lens GFLOP/s** = 2 x layers x positions x hidden x vocab (the useful unembedding work) / the lens's own time (the whole call less the forward pass and building sessions: lens graph runs, tiles of the unembedding dequantized in JavaScript, merges), against the fp32 FMA peak measured above with the widest vectors the CPU has.`,
    "- **`--int8`**: the same lens child (first lens size only) and forward child (64-token prefill and decode) with `LoadedModel.load(source, progress, { int8: true })`: the quantized products take int8 activations (MatMulNBits accuracy level 4, llama.cpp's trade), the lens's own products stay fp32. Its lens's top-1 ids are compared cell by cell with the exact lens's. A fast mode, not exact: its figures are not held against the targets.",
    `- **--max-memory 4G**: \`LoadedModel.load(source, progress, { maxMemory: 4 GiB })\` (what \`--max-memory 4G\` passes), then the same full lens; the model runs a block of layers at a time, building and dropping each block's session on every pass.`,
    "- **Cache size**: `weights.bin` in `<cache>/compiled/<key>/` (the repacked weights) against the GGUF file.",
    "",
  );

  // ---- per model
  for (const r of runs) lines.push(...modelSection(ctx, r));
  lines.push(...ex.md);

  // ---- raw
  lines.push("## Raw samples", "", "<details><summary>every timing sample, in seconds</summary>", "", "```json");
  const strip = (v: Json): Json => (v === undefined ? undefined : JSON.parse(JSON.stringify(v, (key, x) => (["best", "median", "tokens", "ids", "lensTop1", "tensorTypes"].includes(key) ? undefined : x))));
  const raw = runs.map((r) => ({
    model: r.id,
    prep: strip(val(r.prep)),
    lens: strip(val(r.lens)),
    forward: strip(val(r.forward)),
    maxmem: strip(val(r.maxmem)),
    stream: strip(val(r.stream)),
    llama: strip(val(r.llama)),
    torch: strip(val(r.torch)),
  }));
  lines.push(JSON.stringify(raw, (_k, v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v)), "```", "", "</details>", "");
  return { md: lines.join("\n"), summary: sum };
}

function modelSection(ctx: Context, r: ModelRun): string[] {
  if (r.kind === "cut") return [];
  const peak = widest(ctx);
  const lines: string[] = [`## ${r.title}`, ""];
  if (r.sourceNote) lines.push(`Source: ${r.sourceNote}.`, "");
  if (r.skip) return [...lines, `Skipped: ${r.skip}.`, ""];
  const pr = val(r.prep);
  const l = val(r.lens);
  const f = val(r.forward);
  const p = val(r.torch);
  const ll = val(r.llama);
  const m = val(r.maxmem);
  if (!pr) return [...lines, `logit-lens could not load it: ${why(r.prep)}.`, ""];
  const cfg = pr.config as { nLayers: number; hidden: number; vocab: number; architecture: string };
  lines.push(
    `${cfg.architecture}, ${cfg.nLayers} layers, hidden ${cfg.hidden}, vocab ${cfg.vocab.toLocaleString("en-US")}; ${(pr.params / 1e9).toFixed(3)} B parameters (${gb(pr.params * 4)} in fp32). GGUF ${gb(pr.fileSize)} (${Object.entries(pr.tensorTypes as Record<string, number>)
      .map(([k, v]) => `${v} ${k}`)
      .join(", ")}); our compiled cache ${gb(pr.weightsBinBytes)} = ${(pr.weightsBinBytes / pr.fileSize).toFixed(2)}x the GGUF.`,
    "",
  );
  lines.push("| measure | logit-lens (onnxruntime) | transformers + PyTorch (fp32) | llama.cpp (GGUF) | ours vs PyTorch | ours vs llama.cpp |", "|---|---:|---:|---:|---:|---:|");
  const row = (name: string, ov: number | undefined, pv: number | undefined, lv: number | undefined, fmt = secs, higher = false): void => {
    lines.push(`| ${name} | ${fmt(ov)} | ${p ? fmt(pv) : "-"} | ${lv === undefined ? "-" : fmt(lv)} | ${ratio(ov, pv, higher)} | ${ratio(ov, lv, higher)} |`);
  };
  row("load, warm", l?.loadS, p?.loadS, ll?.loadS, (s) => (s === undefined ? "n/a" : `${s.toFixed(2)} s`));
  if (f) {
    for (const n of r.spec.prefillAll) row(`prefill ${n} tokens, all-position logits`, best(f.prefill[n]), best(p?.prefill[n]), undefined);
    for (const n of r.spec.prefillLast) row(`prefill ${n} tokens, last-position logits (forward only)`, best(f.prefillLast[n]), best(p?.prefillLast[n]), best(ll?.prefill[n]));
  }
  if (l) {
    for (const n of r.spec.lens) row(`**full lens, ${n} tokens** (${cfg.nLayers} layers x ${n} positions)`, l.lens[n].total.best, p?.lens[n]?.best, undefined);
    for (const n of r.spec.lens) row(`of which forward + hooks, ${n} tokens`, l.lens[n].forward.best, p?.forwardHidden[n]?.best, undefined);
    for (const n of r.spec.lens) row(`of which the lens, ${n} tokens`, (l.lens[n].lensRead ?? l.lens[n].lensGraph).best, p?.lensOnly[n]?.best, undefined);
    for (const n of r.spec.lens) row(`of which lens graph runs, ${n} tokens`, l.lens[n].lensGraph.best, undefined, undefined);
    const gfFmt = (v: number | undefined): string => (v === undefined ? "n/a" : `${v.toFixed(1)}${peak ? ` (${((100 * v) / peak.gflops).toFixed(0)} %)` : ""}`);
    for (const n of r.spec.lens) {
      row(`lens GFLOP/s, the lens, ${n} tokens${peak ? ` (% of the ${peak.gflops.toFixed(0)} GFLOP/s peak)` : ""}`, lensFlops(cfg, n) / (l.lens[n].lensRead ?? l.lens[n].lensGraph).best / 1e9, p ? lensFlops(cfg, n) / p.lensOnly[n].best / 1e9 : undefined, undefined, gfFmt, true);
    }
  }
  if (f) row("decode, tokens/s (greedy, KV cache)", f.decode.newTokens / f.decode.best, p ? p.decode.newTokens / p.decode.best : undefined, ll ? ll.decode.newTokens / ll.decode.best : undefined, (v) => (v === undefined ? "n/a" : v.toFixed(2)), true);
  const fi = val(r.int8Forward);
  const li = val(r.int8Lens);
  if (fi) {
    for (const n of r.spec.prefillLast.filter((k) => fi.prefillLast[k])) row(`\`--int8\`: prefill ${n} tokens, last-position logits`, best(fi.prefillLast[n]), undefined, best(ll?.prefill[n]));
    row("`--int8`: decode, tokens/s", fi.decode.newTokens / fi.decode.best, undefined, ll ? ll.decode.newTokens / ll.decode.best : undefined, (v) => (v === undefined ? "n/a" : v.toFixed(2)), true);
  }
  if (li) {
    const n = r.spec.lens[0]!;
    row(`\`--int8\`: full lens, ${n} tokens`, li.lens[n].total.best, undefined, undefined);
  }
  const memFmt = (b: number | undefined): string => (b === undefined ? "n/a" : `${gb(b)} (${(b / pr.fileSize).toFixed(2)}x GGUF)`);
  if (l) lines.push(`| peak RSS, load + full lens of ${r.spec.lens[0]} tokens | ${memFmt(l.hwm.afterLens)} | ${p ? memFmt(p.peakRssAfterLensBytes) : r.kind === "8b" ? "cannot load" : "-"} | - | | |`);
  if (m && m.maxMemoryHonoured !== false) {
    const n = r.spec.lens[0]!;
    lines.push(`| peak RSS, load + full lens of ${n} tokens, \`--max-memory 4G\` (${m.pieces ?? "?"} blocks) | ${memFmt(m.hwm.afterLens)} | - | - | | |`);
    lines.push(`| full lens of ${n} tokens, \`--max-memory 4G\` | ${secs(m.lens[n].total.best)} (first call ${secs(m.first?.seconds)}) | - | - | | |`);
  }
  if (f) lines.push(`| peak RSS, prefill + decode child | ${memFmt(f.peakRssBytes)} | ${p ? memFmt(p.peakRssBytes) + " (whole child)" : "-"} | ${ll ? memFmt(ll.peakRssBytes) : "-"} | | |`);
  lines.push("");

  const notes: string[] = [];
  notes.push(`- Prepare child (first load of this run): ${pr.loadS.toFixed(1)} s, ${pr.converted ? "**converted into the cache in this run** (cold first load)" : "already converted (warm)"}; its peak RSS ${gb(pr.peakRssBytes)}.`);
  if (l?.first) {
    const n = r.spec.lens[0]!;
    notes.push(
      `- First full lens call (${n} tokens; builds the forward and lens sessions): ${secs(l.first.seconds)}, of which building sessions ${secs(l.first.createS)}, forward runs ${secs(l.first.forwardS)}, lens-graph runs ${secs(l.first.lensS)} (the tables give the later, warm calls). The lens's forward pass ran as ${l.pieces ?? "?"} block(s) of layers at the default budget (75 % of free memory).${l.pieces > 1 ? " **The model did not fit the default budget and streamed**: its lens times include rebuilding sessions." : ""}`,
    );
    notes.push(`- Resident at the end of the lens child: ${gb(l.rssFileBytes)} file-backed, ${gb(l.rssAnonBytes)} anonymous (weights.bin ${gb(l.weightsBinBytes)}); after load alone VmHWM ${gb(l.hwm.afterLoad)}.`);
  }
  if (f) notes.push(`- Building sessions for the forward-only passes: all-position logits ${f.sessionAllS === undefined ? "-" : secs(f.sessionAllS)}, last-position ${secs(f.sessionLastS)} (not in any timing).`);
  const int8Lens = val(r.int8Lens);
  if (int8Lens && l) {
    const a = int8Agreement(l.lensTop1 as number[][], int8Lens.lensTop1 as number[][]);
    notes.push(`- \`--int8\` (int8 activations in the quantized products, llama.cpp's trade; the lens's own products stay fp32): its lens's top-1 equals the exact lens's in ${a.same} / ${a.total} layer x position cells (${((100 * a.same) / a.total).toFixed(1)} %), and the output's (last layer) in ${a.lastSame} / ${a.lastTotal} positions; its lens child peaked at ${gb(int8Lens.hwm.afterLens)}. Not exact: a fast mode for generation, not a target.`);
  }
  if (m && m.maxMemoryHonoured !== false && l) {
    const n = r.spec.lens[0]!;
    let same = 0;
    let total = 0;
    (l.lensTop1 as number[][]).forEach((rowIds, li) =>
      rowIds.forEach((id, pi) => {
        total++;
        if (m.lensTop1?.[li]?.[pi] === id) same++;
      }),
    );
    notes.push(
      `- \`--max-memory 4G\`: ${m.pieces ?? "?"} blocks of layers; the lens took ${secs(m.lens[n].total.best)} (forward ${secs(m.lens[n].forward.best)}, lens graph ${secs(m.lens[n].lensGraph.best)}, building sessions ${secs(m.lens[n].sessions.best)}); top-1 equal to the in-memory run in ${same} / ${total} cells.`,
    );
  }
  if (p?.lensTop1 && l) {
    let same = 0;
    let total = 0;
    (l.lensTop1 as number[][]).forEach((rowIds, li) =>
      rowIds.forEach((id, pi) => {
        total++;
        if (p.lensTop1[li]?.[pi] === id) same++;
      }),
    );
    notes.push(`- Sanity: our lens top-1 equals PyTorch's in ${same} / ${total} cells (${((100 * same) / total).toFixed(1)} %) at ${r.spec.lens[0]} tokens.`);
  }
  if (p) notes.push(`- transformers loading the GGUF itself (dequantizing, timed once when its fp32 copy was made): ${p.ggufLoadS.toFixed(1)} s via ${p.ggufLoader}. PyTorch attention: ${p.attnImplementation}.`);
  const agree = (a: number[] | undefined, b: number[] | undefined): string => {
    if (!a || !b) return "n/a";
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return i === a.length ? `all ${a.length} identical` : `first ${i} of ${a.length} identical`;
  };
  if (f) notes.push(`- Sanity, greedy tokens: ours vs PyTorch ${agree(f.decode.tokens, p?.decode.tokens)}; ours vs llama.cpp ${agree(f.decode.tokens, ll?.decode.tokens)}.`);
  if (l?.profile?.byOpS) {
    const byOpS = l.profile.byOpS as Record<string, number>;
    const byOp = Object.entries(byOpS).sort((a, b) => b[1] - a[1]);
    const total = byOp.reduce((s, [, v]) => s + v, 0);
    const mm = (byOpS["Gemm"] ?? 0) + (byOpS["MatMul"] ?? 0) + (byOpS["MatMulNBits"] ?? 0);
    const executed = 2 * l.profile.rows * cfg.hidden * cfg.vocab;
    notes.push(
      `- Where the lens graph's time goes (onnxruntime profiler, ${l.profile.chunks} of ${l.profile.of} chunks of the ${r.spec.lens[0]}-token lens, kernel time ${secs(total)}): ${byOp
        .slice(0, 8)
        .map(([k, v]) => `${k} ${((100 * v) / total).toFixed(0)} %`)
        .join(", ")}.${mm && peak ? ` The unembedding products alone: ${(executed / mm / 1e9).toFixed(1)} GFLOP/s (${((100 * executed) / mm / 1e9 / peak.gflops).toFixed(0)} % of the peak).` : ""} The lens graph multiplied ${l.lensExecutedRows} layer x position rows by the whole vocabulary, in ${l.lensChunks} runs (a tile of the vocabulary each), for ${cfg.nLayers * r.spec.lens[0]!} useful ones.`,
    );
  }
  if (r.torchNote) notes.push(`- PyTorch column: ${r.torchNote}.`);
  else if (!p) notes.push(`- PyTorch column: ${why(r.torch)}.`);
  if (!ll) notes.push(`- llama.cpp column: ${why(r.llama, ctx.opts.llama ? "not run" : "skipped (--no-llama)")}.`);
  else notes.push("- llama.cpp runs the GGUF blocks as they are and has no lens: only load, prefill (last position) and decode have a llama.cpp figure.");
  for (const [name, c] of [
    ["failed: ours, lens", r.lens],
    ["failed: ours, prefill/decode", r.forward],
    ["failed: ours, --max-memory", r.maxmem],
  ] as Array<[string, ChildResult | undefined]>)
    if (c && !c.ok) notes.push(`- ${name}: ${c.error}`);
  const la = (
    [
      ["prepare", r.prep],
      ["lens", r.lens],
      ["prefill+decode", r.forward],
      ["--max-memory", r.maxmem],
      ["llama.cpp", r.llama],
      ["PyTorch prepare", r.torchPrep],
      ["PyTorch", r.torch],
    ] as Array<[string, ChildResult | undefined]>
  )
    .filter((e): e is [string, ChildResult] => Boolean(e[1]))
    .map(([name, c]) => `${name} ${c.loadavg[0].toFixed(1)} -> ${c.loadavg[1].toFixed(1)} (${c.wallS.toFixed(0)} s)`);
  notes.push(`- Load average (1 min) before -> after each child, and its wall time: ${la.join("; ")}.`);
  lines.push("Notes:", "", ...notes, "");
  return lines;
}

/** Cells whose top-1 is the same in two lens runs ([readout][position] ids), overall and at the last readout. */
function int8Agreement(exact: number[][], int8: number[][]): { same: number; total: number; lastSame: number; lastTotal: number } {
  let same = 0, total = 0, lastSame = 0, lastTotal = 0;
  exact.forEach((ids, li) =>
    ids.forEach((id, pi) => {
      const hit = int8[li]?.[pi] === id;
      total++;
      if (hit) same++;
      if (li === exact.length - 1) {
        lastTotal++;
        if (hit) lastSame++;
      }
    }),
  );
  return { same, total, lastSame, lastTotal };
}

/** The 70B figures from the 2- and 4-layer cuts: per-layer cost = (4-layer - 2-layer) / 2. */
function extrapolate70b(ctx: Context, runs: ModelRun[]): { ok: boolean; headline: string; md: string[] } {
  const c2 = runs.find((r) => r.kind === "cut" && r.layersOfCut === 2);
  const c4 = runs.find((r) => r.kind === "cut" && r.layersOfCut === 4);
  const md: string[] = ["## 70B, extrapolated from two cuts of the 70B shape", ""];
  if (!c2 && !c4) return { ok: false, headline: "", md: [] };
  const missing = [c2, c4].filter((r) => !r || r.skip || !val(r.lens) || !val(r.stream) || !val(r.prep));
  if (missing.length) {
    md.push(
      "Not computed: " +
        [c2, c4]
          .map((r, i) => (r ? `${r.title}: ${r.skip ?? (!val(r.prep) ? why(r.prep) : !val(r.lens) ? why(r.lens) : !val(r.stream) ? why(r.stream) : "ok")}` : `${i ? 4 : 2}-layer cut not selected`))
          .join("; ") +
        ".",
      "",
    );
    return { ok: false, headline: "", md };
  }
  const n = c2!.spec.lens[0]!;
  const a = { prep: val(c2!.prep), lens: val(c2!.lens), stream: val(c2!.stream) };
  const b = { prep: val(c4!.prep), lens: val(c4!.lens), stream: val(c4!.stream) };
  const L = FULL_70B_LAYERS;
  const per = (x: number, y: number): number => (y - x) / 2;
  const tbl = (name: string, x: number, y: number, fmt: (v: number) => string): string => `| ${name} | ${fmt(x)} | ${fmt(y)} | ${fmt(per(x, y))} | ${fmt(x - 2 * per(x, y))} | ${fmt(x + (L - 2) * per(x, y))} |`;
  const G = [a.prep.fileSize, b.prep.fileSize];
  const W = [a.prep.weightsBinBytes, b.prep.weightsBinBytes];
  const Tm = [a.lens.lens[n].total.best, b.lens.lens[n].total.best];
  const Fm = [a.lens.lens[n].forward.best, b.lens.lens[n].forward.best];
  const Lg = [a.lens.lens[n].lensRead.best, b.lens.lens[n].lensRead.best];
  const Mm = [a.lens.hwm.afterLens, b.lens.hwm.afterLens];
  const Ts = [a.stream.lens[n].total.best, b.stream.lens[n].total.best];
  const Cs = [a.stream.lens[n].sessions.best, b.stream.lens[n].sessions.best];
  const Ms = [a.stream.hwm.afterLens, b.stream.hwm.afterLens];
  const U: number | undefined = a.stream.unembeddingBytes ?? a.lens.unembeddingBytes;
  md.push(
    `The synthetic Llama-3-70B shape (hidden 8192, MLP 28672, 64/8 heads, vocab 128256, the Q4_K_M types of the full model's layers) cut to 2 and to 4 layers; every difference of the two, halved, is the cost of one layer, and what is left of the 2-layer cut after taking 2 layers off is the fixed cost (embedding, unembedding and the lens over the final layer, which the lens graph runs as its KL reference). A full 70B has ${L} layers: **70B = fixed + ${L} x per layer = 2-layer cut + ${L - 2} x per layer**. "Streamed" runs the same lens with \`maxMemory\` ${(CUT_MAX_MEMORY / GIB).toFixed(0)} GiB, so every block of layers is built, run and dropped on every pass (${a.stream.pieces ?? "?"} and ${b.stream.pieces ?? "?"} blocks), as a 70B in 16 GB must; "in memory" keeps the sessions. ${n}-token full lens, figures of this run.`,
    "",
    "| | 2-layer cut | 4-layer cut | per layer | fixed | 70B (80 layers) |",
    "|---|---:|---:|---:|---:|---:|",
    tbl("GGUF size", G[0], G[1], gb),
    tbl("compiled cache (weights.bin)", W[0], W[1], gb),
    tbl("full lens, in memory", Tm[0], Tm[1], secs),
    tbl("of which forward", Fm[0], Fm[1], secs),
    tbl("of which the lens", Lg[0], Lg[1], secs),
    tbl("full lens, streamed (page cache warm)", Ts[0], Ts[1], secs),
    tbl("of which building sessions", Cs[0], Cs[1], secs),
    tbl("peak RSS, load + lens, in memory", Mm[0], Mm[1], gb),
    `| peak RSS, load + lens, streamed | ${gb(Ms[0])} | ${gb(Ms[1])} | | | |`,
    "",
  );
  const w70 = W[0] + (L - 2) * per(W[0], W[1]);
  const g70 = G[0] + (L - 2) * per(G[0], G[1]);
  const ts70 = Ts[0] + (L - 2) * per(Ts[0], Ts[1]);
  const tm70 = Tm[0] + (L - 2) * per(Tm[0], Tm[1]);
  const bw = ctx.disk.bps;
  const layerBytes = per(W[0], W[1]);
  const readBytes = w70 - (U ?? 0);
  const readS = bw ? readBytes / bw : undefined;
  md.push("Time, 70B, 64-token full lens, 16 GB of RAM:", "");
  md.push(
    `- Compute and session building, as measured streamed with the weights in the page cache: ${secs(Ts[0])} + ${L - 2} x ${secs(per(Ts[0], Ts[1]))} = **${secs(ts70)}** (in memory it would be ${secs(Tm[0])} + ${L - 2} x ${secs(per(Tm[0], Tm[1]))} = ${secs(tm70)}: streaming adds ${secs(ts70 - tm70)}, building sessions for every block on every pass).`,
  );
  md.push(
    `- Reading from disk: the 70B's compiled weights are ${gb(w70)} (${(w70 / g70).toFixed(2)}x its ${gb(g70)} GGUF), far more than 16 GB, so every pass reads the layers from disk again${U ? ` (all but the unembedding, ${gb(U)}, whose session stays open)` : ""}: ${gb(readBytes)} / ${bw ? `${(bw / GB).toFixed(2)} GB/s` : "(disk bandwidth not measured)"} = ${readS ? `**${secs(readS)}**` : "n/a"}.`,
  );
  const total = readS !== undefined ? ts70 + readS : undefined;
  md.push(
    `- Total: ${readS !== undefined ? `${secs(ts70)} + ${secs(readS)} = **${secs(total)}** if reading and computing do not overlap (a block is read while its session is built, before it runs), at least max(${secs(ts70)}, ${secs(readS)}) = ${secs(Math.max(ts70, readS))} if they overlapped fully` : "n/a without the disk bandwidth"}. Converting the 70B GGUF into the cache the first time is not included.`,
    "",
  );
  // Memory: the engine's rule (engine/model.ts LayerBlocks): a block's session counts 2x the weight
  // bytes it maps; the lens session keeps the unembedding (2x too) outside the blocks' share.
  const mPer = per(Mm[0], Mm[1]);
  const budget = RAM_70B;
  md.push("Memory, 70B, with `--max-memory 16G`:", "");
  if (U !== undefined) {
    const k = Math.max(1, Math.floor((budget - 2 * U) / (2 * layerBytes)));
    const resid = (L - 2) * n * 8192 * 4;
    const est = Ms[0] + (Math.min(k, L) - 1) * mPer + resid;
    md.push(
      `- The engine's rule (LayerBlocks in src/engine/model.ts): a block of layers counts 2x the weight bytes it maps, the lens session holds the unembedding (${gb(U)}, counted 2x) outside the blocks' share; so with 16 GiB the forward pass runs in blocks of floor((16 GiB - 2 x ${gb(U)}) / (2 x ${gb(layerBytes)})) = **${k} layers**, ${Math.ceil(L / k)} blocks per pass.`,
      `- Measured: the streamed 2-layer cut peaks at ${gb(Ms[0])} with one layer's block resident at a time; each more resident layer costs ${gb(mPer)} (in-memory cuts: (${gb(Mm[1])} - ${gb(Mm[0])}) / 2); the ${L - 2} more layers' residuals kept for the lens are ${L - 2} x ${n} x 8192 x 4 B = ${gb(resid)}.`,
      `- Peak RSS = ${gb(Ms[0])} + (${k} - 1) x ${gb(mPer)} + ${gb(resid)} = **${gb(est)}** (${est <= budget ? "within" : "**over**"} the 16 GiB = ${gb(budget)} budget; a 16 GB machine also needs room for the OS, so a user would pass less, e.g. \`--max-memory 12G\`, for smaller blocks at the same speed: streaming costs per byte, not per block).`,
      "",
    );
    return { ok: true, headline: `${secs(total ?? ts70)} (${secs(ts70)} compute + ${readS ? secs(readS) : "n/a"} disk), peak RSS ~${gb(est)}, cache ${gb(w70)} = ${(w70 / g70).toFixed(2)}x the ${gb(g70)} GGUF`, md };
  }
  md.push("- Not estimated: this engine build does not report the unembedding's bytes (LoadedModel.unembeddingBytes).", "");
  return { ok: true, headline: `${secs(total ?? ts70)}, cache ${gb(w70)}`, md };
}

async function parent(opts: Options): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const loadStart = os.loadavg();
  const facts = machineFacts();
  log(`logit-lens bench: ${facts["cpu"]}, ${facts["nproc"]} CPUs, ${opts.threads} threads; load average ${loadStart.map((x) => x.toFixed(2)).join(" ")}`);
  const peaks = (["avx512", "avx2"] as const).map((isa) => measureFmaPeak(isa, opts.threads)).filter((p): p is Peak => Boolean(p));
  for (const p of peaks) log(`fp32 FMA peak, ${p.isa}: ${p.gflops.toFixed(0)} GFLOP/s`);
  const py = await findPython();
  log(`reference python: ${py.note}`);

  const wanted = (opts.only ?? DEFAULT_ENTRIES).map((x) => x.toLowerCase());
  const runs: ModelRun[] = [];
  for (const w of wanted) {
    if (w === "8b") {
      const f = await syntheticFile("llama3-8b", undefined, py);
      runs.push({ id: "synthetic-llama3-8b", title: "Llama 3 8B shape (synthetic Q4_K_M)", kind: "8b", spec: baseSpec(opts, "8b", f.file ?? ""), skip: f.file ? undefined : f.note, sourceNote: f.note });
    } else if (w === "70b") {
      for (const layers of [2, 4]) {
        const f = await syntheticFile("llama3-70b-cut", layers, py);
        runs.push({
          id: `synthetic-llama3-70b-cut-${layers}l`,
          title: `Llama 3 70B shape cut to ${layers} layers (synthetic Q4_K_M)`,
          kind: "cut",
          layersOfCut: layers,
          spec: baseSpec(opts, "cut", f.file ?? ""),
          skip: f.file ? undefined : f.note,
          sourceNote: f.note,
        });
      }
    } else {
      const source = SHORT[w] ?? w;
      runs.push({ id: path.basename(source).replace(/\.gguf$/i, ""), title: path.basename(source), kind: "real", spec: baseSpec(opts, "real", source) });
    }
  }
  const big = runs.find((r) => !r.skip && r.kind !== "real")?.spec.source;
  const disk = diskReadBandwidth(big);
  log(`disk read: ${disk.note}`);
  for (const r of runs) {
    if (r.skip) {
      log(`${r.id}: skipped: ${r.skip}`);
      continue;
    }
    await runModel(r, opts, py);
  }
  const totalS = (performance.now() - t0) / 1000;
  const ctx: Context = { opts, facts, py, peaks, disk, started, totalS, loadavg: { start: loadStart, end: os.loadavg() } };
  const { md, summary } = report(ctx, runs);
  fs.writeFileSync(opts.out, md);
  process.stdout.write(`\n${summary.join("\n")}\n\nwritten to ${path.relative(process.cwd(), opts.out) || opts.out} in ${(totalS / 60).toFixed(1)} min${opts.partial ? " (a partial run: BENCHMARKS.md is only written by a full run, or with --out)" : ""}\n`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--child") {
    const [, mode, specFile, outFile, ...rest] = argv;
    const spec = JSON.parse(fs.readFileSync(specFile!, "utf8")) as Spec;
    let result: object;
    if (mode === "prepare") result = await childPrepare(spec);
    else if (mode === "lens") result = await childLens(spec);
    else if (mode === "forward") result = await childForward(spec);
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
