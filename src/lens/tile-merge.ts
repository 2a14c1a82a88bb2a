/**
 * Puts the lens's vocabulary tiles together (lens-graph.ts buildLensTileGraph), in float64.
 *
 * Each tile reports, per row, its maximum logit m_t and sums taken against exp(logit - m_t). Over
 * all tiles, with M the row's overall maximum, each sum is sum_t x_t * exp(m_t - M) (the online
 * softmax's rescaling, done once at the end because every tile's figures are kept):
 *   S0 = sum exp(logit - M),  lse = M + ln S0,  entropy = lse - own / S0,
 *   KL(final ‖ row) = (own_f / S0_f - lse_f) - (cross / S0_f - lse_row),
 * where cross sums the row's logits against the final row's exp terms, rescaled by the final row's
 * own maximum. The top-k of the row is the best k of every tile's top-k.
 */

export interface TileOutputs {
  /** Vocabulary id of the tile's first column. */
  first: number;
  /** Columns in the tile. */
  size: number;
  k: number;
  topLogits: Float32Array;
  topIds: BigInt64Array;
  max: Float32Array;
  sumExp: Float32Array;
  own: Float32Array;
  cross: Float32Array;
  higher?: Int32Array;
  trackedHere?: Float32Array;
  familyExp?: Float32Array;
}

export interface MergedRow {
  topIds: number[];
  topLogits: number[];
  logsumexp: number;
  entropy: number;
  klToFinal: number;
  trackedLogits: number[];
  /** 0 = top-1: how many tokens score strictly higher. */
  trackedRanks: number[];
  familyProbs: number[];
}

/**
 * Rows are [P, R] (position-major); the last of each position's R rows is the final one. `tracked`
 * ids and their logits [P * R * M] (from the tracked-logits graph) when tracking; `families` F.
 */
export class TileMerge {
  private readonly tiles: TileOutputs[] = [];

  constructor(
    readonly P: number,
    readonly R: number,
    readonly k: number,
    readonly tracked: number[] = [],
    readonly trackedLogits?: Float32Array,
    readonly families = 0,
  ) {}

  add(tile: TileOutputs): void {
    this.tiles.push(tile);
  }

  /** Rows by position, then readout: result[p * R + r]. */
  rows(): MergedRow[] {
    const { P, R } = this;
    const N = P * R;
    const M = this.tracked.length;
    const out: MergedRow[] = [];
    const maxOf = new Float64Array(N).fill(-Infinity);
    for (const t of this.tiles) for (let n = 0; n < N; n++) maxOf[n] = Math.max(maxOf[n]!, t.max[n]!);
    const s0 = new Float64Array(N);
    const own = new Float64Array(N);
    for (const t of this.tiles) {
      for (let n = 0; n < N; n++) {
        const f = Math.exp(t.max[n]! - maxOf[n]!);
        s0[n] += t.sumExp[n]! * f;
        own[n] += t.own[n]! * f;
      }
    }
    for (let p = 0; p < P; p++) {
      const fin = p * R + R - 1;
      const lseF = maxOf[fin]! + Math.log(s0[fin]!);
      const crossF = own[fin]! / s0[fin]! - lseF;
      for (let r = 0; r < R; r++) {
        const n = p * R + r;
        let cross = 0;
        for (const t of this.tiles) cross += t.cross[n]! * Math.exp(t.max[fin]! - maxOf[fin]!);
        const lse = maxOf[n]! + Math.log(s0[n]!);
        const { ids, logits } = this.topOf(n);
        const ranks: number[] = [];
        const trackedLogits: number[] = [];
        for (let m = 0; m < M; m++) {
          const tau = this.trackedLogits![n * M + m]!;
          const id = this.tracked[m]!;
          let higher = 0;
          for (const t of this.tiles) {
            higher += t.higher![n * M + m]!;
            // The token itself never counts, even if its logit in the tile rounds above the one
            // the tracked-logits graph computed.
            if (id >= t.first && id < t.first + t.size && t.trackedHere![n * M + m]! > tau) higher -= 1;
          }
          ranks.push(higher);
          trackedLogits.push(tau);
        }
        const familyProbs: number[] = [];
        for (let f = 0; f < this.families; f++) {
          let sum = 0;
          for (const t of this.tiles) sum += t.familyExp![n * this.families + f]! * Math.exp(t.max[n]! - maxOf[n]!);
          familyProbs.push(sum / s0[n]!);
        }
        out.push({
          topIds: ids,
          topLogits: logits,
          logsumexp: lse,
          entropy: lse - own[n]! / s0[n]!,
          // The final row's against itself is 0 up to rounding.
          klToFinal: crossF - (cross / s0[fin]! - lse),
          trackedLogits,
          trackedRanks: ranks,
          familyProbs,
        });
      }
    }
    return out;
  }

  /** The row's best k over every tile's top-k: higher logit first, lower id first on ties. */
  private topOf(n: number): { ids: number[]; logits: number[] } {
    const ids: number[] = [];
    const logits: number[] = [];
    const better = (logit: number, id: number, j: number) => logit > logits[j]! || (logit === logits[j]! && id < ids[j]!);
    for (const t of this.tiles) {
      // Each tile's list is sorted, best first: once one does not make the cut, none after it will.
      for (let j = 0; j < t.k; j++) {
        const logit = t.topLogits[n * t.k + j]!;
        const id = t.first + Number(t.topIds[n * t.k + j]!);
        if (ids.length === this.k && !better(logit, id, this.k - 1)) break;
        let at = ids.length;
        while (at > 0 && better(logit, id, at - 1)) at--;
        ids.splice(at, 0, id);
        logits.splice(at, 0, logit);
        if (ids.length > this.k) {
          ids.pop();
          logits.pop();
        }
      }
    }
    return { ids, logits };
  }
}
