/**
 * Per-call position inputs computed in JS: rotary cos/sin tables and additive attention masks.
 * Cheap (T x headDim) and it keeps the graph free of position arithmetic.
 */
import type { ModelConfig } from "../architectures/config.js";

const f = Math.fround;

/**
 * Inverse frequencies as transformers computes them in float32:
 * 1 / base^(2i/d), with Llama 3 or linear scaling where configured.
 */
export function inverseFrequencies(cfg: ModelConfig, base: number, scaled: boolean): Float32Array {
  const d = cfg.headDim;
  const inv = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) inv[i] = f(1 / f(Math.pow(base, f((2 * i) / d))));
  if (scaled && cfg.ropeLinearFactor) for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i]! / cfg.ropeLinearFactor);
  if (scaled && cfg.ropeLlama3) {
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
  return inv;
}

/** cos/sin [T, headDim] for absolute positions start..start+T-1 (halves repeated, rotate_half layout). */
export function rotaryTables(inv: Float32Array, start: number, count: number): { cos: Float32Array; sin: Float32Array } {
  const half = inv.length;
  const d = 2 * half;
  const cos = new Float32Array(count * d);
  const sin = new Float32Array(count * d);
  for (let t = 0; t < count; t++) {
    for (let i = 0; i < half; i++) {
      const angle = f((start + t) * inv[i]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
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
