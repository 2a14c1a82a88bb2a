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
import { buildLensGraph, type LensVariant } from "./lens-graph.js";

/** Bytes one [readouts x positions x vocab] float buffer may take; the graph holds a few of them. */
const CHUNK_BUDGET_BYTES = 192 * 1024 * 1024;

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
  private lensSessions = new Map<LensVariant, Promise<ort.InferenceSession>>();

  constructor(readonly model: LoadedModel) {}

  private lensSession(variant: LensVariant): Promise<ort.InferenceSession> {
    let s = this.lensSessions.get(variant);
    if (!s) {
      const cfg = this.model.config;
      const g = buildLensGraph((gb) => this.model.weightsFor(gb), unembeddingOf(cfg), cfg.hidden, variant);
      s = createSession(g, this.model.store.dir);
      this.lensSessions.set(variant, s);
    }
    return s;
  }

  /** Runs the model on `ids` (after `cache`, if given) and reads the lens at every readout and position. */
  async run(ids: number[], options: LensOptions = {}, cache?: KvCache): Promise<LensResult> {
    const cfg = this.model.config;
    const variant = options.variant ?? "logit";
    const topK = Math.min(options.topK ?? 10, cfg.vocabSize);
    const finalHook = blockHook(cfg.nLayers - 1, "hook_resid_post");
    const readouts = options.readouts ?? Array.from({ length: cfg.nLayers }, (_, l) => blockHook(l, "hook_resid_post"));
    const hooks = [...new Set([...readouts, finalHook])];
    const positions = options.positions ?? ids.map((_, i) => i);
    for (const p of positions) {
      if (!Number.isInteger(p) || p < 0 || p >= ids.length) throw new UserError(`position ${p} is out of range (0..${ids.length - 1})`);
    }
    const tracked = options.tracked ?? [];
    for (const t of tracked) if (t < 0 || t >= cfg.vocabSize) throw new UserError(`tracked token id ${t} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
    const families = options.families ?? [];
    for (const f of families) if (f.length !== cfg.vocabSize) throw new Error("family mask length must equal the vocabulary size");
    // The graph wants at least one tracked id and one family row; pad with dummies and drop them.
    const trackedFeed = tracked.length ? tracked : [0];
    const familyFeed = new Float32Array(Math.max(1, families.length) * cfg.vocabSize);
    families.forEach((f, i) => familyFeed.set(f, i * cfg.vocabSize));

    const forward = await this.model.forward(hooks, options.lastLogits ? "last" : "none");
    const fwd = await forward.run(ids, cache);
    // Rows fed to the lens: the requested readouts, then the final layer (the KL reference) and,
    // for the model's own output, the final layer again through the real norm ("logit" variant).
    const rows = [...readouts, finalHook];
    const logitSession = await this.lensSession("logit");
    const session = variant === "logit" ? logitSession : await this.lensSession(variant);

    const H = cfg.hidden;
    const R = rows.length;
    // Rank counting materialises [R, P, V, M] (1 + 4 bytes per element): budget for it too.
    // The float64 sum in the log-sum-exp needs 8 bytes per element too.
    const bytesPerPosition = R * cfg.vocabSize * (6 + 5 * trackedFeed.length);
    const chunk = Math.max(1, Math.floor(CHUNK_BUDGET_BYTES / bytesPerPosition));
    const cellsByRow: LensCell[][] = rows.map(() => []);
    const finalCells: LensCell[] = [];
    for (let start = 0; start < positions.length; start += chunk) {
      const pos = positions.slice(start, start + chunk);
      const P = pos.length;
      const resid = new Float32Array(R * P * H);
      rows.forEach((hook, r) => {
        const src = fwd.hooks.get(hook)!;
        pos.forEach((p, i) => resid.set(src.subarray(p * H, (p + 1) * H), (r * P + i) * H));
      });
      const feeds = {
        resid: new runtime.Tensor("float32", resid, [R, P, H]),
        k: new runtime.Tensor("int64", BigInt64Array.from([BigInt(topK)]), [1]),
        tracked_ids: new runtime.Tensor("int64", BigInt64Array.from(trackedFeed, (t) => BigInt(t)), [trackedFeed.length]),
        family_mask: new runtime.Tensor("float32", familyFeed, [Math.max(1, families.length), cfg.vocabSize]),
      };
      const out = await runSession(session, feeds, "lens graph");
      const cells = decodeCells(out, R, P, topK, trackedFeed.length, tracked.length, Math.max(1, families.length), families.length);
      cells.forEach((rowCells, r) => cellsByRow[r]!.push(...rowCells));
      if (variant === "logit") {
        finalCells.push(...cells[R - 1]!);
      } else {
        // The model's own output always goes through its final norm: run just that row.
        const finalResid = resid.subarray((R - 1) * P * H);
        const outFinal = await runSession(logitSession, { ...feeds, resid: new runtime.Tensor("float32", finalResid.slice(), [1, P, H]) }, "lens graph");
        finalCells.push(...decodeCells(outFinal, 1, P, topK, trackedFeed.length, tracked.length, Math.max(1, families.length), families.length)[0]!);
      }
    }
    return {
      variant,
      positions,
      readouts: readouts.map((hook, r) => ({ hook, layer: layerOf(hook), cells: cellsByRow[r]! })),
      final: finalCells,
      cache: fwd.cache,
      lastLogits: fwd.logits,
    };
  }
}

/** Unpacks the lens outputs; `m`/`f` are the padded tracked/family counts, `mKeep`/`fKeep` the real ones. */
function decodeCells(out: ort.InferenceSession.OnnxValueMapType, R: number, P: number, k: number, m: number, mKeep: number, f: number, fKeep: number): LensCell[][] {
  const topLogits = out["top_logits"]!.data as Float32Array;
  const topIds = out["top_ids"]!.data as BigInt64Array;
  const lse = out["logsumexp"]!.data as Float32Array;
  const entropy = out["entropy"]!.data as Float32Array;
  const kl = out["kl_to_final"]!.data as Float32Array;
  const trackedLogits = out["tracked_logits"]!.data as Float32Array;
  const trackedRank = out["tracked_rank"]!.data as Int32Array;
  const familyProb = out["family_prob"]!.data as Float32Array;
  const rows: LensCell[][] = [];
  for (let r = 0; r < R; r++) {
    const cells: LensCell[] = [];
    for (let p = 0; p < P; p++) {
      const c = r * P + p;
      const logits = Array.from(topLogits.subarray(c * k, (c + 1) * k));
      const tl = Array.from(trackedLogits.subarray(c * m, c * m + mKeep));
      cells.push({
        topIds: Array.from(topIds.subarray(c * k, (c + 1) * k), Number),
        topLogits: logits,
        topLogprobs: logits.map((v) => v - lse[c]!),
        entropy: entropy[c]!,
        // KL is >= 0 mathematically; float rounding can give -1e-7 at the final layer itself.
        klToFinal: Math.max(0, kl[c]!),
        trackedLogits: tl,
        trackedLogprobs: tl.map((v) => v - lse[c]!),
        trackedRanks: Array.from(trackedRank.subarray(c * m, c * m + mKeep)),
        familyProbs: Array.from(familyProb.subarray(c * f, c * f + fKeep)),
      });
    }
    rows.push(cells);
  }
  return rows;
}
