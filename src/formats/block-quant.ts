/**
 * ggml's quantized blocks re-laid-out for onnxruntime's block-quantized matrix product
 * (`com.microsoft` MatMulNBits), so that a quantized model stays quantized in memory.
 *
 * MatMulNBits computes y = x @ W^T with W[n, k] = scale[n, b] * (q[n, k] - zeroPoint), where b is
 * k's block, q has 4 or 8 bits and the default zero point is 2^(bits-1). ggml's formats all fit
 * the form W = scale * (q - zeroPoint) + min: the `min` term (Q4_1, Q5_1 and the K-quants' mins)
 * is not something MatMulNBits has in exact form (its float zero points run on a slow path: 30x
 * slower, measured), so it is kept apart as one float per block and added by the graph as
 *   y += blockSums(x) @ mins^T
 * (the sum of x over each block, times that block's min). Every weight is represented exactly.
 *
 * The 4-bit formats (Q4_0, Q4_1, Q4_K) become 4-bit blocks of 32. The 5-, 6- and 8-bit formats
 * (Q5_0, Q5_1, Q5_K, Q6_K, Q8_0) become 8-bit quants (blocks of 16 for Q6_K, whose scales change
 * every 16 elements), which `splitNibbles` then cuts into two 4-bit planes,
 *   s * (q - 128) = 16 * s * (high - 8) + s * (low - 8) + 8 * s,
 * the 8s joining the mins. `twoPlaneLayout` puts both planes in one row of twice the length, so one
 * 4-bit product over [16x, x] computes both (one pass over the output instead of three). Why: onnxruntime's 8-bit
 * kernel is only fast with int8 activations (accuracy_level 4), which moved SmolLM2's final logits
 * by 0.2 (of 20) against transformers; its fp32 8-bit path re-dequantizes the whole matrix on every
 * call (150 ms instead of 1.5 ms for a 2048 x 8192 decode step). Measured on an AVX2 EPYC, 2
 * threads, [64 x 2048] @ [2048 x 8192]: 4-bit with fp32 arithmetic 97 GFLOP/s, fp32 MatMul 68.
 */
import { UserError } from "../errors.js";
import { halfToFloat, scaleMinK4 } from "./dequantize.js";

export interface BlockQuantized {
  bits: 4 | 8;
  /** Elements per block along a row (the reduction dimension K). */
  blockSize: number;
  rows: number; // N
  cols: number; // K
  /** [rows, cols / blockSize, blockSize * bits / 8]: 4-bit pairs low nibble first, as MatMulNBits reads them. */
  data: Uint8Array;
  /** [rows * blocks] */
  scales: Float32Array;
  /** [rows * blocks], or undefined where every min is zero. */
  mins?: Float32Array;
}

/** The ggml types that can stay quantized, with the MatMulNBits form each becomes. */
export const REPACKABLE: Readonly<Record<string, { bits: 4 | 8; blockSize: number; ggmlBlock: number; ggmlBytes: number }>> = {
  Q4_0: { bits: 4, blockSize: 32, ggmlBlock: 32, ggmlBytes: 18 },
  Q4_1: { bits: 4, blockSize: 32, ggmlBlock: 32, ggmlBytes: 20 },
  Q4_K: { bits: 4, blockSize: 32, ggmlBlock: 256, ggmlBytes: 144 },
  Q5_0: { bits: 8, blockSize: 32, ggmlBlock: 32, ggmlBytes: 22 },
  Q5_1: { bits: 8, blockSize: 32, ggmlBlock: 32, ggmlBytes: 24 },
  Q5_K: { bits: 8, blockSize: 32, ggmlBlock: 256, ggmlBytes: 176 },
  Q6_K: { bits: 8, blockSize: 16, ggmlBlock: 256, ggmlBytes: 210 },
  Q8_0: { bits: 8, blockSize: 32, ggmlBlock: 32, ggmlBytes: 34 },
};

export function canRepack(dtype: string, shape: number[]): boolean {
  const r = REPACKABLE[dtype];
  return !!r && shape.length === 2 && shape[1]! % r.ggmlBlock === 0;
}

/** Bytes the repacked form takes (data + scales + mins if any), for planning memory. */
export function repackedBytes(dtype: string, shape: number[], withMins = true): number {
  const r = REPACKABLE[dtype]!;
  const [n, k] = shape as [number, number];
  const blocks = n * (k / r.blockSize);
  return (n * k * r.bits) / 8 + blocks * 4 + (withMins && hasMins(dtype) ? blocks * 4 : 0);
}

export function hasMins(dtype: string): boolean {
  return dtype === "Q4_1" || dtype === "Q4_K" || dtype === "Q5_1" || dtype === "Q5_K";
}

/**
 * Repacks a whole [rows, cols] tensor whose raw ggml bytes are `raw` (row-major, rows contiguous).
 * `rowOrder[i]` names the source row that becomes row i (a pure row permutation, as llama.cpp's
 * q/k un-permutation is); identity when absent.
 */
export function repack(dtype: string, raw: Uint8Array, rows: number, cols: number, rowOrder?: Int32Array): BlockQuantized {
  const r = REPACKABLE[dtype];
  if (!r) throw new UserError(`tensor type ${dtype} cannot stay quantized`);
  const rowBytes = (cols / r.ggmlBlock) * r.ggmlBytes;
  if (raw.length < rows * rowBytes) throw new UserError(`${dtype}: ${rows}x${cols} needs ${rows * rowBytes} bytes, got ${raw.length}`);
  const blocksPerRow = cols / r.blockSize;
  const outRowBytes = (cols * r.bits) / 8;
  const out: BlockQuantized = {
    bits: r.bits,
    blockSize: r.blockSize,
    rows,
    cols,
    data: new Uint8Array(rows * outRowBytes),
    scales: new Float32Array(rows * blocksPerRow),
    mins: hasMins(dtype) ? new Float32Array(rows * blocksPerRow) : undefined,
  };
  const unpack = UNPACKERS[dtype]!;
  // One row of signed-or-unsigned quants at a time, then packed to MatMulNBits' layout.
  const q = new Uint8Array(cols);
  for (let i = 0; i < rows; i++) {
    const src = rowOrder ? rowOrder[i]! : i;
    const b = i * blocksPerRow;
    unpack(raw.subarray(src * rowBytes, (src + 1) * rowBytes), q, out.scales.subarray(b, b + blocksPerRow), out.mins?.subarray(b, b + blocksPerRow));
    const dst = out.data.subarray(i * outRowBytes, (i + 1) * outRowBytes);
    if (r.bits === 8) dst.set(q);
    else for (let j = 0; j < outRowBytes; j++) dst[j] = q[2 * j]! | (q[2 * j + 1]! << 4);
  }
  return out;
}

/**
 * An 8-bit tensor as two 4-bit planes for MatMulNBits (see the header): `high` and `low` nibbles of
 * each quant, packed two per byte like any 4-bit block, and mins that absorb the 8 * scale.
 */
export function splitNibbles(t: BlockQuantized): { high: Uint8Array; low: Uint8Array; mins: Float32Array } {
  if (t.bits !== 8) throw new Error("splitNibbles needs 8-bit blocks");
  const high = new Uint8Array(t.data.length / 2);
  const low = new Uint8Array(t.data.length / 2);
  for (let j = 0; j < high.length; j++) {
    const a = t.data[2 * j]!, b = t.data[2 * j + 1]!;
    high[j] = (a >> 4) | (b & 0xf0);
    low[j] = (a & 15) | ((b & 15) << 4);
  }
  const mins = new Float32Array(t.scales.length);
  for (let i = 0; i < mins.length; i++) mins[i] = Math.fround(8 * t.scales[i]! + (t.mins ? t.mins[i]! : 0));
  return { high, low, mins };
}

/**
 * An 8-bit tensor as one 4-bit matrix [rows, 2 * cols]: each row's high plane, then its low plane,
 * scales repeated for both; multiplied by [16x, x] it gives x @ W^T less the mins' share.
 */
export function twoPlaneLayout(t: BlockQuantized): { data: Uint8Array; scales: Float32Array; mins: Float32Array } {
  const { high, low, mins } = splitNibbles(t);
  const rowBytes = t.cols / 2;
  const blocks = t.cols / t.blockSize;
  const data = new Uint8Array(high.length * 2);
  const scales = new Float32Array(t.scales.length * 2);
  for (let r = 0; r < t.rows; r++) {
    data.set(high.subarray(r * rowBytes, (r + 1) * rowBytes), 2 * r * rowBytes);
    data.set(low.subarray(r * rowBytes, (r + 1) * rowBytes), (2 * r + 1) * rowBytes);
    const s = t.scales.subarray(r * blocks, (r + 1) * blocks);
    scales.set(s, 2 * r * blocks);
    scales.set(s, (2 * r + 1) * blocks);
  }
  return { data, scales, mins };
}

/** The value an element stands for, for tests and for dequantizing a repacked tensor. */
export function repackedValue(t: BlockQuantized, row: number, col: number): number {
  const blocks = t.cols / t.blockSize;
  const b = row * blocks + Math.floor(col / t.blockSize);
  let q: number;
  if (t.bits === 8) q = t.data[row * t.cols + col]! - 128;
  else {
    const byte = t.data[row * (t.cols / 2) + (col >> 1)]!;
    q = (col & 1 ? byte >> 4 : byte & 15) - 8;
  }
  return Math.fround(t.scales[b]! * q) + (t.mins ? t.mins[b]! : 0);
}

/**
 * Per-format unpacking of one row: writes stored quants `q` (4-bit: 0..15 meaning q-8; 8-bit:
 * 0..255 meaning q-128), each block's scale and, where the format has one, its min, such that
 * weight = scale * (q - zeroPoint) + min reproduces ggml's dequantization (ggml-quants.c).
 */
type Unpacker = (raw: Uint8Array, q: Uint8Array, scales: Float32Array, mins: Float32Array | undefined) => void;

const f16 = (b: Uint8Array, p: number) => halfToFloat(b[p]! | (b[p + 1]! << 8));
const f = Math.fround;

const UNPACKERS: Record<string, Unpacker> = {
  // y = d * (q - 8)
  Q4_0(raw, q, scales) {
    for (let i = 0, p = 0; i < scales.length; i++, p += 18) {
      scales[i] = f16(raw, p);
      for (let j = 0; j < 16; j++) {
        const v = raw[p + 2 + j]!;
        q[i * 32 + j] = v & 15;
        q[i * 32 + j + 16] = v >> 4;
      }
    }
  },
  // y = d * q + m = d * (q - 8) + (m + 8d)
  Q4_1(raw, q, scales, mins) {
    for (let i = 0, p = 0; i < scales.length; i++, p += 20) {
      const d = f16(raw, p);
      scales[i] = d;
      mins![i] = f(f16(raw, p + 2) + 8 * d);
      for (let j = 0; j < 16; j++) {
        const v = raw[p + 4 + j]!;
        q[i * 32 + j] = v & 15;
        q[i * 32 + j + 16] = v >> 4;
      }
    }
  },
  // y = d * (q - 16), q 5-bit: stored q - 16 + 128
  Q5_0(raw, q, scales) {
    for (let i = 0, p = 0; i < scales.length; i++, p += 22) {
      scales[i] = f16(raw, p);
      const qh = raw[p + 2]! | (raw[p + 3]! << 8) | (raw[p + 4]! << 16) | (raw[p + 5]! << 24);
      for (let j = 0; j < 16; j++) {
        const v = raw[p + 6 + j]!;
        q[i * 32 + j] = ((v & 15) | (((qh >>> j) << 4) & 0x10)) + 112;
        q[i * 32 + j + 16] = ((v >> 4) | ((qh >>> (j + 12)) & 0x10)) + 112;
      }
    }
  },
  // y = d * q + m: stored q + 128, min m
  Q5_1(raw, q, scales, mins) {
    for (let i = 0, p = 0; i < scales.length; i++, p += 24) {
      scales[i] = f16(raw, p);
      mins![i] = f16(raw, p + 2);
      const qh = raw[p + 4]! | (raw[p + 5]! << 8) | (raw[p + 6]! << 16) | (raw[p + 7]! << 24);
      for (let j = 0; j < 16; j++) {
        const v = raw[p + 8 + j]!;
        q[i * 32 + j] = ((v & 15) | (((qh >>> j) << 4) & 0x10)) + 128;
        q[i * 32 + j + 16] = ((v >> 4) | ((qh >>> (j + 12)) & 0x10)) + 128;
      }
    }
  },
  // y = d * q, q int8: stored q + 128
  Q8_0(raw, q, scales) {
    for (let i = 0, p = 0; i < scales.length; i++, p += 34) {
      scales[i] = f16(raw, p);
      for (let j = 0; j < 32; j++) q[i * 32 + j] = (raw[p + 2 + j]! + 128) & 255;
    }
  },
  // Super-blocks of 256 = 8 sub-blocks of 32: y = d*sc*q - dmin*m = d*sc*(q - 8) + (8*d*sc - dmin*m)
  Q4_K(raw, q, scales, mins) {
    const sm = new Int32Array(2);
    for (let s = 0, p = 0; s < scales.length / 8; s++, p += 144) {
      const d = f16(raw, p), dmin = f16(raw, p + 2);
      for (let j = 0; j < 4; j++) {
        for (let half = 0; half < 2; half++) {
          const sub = 2 * j + half;
          scaleMinK4(raw, p + 4, sub, sm);
          const sc = d * sm[0]!;
          scales[s * 8 + sub] = sc;
          mins![s * 8 + sub] = f(8 * sc - dmin * sm[1]!);
          const base = s * 256 + sub * 32;
          for (let l = 0; l < 32; l++) {
            const v = raw[p + 16 + j * 32 + l]!;
            q[base + l] = half ? v >> 4 : v & 15;
          }
        }
      }
    }
  },
  // Like Q4_K with a fifth bit: y = d*sc*q - dmin*m, stored q + 128, min -dmin*m
  Q5_K(raw, q, scales, mins) {
    const sm = new Int32Array(2);
    for (let s = 0, p = 0; s < scales.length / 8; s++, p += 176) {
      const d = f16(raw, p), dmin = f16(raw, p + 2);
      for (let j = 0; j < 4; j++) {
        for (let half = 0; half < 2; half++) {
          const sub = 2 * j + half;
          scaleMinK4(raw, p + 4, sub, sm);
          scales[s * 8 + sub] = d * sm[0]!;
          mins![s * 8 + sub] = f(-dmin * sm[1]!);
          const base = s * 256 + sub * 32;
          for (let l = 0; l < 32; l++) {
            const v = raw[p + 48 + j * 32 + l]!;
            const h = (raw[p + 16 + l]! >> sub) & 1;
            q[base + l] = (half ? v >> 4 : v & 15) + (h << 4) + 128;
          }
        }
      }
    }
  },
  // Super-blocks of 256 = 16 sub-blocks of 16: y = d * sc * (q - 32), stored q - 32 + 128
  Q6_K(raw, q, scales) {
    for (let s = 0, p = 0; s < scales.length / 16; s++, p += 210) {
      const d = f16(raw, p + 208);
      for (let half = 0; half < 2; half++) {
        const ql = p + half * 64, qh = p + 128 + half * 32, sc = p + 192 + half * 8;
        for (let k = 0; k < 8; k++) scales[s * 16 + half * 8 + k] = d * ((raw[sc + k]! << 24) >> 24);
        const y = s * 256 + half * 128;
        for (let l = 0; l < 32; l++) {
          const a = raw[ql + l]!, c = raw[ql + l + 32]!, h = raw[qh + l]!;
          q[y + l] = ((a & 15) | ((h & 3) << 4)) + 96;
          q[y + l + 32] = ((c & 15) | (((h >> 2) & 3) << 4)) + 96;
          q[y + l + 64] = ((a >> 4) | (((h >> 4) & 3) << 4)) + 96;
          q[y + l + 96] = ((c >> 4) | (((h >> 6) & 3) << 4)) + 96;
        }
      }
    }
  },
};
