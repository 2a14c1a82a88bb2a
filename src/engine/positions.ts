/**
 * Per-call position inputs computed in JS: rotary cos/sin tables and additive attention masks.
 * Cheap (T x headDim) and it keeps the graph free of position arithmetic.
 */
import type { ModelConfig } from "../architectures/config.js";

const f = Math.fround;

/**
 * Inverse frequencies of one rotary table. A plain Float32Array, except for LongRoPE (Phi-3),
 * which carries a second set for long sequences and a scale for cos and sin: `rotaryTables` picks
 * the set by sequence length, as transformers' `longrope_frequency_update` does.
 */
export type RotaryFrequencies = Float32Array & { long?: Float32Array; originalMaxPositions?: number; attentionFactor?: number };

/**
 * Inverse frequencies as transformers computes them in float32:
 * 1 / base^(2i/d), with Llama 3, linear or LongRoPE scaling where configured.
 */
export function inverseFrequencies(cfg: ModelConfig, base: number, scaled: boolean): RotaryFrequencies {
  const d = cfg.headDim;
  const inv = new Float32Array(d / 2);
  const powers = Array.from({ length: d / 2 }, (_, i) => f(Math.pow(base, f((2 * i) / d))));
  for (let i = 0; i < d / 2; i++) inv[i] = f(1 / powers[i]!);
  if (!scaled) return inv;
  if (cfg.ropeLinearFactor) for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i]! / cfg.ropeLinearFactor);
  if (cfg.ropeLlama3) {
    // transformers' _compute_llama3_parameters
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = cfg.ropeLlama3;
    const lowWavelen = originalMaxPositions / lowFreqFactor;
    const highWavelen = originalMaxPositions / highFreqFactor;
    for (let i = 0; i < inv.length; i++) {
      const wavelen = (2 * Math.PI) / inv[i]!;
      if (wavelen > lowWavelen) inv[i] = f(inv[i]! / factor);
      else if (wavelen >= highWavelen) {
        const smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        inv[i] = f((1 - smooth) * (inv[i]! / factor) + smooth * inv[i]!);
      }
    }
  }
  // llama.cpp's form of the same Llama 3 scaling (GGUF rope_freqs.weight): theta_i / factor_i.
  if (cfg.ropeFreqFactors) for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i]! / f(cfg.ropeFreqFactors[i]!));
  if (cfg.ropeLongrope) {
    // transformers' _compute_longrope_parameters: 1 / (factor_i * base^(2i/d)).
    const { short, long, originalMaxPositions, attentionFactor } = cfg.ropeLongrope;
    const withFactors = (factors: number[]) => Float32Array.from(powers, (p, i) => f(1 / f(f(factors[i]!) * p)));
    return Object.assign(withFactors(short), { long: withFactors(long), originalMaxPositions, attentionFactor });
  }
  return inv;
}

/** cos/sin [T, headDim] for absolute positions start..start+T-1 (halves repeated, rotate_half layout). */
export function rotaryTables(freqs: RotaryFrequencies, start: number, count: number): { cos: Float32Array; sin: Float32Array } {
  const inv = freqs.long && start + count > freqs.originalMaxPositions! ? freqs.long : freqs;
  const scale = freqs.attentionFactor ?? 1;
  const half = inv.length;
  const d = 2 * half;
  const cos = new Float32Array(count * d);
  const sin = new Float32Array(count * d);
  for (let t = 0; t < count; t++) {
    for (let i = 0; i < half; i++) {
      const angle = f((start + t) * inv[i]!);
      const c = f(Math.cos(angle)) * scale;
      const s = f(Math.sin(angle)) * scale;
      cos[t * d + i] = cos[t * d + half + i] = c;
      sin[t * d + i] = sin[t * d + half + i] = s;
    }
  }
  return { cos, sin };
}

/**
 * Additive causal mask [T, past+T]: query t (absolute position past+t) sees key j when j <= past+t
 * and, with a window, when (past+t) - j < window (transformers' sliding-window convention).
 */
export function causalMask(past: number, count: number, window?: number): Float32Array {
  const total = past + count;
  const mask = new Float32Array(count * total);
  for (let t = 0; t < count; t++) {
    const q = past + t;
    for (let j = 0; j < total; j++) {
      const visible = j <= q && (window === undefined || q - j < window);
      mask[t * total + j] = visible ? 0 : -Infinity;
    }
  }
  return mask;
}
