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
import type { LogitLens, LensOptions, LensResult } from "./logit-lens.js";
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
