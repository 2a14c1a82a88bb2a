/**
 * The exact KL between two lens runs (two prompts, or two models that share a vocabulary, such as
 * one model in F16 and in Q4), cell by cell, over the whole vocabulary.
 *
 * The lens graph (lens-graph.ts) keeps only compact results per cell (top-k, entropy, KL to the
 * output), which is enough to draw one run but not to compare two: the top-k lists of A and B give
 * an estimate at best. Here the first run's full log-probabilities are kept ([P, R, V] floats: the
 * price of exactness, bounded by MAX_REFERENCE_BYTES), and the second run is read by a graph that
 * takes them as an input and returns, per cell, both directions of the divergence:
 *
 *   KL(ref ‖ run) = sum_v exp(ref_v) (ref_v - logp_v),   KL(run ‖ ref) = sum_v exp(logp_v) (logp_v - ref_v)
 *
 * so only two numbers per cell cross into JavaScript. Rows are the readouts, then the model's own
 * output (the last row), read exactly as the lens reads them (the same norm, unembedding and
 * softcap, through LoadedModel.lensWeightsFor).
 */
import crypto from "node:crypto";
import type ort from "onnxruntime-node";
import { blockHook } from "../architectures/forward.js";
import { unembeddingOf } from "../architectures/index.js";
import { layerNorm, rmsNorm } from "../architectures/layers.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import type { LensVariant } from "./lens-graph.js";

/** The most the first run's kept log-probabilities may take (a 49k vocabulary: ~5,400 cells). */
export const MAX_REFERENCE_BYTES = 1024 * 1024 * 1024;
/** Bytes of one graph run's [P, R, V] buffers (the logits, log-probs, the reference and products). */
const CHUNK_BUDGET_BYTES = 128 * 1024 * 1024;

export interface DistributionRun {
  ids: number[];
  /** Hook points read, in order; the model's output is read as one more row after them. */
  readouts: string[];
  variant: LensVariant;
  /** Positions (indices into ids) to read. */
  positions: number[];
}

/** The full log-probabilities of a run's cells: [position][row][vocab], rows = readouts + output. */
export interface Distributions {
  readouts: string[];
  positions: number[];
  vocabSize: number;
  /** Identifies the vocabulary (every token's bytes): two runs compare only over the same one. */
  vocabulary: string;
  logprobs: Float32Array;
}

/** Per compared row (readouts shared by both runs, then "output") and column: both directions, in nats. */
export interface CellDivergences {
  rows: string[];
  /** Columns compared: the first min(P_ref, P_run) read positions of each run, by index. */
  columns: number;
  /** [row][column]: KL(reference ‖ run). */
  refToRun: number[][];
  /** [row][column]: KL(run ‖ reference). */
  runToRef: number[][];
}

const sessions = new WeakMap<LoadedModel, Map<string, Promise<ort.InferenceSession>>>();

/** A fingerprint of the vocabulary: every token id's bytes, in order. */
export function vocabularyFingerprint(model: LoadedModel): string {
  const hash = crypto.createHash("sha256");
  const len = Buffer.alloc(4);
  for (let id = 0; id < model.config.vocabSize; id++) {
    const b = model.tokenizer.tokenBytes(id);
    len.writeUInt32LE(b.length);
    hash.update(len).update(b);
  }
  return hash.digest("hex").slice(0, 24);
}

function outputHookOf(model: LoadedModel, variant: LensVariant): string {
  return variant === "logit" ? blockHook(model.config.nLayers - 1, "hook_resid_post") : "ln_final.hook_normalized";
}

/** The lens's logits as log-probabilities; with a reference, the two KLs per cell instead. */
function buildGraph(model: LoadedModel, variant: LensVariant, withReference: boolean): GraphBuilder {
  const cfg = model.config;
  const u = unembeddingOf(cfg);
  const g = new GraphBuilder(`lens-${withReference ? "kl" : "logprobs"}-${variant}`);
  const weights = model.lensWeightsFor(g);
  const resid = g.input("resid", "float32", ["P", "R", cfg.hidden]);
  let x: Value = g.reshape(resid, [-1, cfg.hidden]);
  if (variant === "logit") {
    x = u.norm === "layernorm" ? layerNorm(g, x, weights.get(u.normWeight), weights.get(u.normBias!), u.eps) : rmsNorm(g, x, weights.get(u.normWeight), u.eps, u.norm === "rms_gemma");
  }
  let logits = g.linear(x, weights.get(u.matrix));
  if (u.softcap) logits = g.mul(g.tanh(g.div(logits, g.scalar(u.softcap))), g.scalar(u.softcap));
  const shapePR = g.slice(g.op1("Shape", [resid]), [0], [2], [0]);
  logits = g.op1("Reshape", [logits, g.concat([shapePR, g.ints([-1])], 0)]); // [P, R, V]
  const logp = g.op1("LogSoftmax", [logits], { axis: -1 });
  if (!withReference) {
    g.output(logp, "logprobs");
    return g;
  }
  const ref = g.input("reference", "float32", ["P", "R", cfg.vocabSize]);
  const diff = g.sub(ref, logp);
  g.output(g.reduceSum(g.mul(g.exp(ref), diff), [2], 0), "kl_ref_run");
  g.output(g.reduceSum(g.mul(g.exp(logp), g.neg(diff)), [2], 0), "kl_run_ref");
  return g;
}

function session(model: LoadedModel, variant: LensVariant, withReference: boolean): Promise<ort.InferenceSession> {
  let byKey = sessions.get(model);
  if (!byKey) sessions.set(model, (byKey = new Map()));
  const key = `${variant}/${withReference}`;
  let s = byKey.get(key);
  if (!s) byKey.set(key, (s = createSession(buildGraph(model, variant, withReference), model.store.dir, model.lensTuning())));
  return s;
}

/** Runs the model and hands over the residuals of `rows` at `positions`, in chunks of positions ([P, R, H]). */
async function* residualChunks(model: LoadedModel, run: DistributionRun, rows: string[], signal?: AbortSignal): AsyncGenerator<{ start: number; P: number; resid: Float32Array }> {
  const H = model.config.hidden;
  const forward = await model.forward([...new Set(rows)], "none");
  const fwd = await forward.run(run.ids);
  const R = rows.length;
  const chunk = Math.max(1, Math.floor(CHUNK_BUDGET_BYTES / (R * model.config.vocabSize * 4 * 4)));
  for (let start = 0; start < run.positions.length; start += chunk) {
    signal?.throwIfAborted();
    const pos = run.positions.slice(start, start + chunk);
    const resid = new Float32Array(pos.length * R * H);
    rows.forEach((hook, r) => {
      const src = fwd.hooks.get(hook)!;
      pos.forEach((p, i) => resid.set(src.subarray(p * H, (p + 1) * H), (i * R + r) * H));
    });
    yield { start, P: pos.length, resid };
  }
}

function checkRun(model: LoadedModel, run: DistributionRun): void {
  for (const p of run.positions) if (!Number.isInteger(p) || p < 0 || p >= run.ids.length) throw new UserError(`position ${p} is out of range (0..${run.ids.length - 1})`);
}

/** The reference run: the full log-probabilities of every cell, kept in memory (bounded). */
export async function lensDistributions(model: LoadedModel, run: DistributionRun, signal?: AbortSignal): Promise<Distributions> {
  checkRun(model, run);
  const rows = [...run.readouts, outputHookOf(model, run.variant)];
  const V = model.config.vocabSize;
  const bytes = run.positions.length * rows.length * V * 4;
  if (bytes > MAX_REFERENCE_BYTES) {
    throw new UserError(
      `the exact KL keeps the first run's distributions in memory: ${rows.length} rows x ${run.positions.length} positions x ${V} tokens is ${(bytes / 2 ** 30).toFixed(1)} GiB, over the ${MAX_REFERENCE_BYTES / 2 ** 30} GiB allowed; read fewer positions or readout points`,
    );
  }
  const logprobs = new Float32Array(run.positions.length * rows.length * V);
  const s = await session(model, run.variant, false);
  for await (const c of residualChunks(model, run, rows, signal)) {
    const out = await runSession(s, { resid: new runtime.Tensor("float32", c.resid, [c.P, rows.length, model.config.hidden]), ...model.lensFeeds() }, "lens log-probabilities");
    logprobs.set(out["logprobs"]!.data as Float32Array, c.start * rows.length * V);
  }
  return { readouts: run.readouts, positions: run.positions, vocabSize: V, vocabulary: vocabularyFingerprint(model), logprobs };
}

/**
 * Reads `run` and compares each of its cells with the reference's cell at the same readout (by hook
 * name; readouts only one run has are left out) and the same column (index into the read
 * positions). The output rows are always compared.
 */
export async function divergencesFrom(model: LoadedModel, reference: Distributions, run: DistributionRun, signal?: AbortSignal): Promise<CellDivergences> {
  checkRun(model, run);
  const V = model.config.vocabSize;
  if (V !== reference.vocabSize || vocabularyFingerprint(model) !== reference.vocabulary) {
    throw new UserError(`the two runs have different vocabularies (${reference.vocabSize} and ${V} tokens${V === reference.vocabSize ? ", not the same tokens" : ""}): the KL between their distributions is not defined; compare models that share a tokenizer`);
  }
  const shared = reference.readouts.filter((hook) => run.readouts.includes(hook));
  const refRow = [...shared.map((hook) => reference.readouts.indexOf(hook)), reference.readouts.length];
  const Rref = reference.readouts.length + 1;
  const rows = [...shared, outputHookOf(model, run.variant)];
  const R = rows.length;
  const columns = Math.min(reference.positions.length, run.positions.length);
  const refToRun = rows.map(() => new Array<number>(columns));
  const runToRef = rows.map(() => new Array<number>(columns));
  const s = await session(model, run.variant, true);
  for await (const c of residualChunks(model, { ...run, positions: run.positions.slice(0, columns) }, rows, signal)) {
    // The reference's cells in this run's [P, R, V] order.
    const ref = new Float32Array(c.P * R * V);
    for (let i = 0; i < c.P; i++) {
      for (let r = 0; r < R; r++) {
        const from = ((c.start + i) * Rref + refRow[r]!) * V;
        ref.set(reference.logprobs.subarray(from, from + V), (i * R + r) * V);
      }
    }
    const out = await runSession(
      s,
      { resid: new runtime.Tensor("float32", c.resid, [c.P, R, model.config.hidden]), reference: new runtime.Tensor("float32", ref, [c.P, R, V]), ...model.lensFeeds() },
      "lens KL",
    );
    const ab = out["kl_ref_run"]!.data as Float32Array;
    const ba = out["kl_run_ref"]!.data as Float32Array;
    for (let i = 0; i < c.P; i++) {
      for (let r = 0; r < R; r++) {
        // KL >= 0; float rounding of two equal distributions can give -1e-7.
        refToRun[r]![c.start + i] = Math.max(0, ab[i * R + r]!);
        runToRef[r]![c.start + i] = Math.max(0, ba[i * R + r]!);
      }
    }
  }
  return { rows: [...shared, "output"], columns, refToRun, runToRef };
}
