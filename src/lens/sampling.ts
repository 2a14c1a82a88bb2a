/**
 * Next-token choice for generation: greedy by default, or temperature + nucleus (top-p) sampling
 * from a seeded generator, so that a given seed always gives the same text.
 */
import { UserError } from "../errors.js";

export interface SamplingOptions {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Keep the smallest set of tokens whose probability reaches top_p (1 = all). */
  topP: number;
  seed: number;
}

/** mulberry32: tiny, fast, and good enough for sampling; deterministic across platforms. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Sampler {
  private readonly random: () => number;

  constructor(readonly options: SamplingOptions) {
    if (!(options.temperature >= 0)) throw new UserError(`--temperature must be >= 0, got ${options.temperature}`);
    if (!(options.topP > 0 && options.topP <= 1)) throw new UserError(`--top-p must be in (0, 1], got ${options.topP}`);
    this.random = mulberry32(options.seed);
  }

  next(logits: Float32Array): number {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    if (this.options.temperature === 0) return best;
    const t = this.options.temperature;
    const max = logits[best]!;
    const probs = new Float64Array(logits.length);
    let sum = 0;
    for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp((logits[i]! - max) / t);
    // Nucleus: sort candidates by probability, keep until the mass reaches topP.
    const order = Array.from(probs.keys()).filter((i) => probs[i]! / sum > 1e-12).sort((a, b) => probs[b]! - probs[a]! || a - b);
    const keep: number[] = [];
    let mass = 0;
    for (const i of order) {
      keep.push(i);
      mass += probs[i]! / sum;
      if (mass >= this.options.topP) break;
    }
    const kept = keep.reduce((s, i) => s + probs[i]!, 0);
    let r = this.random() * kept;
    for (const i of keep) {
      r -= probs[i]!;
      if (r <= 0) return i;
    }
    return keep[keep.length - 1]!;
  }
}
