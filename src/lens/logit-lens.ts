/**
 * Runs the logit lens: one forward pass exposing the readout hook points, then the lens graph over
 * chunks of positions (the [readouts x positions x vocab] logits never exist all at once: for a
 * 262k vocabulary they would be gigabytes).
 */
import type ort from "onnxruntime-node";
import { blockHook } from "../architectures/forward.js";
import { unembeddingOf } from "../architectures/index.js";
import type { LoadedModel, KvCache } from "../engine/model.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { UserError } from "../errors.js";
import type { Progress } from "../progress.js";
import { buildLensGraph, type LensVariant } from "./lens-graph.js";
import { checkActivationsFinite, checkLensOutputsFinite } from "./finite.js";

/** Bytes one [readouts x positions x vocab] float buffer may take; the graph holds a few of them. */
const CHUNK_BUDGET_BYTES = 128 * 1024 * 1024;

export interface LensOptions {
  topK?: number;
  variant?: LensVariant;
  /** Hook points to read, in order; default every layer's hook_resid_post. */
  readouts?: string[];
  /** Token ids whose logit (and probability) is reported in every cell. */
  tracked?: number[];
  /** Token families: per family a 0/1 mask over the vocabulary; each cell reports the summed probability. */
  families?: Float32Array[];
  /** Positions (indices into the new tokens) to read; default all. */
  positions?: number[];
  /** Also return the model's full logits at the last new position (for sampling the next token). */
  lastLogits?: boolean;
  /** Reports positions done when the lens takes more than one chunk (long prompts, big vocabularies). */
  progress?: Progress;
  /**
   * Streaming (the web app): read the readouts in groups of this many rows, each group with the
   * output row beside it (the KL reference), and hand each group to `onRows` as soon as it is done.
   * Every cell is computed exactly as without groups.
   */
  rowGroup?: number;
  /** Called per group: indices into `readouts`, their cells (row, then position), and the output row; awaited. */
  onRows?: (readoutIndices: number[], cells: LensCell[][], final: LensCell[]) => void | Promise<void>;
  /** Called once the forward pass is done, before the lens is read, with its cache (awaited). */
  onForward?: (cache: KvCache) => void | Promise<void>;
  /** Stops between chunks with an AbortError. */
  signal?: AbortSignal;
  /**
   * Maps a readout's residual ([T, hidden]) before the lens reads it: a translator lens such as
   * the linear shortcut (src/sweep/linear.ts). The output row (the KL reference) is never mapped.
   */
  translate?: (hook: string, resid: Float32Array) => Float32Array;
}

export interface LensCell {
  topIds: number[];
  topLogits: number[];
  /** log-probabilities of the top tokens (logit - logsumexp). */
  topLogprobs: number[];
  entropy: number;
  klToFinal: number;
  trackedLogprobs: number[];
  trackedLogits: number[];
  /** 0 = top-1. */
  trackedRanks: number[];
  familyProbs: number[];
}

export interface LensReadout {
  hook: string;
  /** Block index for block hooks; -1 for hook_embed. */
  layer: number;
  cells: LensCell[]; // one per position read
}

export interface LensResult {
  variant: LensVariant;
  positions: number[];
  readouts: LensReadout[];
  /** The model's own next-token distribution at each position (the final layer through the real head). */
  final: LensCell[];
  /** Cache after the forward pass, for generation. */
  cache: KvCache;
  /** The model's logits at the last new position, when asked for. */
  lastLogits?: Float32Array;
}

function layerOf(hook: string): number {
  const m = /^blocks\.(\d+)\./.exec(hook);
  return m ? Number(m[1]) : -1;
}

export class LogitLens {
  private lensSessions = new Map<string, Promise<ort.InferenceSession>>();

  constructor(readonly model: LoadedModel) {}

  private lensSession(variant: LensVariant, tracking: boolean): Promise<ort.InferenceSession> {
    const key = `${variant}/${tracking}`;
    let s = this.lensSessions.get(key);
    if (!s) {
      const cfg = this.model.config;
      // The unembedding as the model says the lens should read it (LoadedModel.lensUnembedding).
      const g = buildLensGraph((gb) => this.model.lensWeightsFor(gb), unembeddingOf(cfg), cfg.hidden, cfg.vocabSize, { variant, tracking });
      s = createSession(g, this.model.store.dir, this.model.lensTuning());
      this.lensSessions.set(key, s);
    }
    return s;
  }

  /** Applies the lens: runs the model on `ids` (after `cache`, if given) and reads the lens at every readout and position. */
  async apply(ids: number[], options: LensOptions = {}, cache?: KvCache): Promise<LensResult> {
    const cfg = this.model.config;
    // The last row of every position is the model's own output, the reference for KL: the final
    // residual through the lens's norm (logit lens), or the already-normed final residual through
    // the bare unembedding (raw variant). Either way it is exactly the model's logits.
    const { hooks } = this.hooksFor(options);
    for (const p of options.positions ?? []) {
      if (!Number.isInteger(p) || p < 0 || p >= ids.length) throw new UserError(`position ${p} is out of range (0..${ids.length - 1})`);
    }
    for (const t of options.tracked ?? []) if (t < 0 || t >= cfg.vocabSize) throw new UserError(`tracked token id ${t} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
    for (const f of options.families ?? []) if (f.length !== cfg.vocabSize) throw new Error("family mask length must equal the vocabulary size");

    const forward = await this.model.forward(hooks, options.lastLogits ? "last" : "none");
    const fwd = await forward.run(ids, cache);
    await checkActivationsFinite(this.model, fwd.hooks, ids, cache); // NaN/Inf are an error, never a result
    await options.onForward?.(fwd.cache);
    const read = await this.read(fwd.hooks, options);
    return { ...read, cache: fwd.cache, lastLogits: fwd.logits };
  }

  /** The hooks a lens reading of `options` needs from the forward pass: the readouts, then the output's. */
  hooksFor(options: Pick<LensOptions, "readouts" | "variant"> = {}): { readouts: string[]; outputHook: string; hooks: string[] } {
    const cfg = this.model.config;
    const readouts = options.readouts ?? Array.from({ length: cfg.nLayers }, (_, l) => blockHook(l, "hook_resid_post"));
    const outputHook = (options.variant ?? "logit") === "logit" ? blockHook(cfg.nLayers - 1, "hook_resid_post") : "ln_final.hook_normalized";
    return { readouts, outputHook, hooks: [...new Set([...readouts, outputHook])] };
  }

  /**
   * Reads the lens from residuals a forward pass exposed (`hooksFor(options).hooks`, each [T, hidden]):
   * what `apply` does after its forward pass. The chain probabilities (chain.ts) read the
   * continuation runs they keep this way, a group of rows at a time.
   */
  async read(fwdHooks: Map<string, Float32Array>, options: LensOptions = {}): Promise<Omit<LensResult, "cache" | "lastLogits">> {
    const cfg = this.model.config;
    const variant = options.variant ?? "logit";
    const topK = Math.min(options.topK ?? 10, cfg.vocabSize);
    const { readouts, outputHook } = this.hooksFor(options);
    const T = fwdHooks.get(outputHook)!.length / cfg.hidden;
    const positions = options.positions ?? Array.from({ length: T }, (_, i) => i);
    const tracked = options.tracked ?? [];
    const families = options.families ?? [];
    const tracking = tracked.length > 0 || families.length > 0;
    // The tracking graph wants at least one id and one family row: pad with dummies, drop them after.
    const trackedFeed = tracked.length ? tracked : [0];
    const familyFeed = new Float32Array(Math.max(1, families.length) * cfg.vocabSize);
    families.forEach((f, i) => familyFeed.set(f, i * cfg.vocabSize));
    const session = await this.lensSession(variant, tracking);
    const H = cfg.hidden;
    const residOf = new Map(fwdHooks);
    if (options.translate) for (const hook of readouts) if (hook !== outputHook) residOf.set(hook, options.translate(hook, fwdHooks.get(hook)!));
    // Groups of readouts, each read with the output row last (the reference for KL). Without
    // rowGroup: one group, all readouts.
    const size = options.rowGroup && options.rowGroup > 0 ? options.rowGroup : readouts.length;
    const groups: number[][] = [];
    for (let i = 0; i < readouts.length; i += size) groups.push(Array.from({ length: Math.min(size, readouts.length - i) }, (_, j) => i + j));
    if (groups.length === 0) groups.push([]);
    const readoutCells: LensCell[][] = readouts.map(() => []);
    let final: LensCell[] = [];
    const fullChunk = Math.floor(CHUNK_BUDGET_BYTES / ((readouts.length + 1) * cfg.vocabSize * (8 + (tracking ? 5 * trackedFeed.length : 0))));
    const showProgress = options.progress && (groups.length > 1 || positions.length > Math.max(1, fullChunk));
    if (showProgress) options.progress!.start(`lens over ${readouts.length} readouts x ${positions.length} positions`, groups.length * positions.length);
    let done = 0;
    for (const group of groups) {
      options.signal?.throwIfAborted();
      const groupHooks = group.map((i) => readouts[i]!);
      // When the last readout already is the final residual (the default), it doubles as the reference.
      const rows = groupHooks[groupHooks.length - 1] === outputHook ? groupHooks : [...groupHooks, outputHook];
      const R = rows.length;
      // Budget per position: the logits and probabilities ([R, V] floats each), and for rank counting
      // the [R, V, M] comparison (1 byte) and its int32 cast (4 bytes).
      const bytesPerPosition = R * cfg.vocabSize * (8 + (tracking ? 5 * trackedFeed.length : 0));
      const chunk = Math.max(1, Math.floor(CHUNK_BUDGET_BYTES / bytesPerPosition));
      const cellsByRow: LensCell[][] = rows.map(() => []);
      for (let start = 0; start < positions.length; start += chunk) {
        options.signal?.throwIfAborted();
        const pos = positions.slice(start, start + chunk);
        const P = pos.length;
        const resid = new Float32Array(P * R * H);
        rows.forEach((hook, r) => {
          const src = residOf.get(hook)!;
          pos.forEach((p, i) => resid.set(src.subarray(p * H, (p + 1) * H), (i * R + r) * H));
        });
        const feeds: Record<string, ort.Tensor> = {
          resid: new runtime.Tensor("float32", resid, [P, R, H]),
          k: new runtime.Tensor("int64", BigInt64Array.from([BigInt(topK)]), [1]),
        };
        Object.assign(feeds, this.model.lensFeeds());
        if (tracking) {
          feeds["tracked_ids"] = new runtime.Tensor("int64", BigInt64Array.from(trackedFeed, (t) => BigInt(t)), [trackedFeed.length]);
          feeds["family_mask"] = new runtime.Tensor("float32", familyFeed, [Math.max(1, families.length), cfg.vocabSize]);
        }
        const out = await runSession(session, feeds, "lens graph");
        checkLensOutputsFinite({ "log-sum-exp": out["logsumexp"]?.data as Float32Array, "top logit": out["top_logits"]?.data as Float32Array, entropy: out["entropy"]?.data as Float32Array, "KL to the output": out["kl_to_final"]?.data as Float32Array }, rows, pos);
        const cells = decodeCells(out, R, P, topK, { m: trackedFeed.length, mKeep: tracked.length, f: Math.max(1, families.length), fKeep: families.length });
        cells.forEach((rowCells, r) => cellsByRow[r]!.push(...rowCells));
        done += P;
        if (showProgress) options.progress!.update(done);
      }
      group.forEach((i, r) => (readoutCells[i] = cellsByRow[r]!));
      if (final.length === 0) final = cellsByRow[R - 1]!;
      await options.onRows?.(group, group.map((i) => readoutCells[i]!), final);
    }
    if (showProgress) options.progress!.done();
    return {
      variant,
      positions,
      readouts: readouts.map((hook, r) => ({ hook, layer: layerOf(hook), cells: readoutCells[r]! })),
      final,
    };
  }
}

interface TrackingCounts {
  /** Padded and real number of tracked ids, and of families. */
  m: number;
  mKeep: number;
  f: number;
  fKeep: number;
}

/** Unpacks the lens outputs ([P, R, ...] in the graph) into cells by row (readout), then position. */
function decodeCells(out: ort.InferenceSession.OnnxValueMapType, R: number, P: number, k: number, t: TrackingCounts): LensCell[][] {
  const topLogits = out["top_logits"]!.data as Float32Array;
  const topIds = out["top_ids"]!.data as BigInt64Array;
  const lse = out["logsumexp"]!.data as Float32Array;
  const entropy = out["entropy"]!.data as Float32Array;
  const kl = out["kl_to_final"]!.data as Float32Array;
  const trackedLogits = out["tracked_logits"]?.data as Float32Array | undefined;
  const trackedRank = out["tracked_rank"]?.data as Int32Array | undefined;
  const familyProb = out["family_prob"]?.data as Float32Array | undefined;
  const rows: LensCell[][] = [];
  for (let r = 0; r < R; r++) {
    const cells: LensCell[] = [];
    for (let p = 0; p < P; p++) {
      const c = p * R + r;
      const logits = Array.from(topLogits.subarray(c * k, (c + 1) * k));
      const tl = trackedLogits ? Array.from(trackedLogits.subarray(c * t.m, c * t.m + t.mKeep)) : [];
      cells.push({
        topIds: Array.from(topIds.subarray(c * k, (c + 1) * k), Number),
        topLogits: logits,
        topLogprobs: logits.map((v) => v - lse[c]!),
        entropy: Math.max(0, entropy[c]!),
        // KL is >= 0 mathematically; float rounding can give -1e-6 at the final layer itself.
        klToFinal: Math.max(0, kl[c]!),
        trackedLogits: tl,
        trackedLogprobs: tl.map((v) => v - lse[c]!),
        trackedRanks: trackedRank ? Array.from(trackedRank.subarray(c * t.m, c * t.m + t.mKeep)) : [],
        familyProbs: familyProb ? Array.from(familyProb.subarray(c * t.f, c * t.f + t.fKeep)) : [],
      });
    }
    rows.push(cells);
  }
  return rows;
}
