/**
 * One lens job, as the CLI (and later the web app) asks for it: the lens over a prompt, or over a
 * prompt and a generation that the lens follows token by token, plus the tracked targets.
 */
import type { LoadedModel, KvCache } from "../engine/model.js";
import { truncateCache } from "../engine/model.js";
import type { Progress } from "../progress.js";
import { LogitLens, type LensCell, type LensResult } from "./logit-lens.js";
import type { LensVariant } from "./lens-graph.js";
import { Sampler, type SamplingOptions } from "./sampling.js";
import type { TextTarget, TokenFamily } from "./targets.js";
import { CHAIN_STREAM_BUDGET_BYTES, ChainStream, chainProbabilities, type ChainProbs } from "./chain.js";

export interface GenerateOptions {
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** Token ids that end the generation (EOS, end of turn); the stop token is kept in the output. */
  stopIds: number[];
}

export interface LensJob {
  promptIds: number[];
  readouts: string[];
  topK: number;
  variant: LensVariant;
  /** Prompt positions to read (default all); generated positions are always read. */
  positions?: number[];
  targets: TextTarget[];
  families: TokenFamily[];
  generate?: GenerateOptions;
  /** Streaming and cancelling (the web app); the result is the same with or without them. */
  live?: LiveOptions;
  /** A translator lens (LensOptions.translate), e.g. the linear shortcut of src/sweep/linear.ts. */
  translate?: (hook: string, resid: Float32Array) => Float32Array;
}

export interface LiveOptions {
  /** Prompt readouts in groups of this many rows (LensOptions.rowGroup). */
  rowGroup?: number;
  /**
   * A group of prompt readouts is done: indices into `readouts`, cells per row then position, the
   * output row, and (when the job has multi-token targets and their continuations fit
   * CHAIN_STREAM_BUDGET_BYTES) their whole-string probabilities: [target][position][row of the
   * group, then the output], the numbers the result's chainProbs will hold.
   */
  onRows?: (readoutIndices: number[], cells: LensCell[][], final: LensCell[], chain?: number[][][]) => void;
  /** A generated token was chosen (index into the context). */
  onToken?: (index: number, id: number) => void;
  /** The lens at a generated position is done: one cell per readout, and the output's. */
  onColumn?: (position: number, cells: LensCell[], final: LensCell) => void;
  /** Checked between lens chunks and generation steps; the job ends with an AbortError. */
  signal?: AbortSignal;
}

export interface LensJobResult {
  /** Prompt and generated ids. */
  ids: number[];
  promptLength: number;
  result: LensResult;
  /**
   * Per target, per read position: probability of the target's whole token sequence following
   * that position, by teacher forcing through the real model (equals the first token's final
   * probability for one-token targets).
   */
  sequenceProbs: number[][];
  /** Per target, the whole sequence's probability at every readout (chain product, teacher-forced). */
  chainProbs: ChainProbs;
  /** Why generation ended: a stop token, the --max-new-tokens budget, or the model's context length. */
  stopReason?: "stop-token" | "max-new-tokens" | "context-limit";
  timings: { lensMs: number; generateMs: number };
}

export async function executeLensJob(model: LoadedModel, job: LensJob, progress: Progress): Promise<LensJobResult> {
  const lens = new LogitLens(model);
  const tracked = job.targets.map((t) => t.ids[0]!);
  const families = job.families.map((f) => f.mask);
  const base = { topK: job.topK, variant: job.variant, readouts: job.readouts, tracked, families, translate: job.translate };

  const t0 = Date.now();
  const live = job.live ?? {};
  // Streaming: multi-token targets' chain products arrive with each group of rows (ChainStream),
  // when their continuation runs fit the budget; otherwise they are computed at the end.
  const promptPositions = job.positions ?? job.promptIds.map((_, i) => i);
  const streamChains =
    live.onRows !== undefined && job.targets.some((t) => t.ids.length > 1) && ChainStream.bytesFor(model, lens, job.targets, promptPositions.length, base) <= CHAIN_STREAM_BUDGET_BYTES;
  let chainStream: ChainStream | undefined;
  const streamedChains: number[][][][] = []; // per group: [target][position][row of the group, then the output]
  const groups: number[][] = [];
  const onRows = live.onRows && (async (rows: number[], cells: LensCell[][], final: LensCell[]) => {
    const chain = chainStream && (await chainStream.rows(rows, cells, final));
    if (chain) {
      streamedChains.push(chain);
      groups.push(rows);
    }
    live.onRows!(rows, cells, final, chain);
  });
  const onForward = streamChains ? async (cache: KvCache) => void (chainStream = await ChainStream.prepare(model, lens, cache, promptPositions, job.targets, base, live.signal)) : undefined;
  const first = await lens.apply(job.promptIds, { ...base, positions: job.positions, lastLogits: Boolean(job.generate), progress, rowGroup: live.rowGroup, onRows, onForward, signal: live.signal });
  const lensMs = Date.now() - t0;
  const ids = [...job.promptIds];
  const result: LensResult = { ...first, readouts: first.readouts.map((r) => ({ ...r, cells: [...r.cells] })), final: [...first.final], positions: [...first.positions] };
  let stopReason: LensJobResult["stopReason"];

  const t1 = Date.now();
  if (job.generate) {
    const g = job.generate;
    const sampler = new Sampler(g.sampling);
    let logits = first.lastLogits!;
    let cache: KvCache = first.cache;
    progress.start("generating", g.maxNewTokens);
    for (let n = 0; n < g.maxNewTokens; n++) {
      live.signal?.throwIfAborted();
      const next = sampler.next(logits);
      ids.push(next);
      live.onToken?.(ids.length - 1, next);
      progress.update(n + 1);
      if (g.stopIds.includes(next)) {
        stopReason = "stop-token";
        break;
      }
      if (n === g.maxNewTokens - 1) break;
      if (ids.length >= model.config.maxPositions) {
        // The context is full before the budget is spent: say so rather than "max-new-tokens".
        stopReason = "context-limit";
        break;
      }
      // The lens at the new token: what each layer predicts after it (the next generated token).
      const step = await lens.apply([next], { ...base, lastLogits: true, signal: live.signal }, cache);
      appendStep(result, step, ids.length - 1);
      live.onColumn?.(ids.length - 1, step.readouts.map((r) => r.cells[0]!), step.final[0]!);
      logits = step.lastLogits!;
      cache = step.cache;
    }
    stopReason ??= "max-new-tokens";
    progress.done(`${ids.length - job.promptIds.length} tokens`);
    result.cache = cache;
  }
  const generateMs = Date.now() - t1;

  const sequenceProbs = await teacherForcedProbabilities(model, ids, result, job.targets);
  const chainProbs = chainStream
    ? await assembleChains(model, lens, ids, result, job.targets, base, promptPositions.length, groups, streamedChains)
    : await chainProbabilities(model, lens, ids, result, job.targets, base);
  return { ids, promptLength: job.promptIds.length, result, sequenceProbs, chainProbs, stopReason, timings: { lensMs, generateMs } };
}

/** The streamed chain products of the prompt's positions, then those of generated positions (computed now). */
async function assembleChains(model: LoadedModel, lens: LogitLens, ids: number[], result: LensResult, targets: TextTarget[], base: { readouts: string[]; variant: LensVariant }, nPrompt: number, groups: number[][], streamed: number[][][][]): Promise<ChainProbs> {
  const R = result.readouts.length;
  const layers: number[][][] = targets.map(() => Array.from({ length: nPrompt }, () => new Array<number>(R)));
  const final: number[][] = targets.map(() => new Array<number>(nPrompt));
  groups.forEach((rows, g) => {
    targets.forEach((_, t) => {
      for (let i = 0; i < nPrompt; i++) {
        const v = streamed[g]![t]![i]!;
        rows.forEach((r, k) => (layers[t]![i]![r] = v[k]!));
        final[t]![i] = v[rows.length]!;
      }
    });
  });
  if (result.positions.length > nPrompt) {
    const generated: LensResult = { ...result, positions: result.positions.slice(nPrompt), readouts: result.readouts.map((r) => ({ ...r, cells: r.cells.slice(nPrompt) })), final: result.final.slice(nPrompt) };
    const more = await chainProbabilities(model, lens, ids, generated, targets, base);
    targets.forEach((_, t) => {
      layers[t]!.push(...more.layers[t]!);
      final[t]!.push(...more.final[t]!);
    });
  }
  return { layers, final };
}

function appendStep(result: LensResult, step: LensResult, position: number): void {
  result.positions.push(position);
  step.readouts.forEach((r, i) => result.readouts[i]!.cells.push(...r.cells));
  result.final.push(...step.final);
}

/**
 * P(target tokens | text up to and including position p) for every read position: the first
 * token's probability comes from the lens's final row; each further token needs the model run on
 * the target's earlier tokens after position p (KV cache cut back to p + 1 positions).
 */
async function teacherForcedProbabilities(model: LoadedModel, ids: number[], result: LensResult, targets: TextTarget[]): Promise<number[][]> {
  const V = model.config.vocabSize;
  const out: number[][] = targets.map(() => []);
  const needsForward = targets.some((t) => t.ids.length > 1);
  const forward = needsForward ? await model.forward([], "all") : undefined;
  // One full-context cache to cut from (the lens result's cache covers every position read).
  const fullCache = needsForward ? (await forward!.run(ids.slice(0, Math.max(...result.positions) + 1))).cache : undefined;
  for (let i = 0; i < result.positions.length; i++) {
    const p = result.positions[i]!;
    for (let t = 0; t < targets.length; t++) {
      const target = targets[t]!;
      let logp = result.final[i]!.trackedLogprobs[t]!;
      if (target.ids.length > 1) {
        const logits = (await forward!.run(target.ids.slice(0, -1), truncateCache(fullCache!, p + 1))).logits!;
        for (let j = 1; j < target.ids.length; j++) {
          const row = logits.subarray((j - 1) * V, j * V);
          logp += row[target.ids[j]!]! - logSumExp(row);
        }
      }
      out[t]!.push(Math.exp(logp));
    }
  }
  return out;
}

function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return max + Math.log(sum);
}

export type { LensCell };
