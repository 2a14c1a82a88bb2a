/**
 * Corpus statistics: per prompt, per (lens, metric) a sum per layer and a count; across prompts a
 * token-weighted mean (sum of sums / sum of counts, as the tuned-lens paper averages over tokens)
 * and a percentile bootstrap 95 % interval that resamples whole prompts (positions within a prompt
 * are not independent), with a seeded generator so that the same inputs give the same interval.
 */
import { mulberry32 } from "../lens/sampling.js";

/** One prompt's contribution to one (lens, metric) series. */
export interface PromptStat {
  /** Per layer: the sum of the metric over the prompt's positions (or its one value). */
  sum: number[];
  /** How many values went into each sum. */
  n: number;
}

/** A prompt's statistics, keyed `${lens}\t${metric}`. */
export type PromptStats = Record<string, PromptStat>;

export interface SummarySeries {
  lens: string;
  metric: string;
  /** Prompts that contributed. */
  prompts: number;
  /** Values (tokens, or prompts for targets) that contributed, per layer. */
  values: number;
  mean: number[];
  lo: number[];
  hi: number[];
}

/** The seeded generator of the sampler (lens/sampling.ts): deterministic across platforms. */
export const rng = mulberry32;

/** FNV-1a of a string, to derive one stream per series from the user's seed. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const x = q * (sorted.length - 1);
  const i = Math.floor(x);
  const f = x - i;
  return i + 1 < sorted.length ? sorted[i]! * (1 - f) + sorted[i + 1]! * f : sorted[i]!;
}

/**
 * Summary of every series over the prompts, in a fixed order (lens, then metric as first seen).
 * `bootstrap` resamples (0 = no interval: lo = hi = mean).
 */
export function summarize(prompts: PromptStats[], layers: number, bootstrap: number, seed: number): SummarySeries[] {
  const keys: string[] = [];
  const seen = new Set<string>();
  for (const p of prompts) for (const k of Object.keys(p)) if (!seen.has(k)) (seen.add(k), keys.push(k));
  const out: SummarySeries[] = [];
  for (const key of keys) {
    const [lens, metric] = key.split("\t") as [string, string];
    const items = prompts.map((p) => p[key]).filter((s): s is PromptStat => s !== undefined && s.n > 0);
    const N = items.length;
    const totalN = items.reduce((a, s) => a + s.n, 0);
    const mean = Array.from({ length: layers }, (_, l) => items.reduce((a, s) => a + s.sum[l]!, 0) / totalN);
    let lo = mean.slice();
    let hi = mean.slice();
    if (bootstrap > 0 && N > 1) {
      // Seeded by the metric alone: every lens of a metric gets the same resamples (paired comparison).
      const next = rng(seed ^ hash32(metric));
      const reps = Array.from({ length: layers }, () => new Float64Array(bootstrap));
      const idx = new Int32Array(N);
      for (let b = 0; b < bootstrap; b++) {
        let n = 0;
        for (let i = 0; i < N; i++) {
          idx[i] = Math.floor(next() * N);
          n += items[idx[i]!]!.n;
        }
        for (let l = 0; l < layers; l++) {
          let s = 0;
          for (let i = 0; i < N; i++) s += items[idx[i]!]!.sum[l]!;
          reps[l]![b] = s / n;
        }
      }
      lo = reps.map((r) => quantile(r.sort(), 0.025));
      hi = reps.map((r) => quantile(r, 0.975));
    }
    out.push({ lens, metric, prompts: N, values: totalN, mean, lo, hi });
  }
  out.sort((a, b) => (a.lens === b.lens ? 0 : a.lens < b.lens ? -1 : 1));
  return out;
}
