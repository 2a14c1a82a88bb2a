/**
 * A forward pass with hook points, run as one or more pieces of consecutive layers (see
 * layer-blocks.ts), with the KV cache carried between calls and optional activation patches.
 */
import type ort from "onnxruntime-node";
import type { LogitsOutput } from "../architectures/forward.js";
import { runSession, ort as runtime } from "../graph/session.js";
import { UserError } from "../errors.js";
import type { LoadedModel } from "./model.js";
import { LayerBlocks, layerRange, type Piece } from "./layer-blocks.js";
import { causalMask, rotaryTables } from "./positions.js";

/** Per-layer key/value cache, [nKv, past, headDim] each. */
export interface KvCache {
  length: number;
  keys: ort.Tensor[];
  values: ort.Tensor[];
}

export interface ForwardResult {
  hooks: Map<string, Float32Array>;
  logits?: Float32Array;
  cache: KvCache;
}

/** The cache cut back to its first `length` positions (for teacher forcing from an earlier point). */
export function truncateCache(cache: KvCache, length: number): KvCache {
  if (length > cache.length) throw new Error(`cannot truncate a cache of ${cache.length} to ${length}`);
  const cut = (t: ort.Tensor): ort.Tensor => {
    const [heads, past, d] = t.dims as [number, number, number];
    const src = t.data as Float32Array;
    const out = new Float32Array(heads * length * d);
    for (let h = 0; h < heads; h++) out.set(src.subarray(h * past * d, h * past * d + length * d), h * length * d);
    return new runtime.Tensor("float32", out, [heads, length, d]);
  };
  return { length, keys: cache.keys.map(cut), values: cache.values.map(cut) };
}

export interface ResidualPatch {
  layer: number;
  position: number;
  vector: Float32Array;
}

export class ForwardSession {
  constructor(
    readonly model: LoadedModel,
    private readonly pieces: Piece[],
    readonly hooks: string[],
    readonly logits: LogitsOutput,
  ) {
    this.streamed = pieces.reduce((sum, p) => sum + LayerBlocks.cost(p), 0) > model.blocks.budget;
  }

  /** Whether the pieces do not all fit the memory budget at once (the model streams from disk). */
  private readonly streamed: boolean;

  /** How many blocks of layers the pass runs as (1 when the model fits its memory budget). */
  get pieceCount(): number {
    return this.pieces.length;
  }

  /** The graph inputs shared by every piece: ids, positions, rotary tables, masks, the KV cache. */
  private feedsFor(ids: number[], cache?: KvCache): Record<string, ort.Tensor> {
    const cfg = this.model.config;
    const past = cache?.length ?? 0;
    const T = ids.length;
    if (T === 0) throw new UserError("nothing to run: the token sequence is empty");
    if (past + T > cfg.maxPositions) {
      throw new UserError(`sequence of ${past + T} tokens is longer than the model's context (${cfg.maxPositions})`);
    }
    const feeds: Record<string, ort.Tensor> = {};
    feeds["input_ids"] = new runtime.Tensor("int64", BigInt64Array.from(ids, (i) => BigInt(i)), [T]);
    feeds["position_ids"] = new runtime.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(past + i)), [T]);
    const d = cfg.headDim;
    const global = rotaryTables(this.model.invFreqGlobal, past, T);
    const local = rotaryTables(this.model.invFreqLocal, past, T);
    feeds["rope_cos"] = new runtime.Tensor("float32", global.cos, [T, d]);
    feeds["rope_sin"] = new runtime.Tensor("float32", global.sin, [T, d]);
    feeds["rope_cos_local"] = new runtime.Tensor("float32", local.cos, [T, d]);
    feeds["rope_sin_local"] = new runtime.Tensor("float32", local.sin, [T, d]);
    feeds["mask_full"] = new runtime.Tensor("float32", causalMask(past, T), [T, past + T]);
    feeds["mask_sliding"] = new runtime.Tensor("float32", causalMask(past, T, cfg.slidingWindow), [T, past + T]);
    for (let l = 0; l < cfg.nLayers; l++) {
      feeds[`past_key.${l}`] = cache?.keys[l] ?? new runtime.Tensor("float32", new Float32Array(0), [cfg.nKvHeads, 0, d]);
      feeds[`past_value.${l}`] = cache?.values[l] ?? new runtime.Tensor("float32", new Float32Array(0), [cfg.nKvHeads, 0, d]);
    }
    return feeds;
  }

  /** Runs `pieces` in order, the first from `resid` when it starts at a cut, applying `patches` at their layers. */
  private async runPieces(pieces: Piece[], feeds: Record<string, ort.Tensor>, start: ort.Tensor | undefined, patches: ResidualPatch[], T: number): Promise<Record<string, ort.Tensor>> {
    const cfg = this.model.config;
    for (const p of patches) {
      if (!this.pieces.some((piece) => piece.first === p.layer)) throw new UserError(`cannot patch layer ${p.layer}: the forward session was not cut there (cutsAt)`);
      if (!(p.position >= 0 && p.position < T) || p.vector.length !== cfg.hidden) throw new UserError(`patch at layer ${p.layer}: position ${p.position} or vector length ${p.vector.length} does not fit ${T} tokens x ${cfg.hidden}`);
    }
    const out: Record<string, ort.Tensor> = {};
    let resid = start;
    for (const piece of pieces) {
      const mine = patches.filter((p) => p.layer === piece.first);
      if (mine.length) {
        const data = Float32Array.from(resid!.data as Float32Array);
        for (const p of mine) data.set(p.vector, p.position * cfg.hidden);
        resid = new runtime.Tensor("float32", data, [T, cfg.hidden]);
      }
      // Pieces cut only for patching are not a streamed model: nothing to announce.
      const label = this.streamed ? layerRange(piece, cfg.nLayers) : undefined;
      const session = await this.model.blocks.open(piece, label);
      const pieceFeeds: Record<string, ort.Tensor> = {};
      // (16-bit weights are graph inputs with a default that is never fed: graph/builder.ts halfWeight)
      for (const name of session.inputNames) if (name === piece.cutInput || feeds[name]) pieceFeeds[name] = name === piece.cutInput ? resid! : feeds[name]!;
      const result = await runSession(session, pieceFeeds, this.pieces.length > 1 ? `forward graph (${layerRange(piece, cfg.nLayers)})` : "forward graph");
      Object.assign(out, result);
      resid = result["resid_out"];
      this.model.blocks.release(piece);
    }
    return out;
  }

  /**
   * Runs `ids` (after the cached context, if any) from the residual entering `layer` (a cut of
   * this session), given as [T, hidden], through the pieces after it: only their hooks and the
   * logits come back. A patching sweep computes the residual once and runs the rest of the model
   * per patch, instead of running the layers before the patch again each time; with the cache of
   * the positions before the patch, it runs only the positions the patch can change.
   */
  async runFrom(ids: number[], layer: number, resid: Float32Array, patches: ResidualPatch[] = [], cache?: KvCache): Promise<{ hooks: Map<string, Float32Array>; logits?: Float32Array }> {
    const cfg = this.model.config;
    const at = this.pieces.findIndex((p) => p.first === layer);
    if (at < 0) throw new UserError(`cannot run from layer ${layer}: the forward session was not cut there (cutsAt)`);
    if (resid.length !== ids.length * cfg.hidden) throw new UserError(`the residual has ${resid.length} values, not ${ids.length} tokens x ${cfg.hidden}`);
    const start = new runtime.Tensor("float32", resid, [ids.length, cfg.hidden]);
    const out = await this.runPieces(this.pieces.slice(at), this.feedsFor(ids, cache), start, patches, ids.length);
    const hooks = new Map<string, Float32Array>();
    for (const h of this.hooks) if (out[h]) hooks.set(h, out[h]!.data as Float32Array);
    return { hooks, logits: this.logits !== "none" ? (out["logits"]!.data as Float32Array) : undefined };
  }

  /** Closes the onnxruntime sessions this pass opened (they reopen on the next run). */
  async close(): Promise<void> {
    for (const piece of this.pieces) await this.model.blocks.close(piece);
  }

  /**
   * Runs `ids` after the cached context (if any). Hooks are [T, hidden] per name. `patches`
   * replace the residual entering layer `layer` (nLayers: the final residual) at `position` (index
   * among these new tokens) with `vector`: activation patching. Each patched layer must be one of
   * the session's `cutsAt`.
   */
  async run(ids: number[], cache?: KvCache, patches: ResidualPatch[] = []): Promise<ForwardResult> {
    const cfg = this.model.config;
    const past = cache?.length ?? 0;
    const T = ids.length;
    const out = await this.runPieces(this.pieces, this.feedsFor(ids, cache), undefined, patches, T);
    const hooks = new Map<string, Float32Array>();
    for (const h of this.hooks) hooks.set(h, out[h]!.data as Float32Array);
    const keys: ort.Tensor[] = [];
    const values: ort.Tensor[] = [];
    for (let l = 0; l < cfg.nLayers; l++) {
      keys.push(out[`present_key.${l}`]!);
      values.push(out[`present_value.${l}`]!);
    }
    return { hooks, logits: this.logits !== "none" ? (out["logits"]!.data as Float32Array) : undefined, cache: { length: past + T, keys, values } };
  }
}

