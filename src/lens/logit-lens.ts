/**
 * Runs the logit lens: one forward pass exposing the readout hook points, then the lens graph over
 * one tile of the vocabulary at a time for all the rows read (lens-graph.ts), merged in float64
 * (tile-merge.ts). The [readouts x positions x vocab] logits never exist all at once (for a 262k
 * vocabulary they would be gigabytes), and the unembedding stays in its stored form.
 */
import type ort from "onnxruntime-node";
import { blockHook } from "../architectures/forward.js";
import { unembeddingOf } from "../architectures/index.js";
import type { LoadedModel, KvCache } from "../engine/model.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { UserError } from "../errors.js";
import type { Progress } from "../progress.js";
import { buildLensTileGraph, buildTrackedLogitsGraph, type LensVariant } from "./lens-graph.js";
import { TileMerge, type MergedRow, type TileOutputs } from "./tile-merge.js";
import { checkActivationsFinite, checkLensOutputsFinite } from "./finite.js";

/**
 * Bytes the [rows x tile] buffers of one lens run may take (logits, their exp, tracking
 * comparisons). Small enough that a run's buffers stay in cache between the product and the
 * passes after it; measured, a 64-token lens: 128 -> 32 MiB made SmolLM2 (256 tokens) 2 %, Gemma 3
 * 5 % and the Llama-3-8B shape 2 % faster, 16 MiB no better.
 */
const CHUNK_BUDGET_BYTES = 32 * 1024 * 1024;
/** Bytes of a group's rows of residuals kept between tiles (beyond it they are copied per run). */
const RESID_KEPT_BYTES = 256 * 1024 * 1024;
/** Bytes of per-tile figures the merges of one span of positions keep (beyond it, spans). */
const MERGE_KEPT_BYTES = 128 * 1024 * 1024;
/** Bytes of one tile of the unembedding as fp32 (what the graph dequantizes it to). */
const TILE_WEIGHT_BYTES = 64 * 1024 * 1024;
/** Vocabulary columns per tile: wide enough for an efficient product, small enough to leave room for rows. */
const TILE_COLUMNS = 4096;

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
  /**
   * Vocabulary columns per tile of the lens graph (default 4096, fewer when a tile would pass
   * 64 MiB as fp32). Any width gives the same numbers up to fp32 rounding; tests use narrow tiles
   * to exercise the merge on small vocabularies.
   */
  tileColumns?: number;
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

  /**
   * Where the tiles of the unembedding come from:
   * - "copy": views of the model's small fp32 copy (LoadedModel.smallLensUnembedding);
   * - "file": a quantized or 16-bit matrix's rows, dequantized in JavaScript from the source file
   *   (WeightStore.rowsF32) into one buffer per pass, once per tile for every position chunk.
   *   Measured on an AVX-512 EPYC: about 1.7 ns per weight (Gemma 3's 262k x 640 in 0.29 s), where
   *   the same dequantization as onnxruntime ops inside the graph (Cast, broadcast Sub and Mul,
   *   byte shifts: one unfused pass each) took about 8 ns;
   * - "graph": cut from the stored arrays inside the graph (an fp32 matrix, or one whose rows a
   *   transform moves), dequantized there.
   */
  private tileSource(): "copy" | "file" | "graph" {
    if (this.model.smallLensUnembedding()) return "copy";
    return this.model.store.readsRows(unembeddingOf(this.model.config).matrix) ? "file" : "graph";
  }

  /** The tile graph (or, `tracked`, the tracked-logits graph), reading the unembedding as `tileSource` says. */
  private lensSession(variant: LensVariant, tracking: boolean, tracked = false): Promise<ort.InferenceSession> {
    const key = `${variant}/${tracking}/${tracked}`;
    let s = this.lensSessions.get(key);
    if (!s) {
      const cfg = this.model.config;
      const source = this.tileSource();
      const w = (gb: Parameters<LoadedModel["weightsFor"]>[0]) => (source === "copy" && tracked ? this.model.lensWeightsFor(gb) : this.model.weightsFor(gb));
      const g = tracked ? buildTrackedLogitsGraph(w, unembeddingOf(cfg), cfg.hidden, variant) : buildLensTileGraph(w, unembeddingOf(cfg), cfg.hidden, { variant, tracking, fedTile: source !== "graph" });
      s = createSession(g, this.model.store.dir, { disablePrepacking: true });
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
    const trackedSession = tracking ? await this.lensSession(variant, tracking, true) : undefined;
    const source = this.tileSource();
    const matrix = unembeddingOf(cfg).matrix;
    const H = cfg.hidden;
    const V = cfg.vocabSize;
    const hookRows = new Map(fwdHooks);
    if (options.translate) for (const hook of readouts) if (hook !== outputHook) hookRows.set(hook, options.translate(hook, fwdHooks.get(hook)!));
    // Groups of readouts, each read with the output row last (the reference for KL). Without
    // rowGroup: one group, all readouts.
    const size = options.rowGroup && options.rowGroup > 0 ? options.rowGroup : readouts.length;
    const groups: number[][] = [];
    for (let i = 0; i < readouts.length; i += size) groups.push(Array.from({ length: Math.min(size, readouts.length - i) }, (_, j) => i + j));
    if (groups.length === 0) groups.push([]);
    const readoutCells: LensCell[][] = readouts.map(() => []);
    let final: LensCell[] = [];
    // Per [row, column] cell: the logits and their softmax (fp32), and for rank counting the
    // [rows, tile, M] comparison (1 byte) and its int32 cast (4 bytes).
    const bytesPerCell = 8 + (tracking ? 5 * trackedFeed.length : 0);
    // The tiles depend on the model only, so that every row's sums are taken over the same
    // stretches of the vocabulary whatever else is read beside it (a streamed group of rows gives
    // the same numbers as the whole lens); positions are split to keep the buffers in budget.
    const tile = Math.min(V, options.tileColumns ?? TILE_COLUMNS, Math.max(1, Math.floor(TILE_WEIGHT_BYTES / (H * 4))));
    if (!Number.isInteger(tile) || tile < 1) throw new UserError(`tileColumns must be a positive integer (got ${options.tileColumns})`);
    const positionsPerRun = (R: number) => Math.max(1, Math.floor(CHUNK_BUDGET_BYTES / (R * tile * bytesPerCell)));
    // When a group's last readout already is the final residual (the default), it doubles as the reference.
    const rowsOf = (group: number[]) => {
      const hooks = group.map((i) => readouts[i]!);
      return hooks[hooks.length - 1] === outputHook ? hooks : [...hooks, outputHook];
    };
    const runs = groups.reduce((sum, group) => sum + Math.ceil(positions.length / positionsPerRun(rowsOf(group).length)) * Math.ceil(V / tile), 0);
    const showProgress = options.progress && runs > 1;
    if (showProgress) options.progress!.start(`lens over ${readouts.length} readouts x ${positions.length} positions`, runs);
    let done = 0;
    const k = BigInt64Array.from([BigInt(topK)]);
    // The tile's fp32 rows when they are fed: a view of the small copy, or a buffer the file's rows
    // are dequantized into (kept for the whole read, at most TILE_WEIGHT_BYTES).
    const copy = source === "copy" ? (this.model.lensUnembedding()!.data as Float32Array) : undefined;
    const tileBuffer = source === "file" ? new Float32Array(tile * H) : undefined;
    let rawBytes: Uint8Array | undefined;
    const tileWeight = (first: number, end: number): ort.Tensor | undefined => {
      if (copy) return new runtime.Tensor("float32", copy.subarray(first * H, end * H), [end - first, H]);
      if (!tileBuffer) return undefined;
      const rows = tileBuffer.subarray(0, (end - first) * H);
      rawBytes = this.model.store.rowsF32(matrix, first, end, rows, rawBytes);
      return new runtime.Tensor("float32", rows, [end - first, H]);
    };
    for (const group of groups) {
      options.signal?.throwIfAborted();
      const rows = rowsOf(group);
      const R = rows.length;
      const perRun = positionsPerRun(R);
      // Position chunks of the group. The loop runs tile by tile, and each tile over every chunk,
      // so a tile is made once per group however many chunks there are, while each run's
      // [rows x tile] buffers stay small (CHUNK_BUDGET_BYTES). A chunk's rows of residuals are
      // kept between tiles when the group's all fit in RESID_KEPT_BYTES; past that (a long prompt
      // on a big model) they are copied out of the hooks again for each run, which costs little
      // next to the run's product and does not hold a second copy of every hook.
      const keepResid = positions.length * R * H * 4 <= RESID_KEPT_BYTES;
      const residOf = (pos: number[]): ort.Tensor => {
        const resid = new Float32Array(pos.length * R * H);
        rows.forEach((hook, r) => {
          const src = hookRows.get(hook)!;
          pos.forEach((p, i) => resid.set(src.subarray(p * H, (p + 1) * H), (i * R + r) * H));
        });
        return new runtime.Tensor("float32", resid, [pos.length, R, H]);
      };
      // The merges keep every tile's per-row figures until the end (tile-merge.ts): about
      // topK x 12 bytes and a few sums per row and tile. A long prompt is read in spans of
      // positions whose figures stay within MERGE_KEPT_BYTES, each span making its tiles again.
      const tiles = Math.ceil(V / tile);
      const keptPerRow = tiles * (12 * topK + 16 + (tracking ? 12 * trackedFeed.length + 4 * Math.max(1, families.length) : 0));
      const span = Math.max(perRun, Math.floor(MERGE_KEPT_BYTES / (keptPerRow * R) / perRun) * perRun);
      const cellsByRow: LensCell[][] = rows.map(() => []);
      for (let spanStart = 0; spanStart < positions.length; spanStart += span) {
        const spanPositions = positions.slice(spanStart, spanStart + span);
        const chunks: { pos: number[]; resid?: ort.Tensor; trackedLogits?: Float32Array; merge: TileMerge }[] = [];
        for (let start = 0; start < spanPositions.length; start += perRun) {
          options.signal?.throwIfAborted();
          const pos = spanPositions.slice(start, start + perRun);
          const P = pos.length;
          const residTensor = residOf(pos);
          let trackedLogits: Float32Array | undefined;
          if (trackedSession) {
            const ids = new runtime.Tensor("int64", BigInt64Array.from(trackedFeed, (t) => BigInt(t)), [trackedFeed.length]);
            const fed = source === "copy" ? this.model.lensFeeds() : {};
            trackedLogits = (await runSession(trackedSession, { resid: residTensor, tracked_ids: ids, ...fed }, "lens graph (tracked tokens)"))["tracked_logits"]!.data as Float32Array;
          }
          const merge = new TileMerge(P, R, topK, tracking ? trackedFeed : [], trackedLogits, tracking ? Math.max(1, families.length) : 0);
          chunks.push({ pos, resid: keepResid ? residTensor : undefined, trackedLogits, merge });
        }
        for (let first = 0; first < V; first += tile) {
          options.signal?.throwIfAborted();
          const end = Math.min(V, first + tile);
          const kTile = Math.min(topK, end - first);
          const shared: Record<string, ort.Tensor> = {
            first: new runtime.Tensor("int64", BigInt64Array.from([BigInt(first)]), []),
            end: new runtime.Tensor("int64", BigInt64Array.from([BigInt(end)]), []),
            k: new runtime.Tensor("int64", kTile === topK ? k : BigInt64Array.from([BigInt(kTile)]), [1]),
          };
          const weight = tileWeight(first, end);
          if (weight) shared["tile_weight"] = weight;
          if (tracking) {
            shared["tracked_local"] = new runtime.Tensor("int64", BigInt64Array.from(trackedFeed, (t) => BigInt(Math.min(Math.max(t - first, 0), end - first - 1))), [trackedFeed.length]);
            const F = Math.max(1, families.length);
            const mask = new Float32Array(F * (end - first));
            for (let f = 0; f < F; f++) mask.set(familyFeed.subarray(f * V + first, f * V + end), f * (end - first));
            shared["family_mask"] = new runtime.Tensor("float32", mask, [F, end - first]);
          }
          for (const c of chunks) {
            options.signal?.throwIfAborted();
            const feeds: Record<string, ort.Tensor> = { ...shared, resid: c.resid ?? residOf(c.pos) };
            if (tracking) feeds["tracked_logits"] = new runtime.Tensor("float32", c.trackedLogits!, [c.pos.length, R, trackedFeed.length]);
            const out = await runSession(session, feeds, "lens graph");
            checkLensOutputsFinite({ "maximum logit": out["max"]?.data as Float32Array, "sum of probabilities": out["sum_exp"]?.data as Float32Array, "expected logit": out["own"]?.data as Float32Array }, rows, c.pos);
            c.merge.add(tileOutputs(out, first, end - first, kTile));
            done++;
            if (showProgress) options.progress!.update(done);
          }
        }
        for (const { pos, merge } of chunks) {
          const P = pos.length;
          const merged = merge.rows();
          checkLensOutputsFinite({ "log-sum-exp": Float64Array.from(merged, (m) => m.logsumexp), entropy: Float64Array.from(merged, (m) => m.entropy), "KL to the output": Float64Array.from(merged, (m) => m.klToFinal) }, rows, pos);
          for (let r = 0; r < R; r++) for (let p = 0; p < P; p++) cellsByRow[r]!.push(cellOf(merged[p * R + r]!, tracked.length, families.length));
        }
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

function tileOutputs(out: ort.InferenceSession.OnnxValueMapType, first: number, size: number, k: number): TileOutputs {
  return {
    first,
    size,
    k,
    topLogits: out["top_logits"]!.data as Float32Array,
    topIds: out["top_ids"]!.data as BigInt64Array,
    max: out["max"]!.data as Float32Array,
    sumExp: out["sum_exp"]!.data as Float32Array,
    own: out["own"]!.data as Float32Array,
    cross: out["cross"]!.data as Float32Array,
    higher: out["higher"]?.data as Int32Array | undefined,
    trackedHere: out["tracked_here"]?.data as Float32Array | undefined,
    familyExp: out["family_exp"]?.data as Float32Array | undefined,
  };
}

/** A merged row as a lens cell, without the padding ids and families the tracking graph needed. */
function cellOf(m: MergedRow, trackedKeep: number, familiesKeep: number): LensCell {
  const trackedLogits = m.trackedLogits.slice(0, trackedKeep);
  return {
    topIds: m.topIds,
    topLogits: m.topLogits,
    topLogprobs: m.topLogits.map((v) => v - m.logsumexp),
    entropy: Math.max(0, m.entropy),
    // KL is >= 0 mathematically; float rounding can give -1e-6 at the final layer itself.
    klToFinal: Math.max(0, m.klToFinal),
    trackedLogits,
    trackedLogprobs: trackedLogits.map((v) => v - m.logsumexp),
    trackedRanks: m.trackedRanks.slice(0, trackedKeep),
    familyProbs: m.familyProbs.slice(0, familiesKeep),
  };
}
