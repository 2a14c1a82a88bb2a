/**
 * A multi-token target's probability at every layer (issue 10, item 1): the chain product
 *
 *   P_layer(t1..tn | context up to p) = prod_j P_layer(t_j | context up to p, t1..t_{j-1})
 *
 * where every factor is the lens reading of that layer, teacher-forced: the model is run on the
 * target's own earlier tokens after position p (KV cache cut back to p + 1 positions) and the lens
 * is read at those new positions. At the model's output row the product is the model's own
 * sequence probability (the same quantity `sequence_probs` computes from the plain logits; the test
 * checks the two against each other and against a full forward pass).
 */
import { truncateCache, type KvCache, type LoadedModel } from "../engine/model.js";
import type { LensCell, LogitLens, LensOptions, LensResult } from "./logit-lens.js";
import type { TextTarget } from "./targets.js";

/** Per target, per read position: one chain probability per readout row, then the output's. */
export interface ChainProbs {
  /** [target][position index][readout] */
  layers: number[][][];
  /** [target][position index]: the model's own output row. */
  final: number[][];
}

/**
 * `result` must come from `lens.apply` with `tracked` = each target's first token, in target order.
 * `options` are the lens options of that run (readouts and variant are reused).
 */
export async function chainProbabilities(
  model: LoadedModel,
  lens: LogitLens,
  ids: number[],
  result: LensResult,
  targets: TextTarget[],
  options: Pick<LensOptions, "readouts" | "variant">,
): Promise<ChainProbs> {
  const R = result.readouts.length;
  const layers: number[][][] = targets.map(() => []);
  const final: number[][] = targets.map(() => []);
  let fullCache: KvCache | undefined;
  const cacheUpTo = async (length: number): Promise<KvCache> => {
    if (result.cache.length >= length) return result.cache;
    // Generation leaves the last token unrun; one pass over the whole context gives a cache to cut.
    fullCache ??= (await (await model.forward([], "none")).run(ids.slice(0, Math.max(...result.positions) + 1))).cache;
    return fullCache;
  };
  for (let t = 0; t < targets.length; t++) {
    const target = targets[t]!;
    for (let i = 0; i < result.positions.length; i++) {
      const p = result.positions[i]!;
      const logp = result.readouts.map((r) => r.cells[i]!.trackedLogprobs[t]!);
      let logpFinal = result.final[i]!.trackedLogprobs[t]!;
      if (target.ids.length > 1) {
        const rest = target.ids.slice(1);
        const cache = truncateCache(await cacheUpTo(p + 1), p + 1);
        // topK 1: only the tracked ids matter here; tracked[j] is the token forced after new position j.
        const run = await lens.apply(target.ids.slice(0, -1), { readouts: options.readouts, variant: options.variant, topK: 1, tracked: rest }, cache);
        for (let j = 0; j < rest.length; j++) {
          for (let r = 0; r < R; r++) logp[r]! += run.readouts[r]!.cells[j]!.trackedLogprobs[j]!;
          logpFinal += run.final[j]!.trackedLogprobs[j]!;
        }
      }
      layers[t]!.push(logp.map(Math.exp));
      final[t]!.push(Math.exp(logpFinal));
    }
  }
  return { layers, final };
}

/** Most bytes of continuation residuals a ChainStream keeps (beyond it, chains come at the end). */
export const CHAIN_STREAM_BUDGET_BYTES = 256 * 1024 * 1024;

/**
 * The same chain products, a group of readout rows at a time, so that a streaming client (the
 * explorer) gets each row's whole-string probabilities with the row. The continuation runs (the
 * model on each multi-token target's earlier tokens after every read position) are done once,
 * right after the prompt's forward pass, and their residuals kept, all positions of a target side
 * by side; each group of rows then reads the lens over them in one pass per target. Every cell is
 * computed as `chainProbabilities` computes it (the same forward passes; the lens graph reads each
 * position on its own, whatever else is in the batch), so the streamed values are the report's.
 */
export class ChainStream {
  private constructor(
    private readonly lens: LogitLens,
    private readonly targets: TextTarget[],
    private readonly options: Pick<LensOptions, "readouts" | "variant">,
    /** Per target: every hook's continuation residuals, position after position ([P * (n - 1), hidden]); undefined for one-token targets. */
    private readonly runs: (Map<string, Float32Array> | undefined)[],
  ) {}

  /** Bytes the continuation residuals of these targets and positions would take. */
  static bytesFor(model: LoadedModel, lens: LogitLens, targets: TextTarget[], positions: number, options: Pick<LensOptions, "readouts" | "variant">): number {
    const tokens = targets.reduce((n, t) => n + t.ids.length - 1, 0);
    return tokens * positions * lens.hooksFor(options).hooks.length * model.config.hidden * 4;
  }

  /** Runs the continuations after `cache` (the prompt's, covering every read position). */
  static async prepare(model: LoadedModel, lens: LogitLens, cache: KvCache, positions: number[], targets: TextTarget[], options: Pick<LensOptions, "readouts" | "variant">, signal?: AbortSignal): Promise<ChainStream> {
    const hooks = lens.hooksFor(options).hooks;
    const forward = await model.forward(hooks, "none");
    const H = model.config.hidden;
    const runs: (Map<string, Float32Array> | undefined)[] = [];
    for (const target of targets) {
      const n = target.ids.length - 1;
      if (n === 0) {
        runs.push(undefined);
        continue;
      }
      const joined = new Map(hooks.map((hook) => [hook, new Float32Array(positions.length * n * H)]));
      for (let i = 0; i < positions.length; i++) {
        signal?.throwIfAborted();
        const run = await forward.run(target.ids.slice(0, -1), truncateCache(cache, positions[i]! + 1));
        for (const hook of hooks) joined.get(hook)!.set(run.hooks.get(hook)!, i * n * H);
      }
      runs.push(joined);
    }
    return new ChainStream(lens, targets, options, runs);
  }

  /**
   * Chain probabilities of the readouts `readoutIndices` (cells: their lens cells, row then
   * position, tracking each target's first token) and of the output row: [target][position][row],
   * the output's last.
   */
  async rows(readoutIndices: number[], cells: LensCell[][], final: LensCell[]): Promise<number[][][]> {
    const readouts = this.lens.hooksFor(this.options).readouts;
    const groupHooks = readoutIndices.map((i) => readouts[i]!);
    const all: number[][][] = [];
    // One target after another (one lens session, runs in sequence).
    for (let t = 0; t < this.targets.length; t++) {
      const rest = this.targets[t]!.ids.slice(1);
      const run = this.runs[t];
      const read = run && (await this.lens.read(run, { readouts: groupHooks, variant: this.options.variant, topK: 1, tracked: rest }));
      const out: number[][] = [];
      for (let i = 0; i < final.length; i++) {
        const logp = [...cells.map((row) => row[i]!.trackedLogprobs[t]!), final[i]!.trackedLogprobs[t]!];
        // Continuation j of position i is cell i * n + j of the joined run; it tracks rest[j].
        for (let j = 0; read && j < rest.length; j++) {
          const c = i * rest.length + j;
          groupHooks.forEach((_, r) => (logp[r]! += read.readouts[r]!.cells[c]!.trackedLogprobs[j]!));
          logp[groupHooks.length]! += read.final[c]!.trackedLogprobs[j]!;
        }
        out.push(logp.map(Math.exp));
      }
      all.push(out);
    }
    return all;
  }
}
