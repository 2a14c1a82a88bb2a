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
 * The 4-bit formats (Q4_0, Q4_1, Q4_K) become 4-bit blocks of 32, and the 2- and 3-bit K-quants
 * (Q2_K, Q3_K, whose scales change every 16 elements) 4-bit blocks of 16. The 5-, 6- and 8-bit
 * formats (Q5_0, Q5_1, Q5_K, Q6_K, Q8_0) become 8-bit quants (blocks of 16 for Q6_K), and so do
 * IQ4_NL and IQ4_XS: their 16 levels are unevenly spaced whole numbers (-127 .. 113), exact as
 * level + 128 but not as any 4-bit affine code. `splitNibbles` then cuts the 8-bit quants into two
 * 4-bit planes,
 *   s * (q - 128) = 16 * s * (high - 8) + s * (low - 8) + 8 * s,
 * the 8s joining the mins. `twoPlaneLayout` puts both planes in one row of twice the length, so one
 * 4-bit product over [16x, x] computes both (one pass over the output instead of three). Why: onnxruntime's 8-bit
 * kernel is only fast with int8 activations (accuracy_level 4), which moved SmolLM2's final logits
 * by 0.2 (of 20) against transformers; its fp32 8-bit path re-dequantizes the whole matrix on every
 * call (150 ms instead of 1.5 ms for a 2048 x 8192 decode step). Measured on an AVX2 EPYC, 2
 * threads, [64 x 2048] @ [2048 x 8192]: 4-bit with fp32 arithmetic 97 GFLOP/s, fp32 MatMul 68.
 */
import { UserError } from "../errors.js";
import { IQ4_LEVELS, halfToFloat, scaleIQ4_XS, scaleMinK4, scaleQ3_K } from "./dequantize.js";

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
  Q2_K: { bits: 4, blockSize: 16, ggmlBlock: 256, ggmlBytes: 84 },
  Q3_K: { bits: 4, blockSize: 16, ggmlBlock: 256, ggmlBytes: 110 },
  IQ4_NL: { bits: 8, blockSize: 32, ggmlBlock: 32, ggmlBytes: 18 },
  IQ4_XS: { bits: 8, blockSize: 32, ggmlBlock: 256, ggmlBytes: 136 },
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
  return dtype === "Q4_1" || dtype === "Q4_K" || dtype === "Q5_1" || dtype === "Q5_K" || dtype === "Q2_K";
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

/**
 * What the cache stores for a quantized matrix: the 4-bit planes MatMulNBits reads, and the file's
 * own scale codes (fp16 scales, 6-bit sub-block codes, fp16 or coded mins), which the graph turns
 * into MatMulNBits' fp32 scales and our fp32 mins when onnxruntime loads it (constant folding, a
 * pass over 1/16 to 1/32 of the weights). Why: fp32 scales and mins in the cache made it 1.2-1.5x
 * the GGUF (4 + 1 + 1 bits per Q4_K weight against 4.5); with codes it is 1.0-1.08x.
 *
 * Planes: 4-bit formats keep one. 8-bit formats keep [high, low] nibble planes of u, their stored
 * unsigned quant (Q8_0's int8 + 128, Q5's 5 bits, Q6_K's 6 bits), so that with the format's zero
 * point zp = 16 zh + zl,
 *   W = scale * (u - zp) + min = scale * (16 (high - zh) + (low - zl)) + min,
 * both planes in one 4-bit product over [16x, x]. Every zero point is a whole number: MatMulNBits
 * takes them as packed 4-bit integers (its fast path; float zero points are 30x slower), so only
 * Q4_1/Q5_1 and the K-quants keep a min term. The head, when in an 8-bit format, is stored as one
 * byte plane instead (`bytes8`: u shifted to zero point 128, the same size), for MatMulNBits'
 * 8-bit int8 path over exact slices of its input (graph/builder.ts).
 *
 * Cost in the cache against the file: Q4_0, Q4_1, Q8_0 1.0x; Q4_K 1.03x (its 6-bit codes stored a
 * byte each); Q6_K 1.30x and the Q5 formats 1.55x, because their high plane (2 bits, 1 bit) is
 * stored as 4-bit nibbles; Q3_K 1.33x and Q2_K 1.95x (2-3 bits in a nibble, codes a byte each);
 * IQ4_NL and IQ4_XS 1.9x (4 bits of index as two nibble planes). Spreading those bits to nibbles in
 * the graph instead was measured: it fits the cache to 1.0x, but onnxruntime keeps every folded intermediate until the whole graph is
 * optimised (+200 MB at load for Gemma 3 270M's Q5_0 tensors; several GB for a Q5 8B).
 */
export interface CompactQuantized {
  blockSize: number;
  rows: number;
  cols: number;
  twoPlanes: boolean;
  /**
   * An 8-bit format stored as one byte per weight (the format's quant + 128, zero point 128:
   * MatMulNBits `bits` 8) instead of two nibble planes: the same size. For the head, which then
   * multiplies on the int8 path over exact slices (graph/builder.ts).
   */
  bytes8: boolean;
  /** [rows, planes * blocks, blockSize / 2], the high plane first where there are two; bytes8: [rows, blocks, blockSize]. */
  data: Uint8Array;
  /** fp16 bits [rows, groups]: the scale (K-quants: the super-block's d). */
  d: Uint16Array;
  /** Blocks per `d`: 1, or 8 (Q4_K, Q5_K) and 16 (Q6_K) sub-blocks per super-block. */
  group: number;
  /** [rows, blocks] sub-block scale codes (K-quants), int8 for Q6_K. */
  sc?: Uint8Array;
  scSigned?: boolean;
  /** fp16 bits [rows, blocks]: Q4_1/Q5_1 mins. */
  m?: Uint16Array;
  /** fp16 bits [rows, groups], already negated, and [rows, blocks] codes: K-quant mins are negDmin * mc. */
  negDmin?: Uint16Array;
  mc?: Uint8Array;
  /** Zero point of each plane (high first); [8] is MatMulNBits' default. */
  zeroPoints: number[];
}

/** A K-quant's (or IQ4_XS's) sub-block `sub` codes, read from the ggml block at `p`: out[0] the scale code, out[1] the min code. */
type ScaleCodes = (block: Uint8Array, p: number, sub: number, out: Int32Array) => void;

/** Per format: where the scale codes lie in a ggml block, and how planes relate to `repack`'s q. */
const COMPACT: Record<string, { uShift: number; zeroPoints: number[]; d: number; m?: number; dmin?: number; codes?: ScaleCodes; signedCodes?: boolean }> = {
  Q4_0: { uShift: 0, zeroPoints: [8], d: 0 }, // d (q - 8)
  Q4_1: { uShift: 0, zeroPoints: [0], d: 0, m: 2 }, // d q + m
  Q4_K: { uShift: 0, zeroPoints: [0], d: 0, dmin: 2, codes: (b, p, sub, out) => scaleMinK4(b, p + 4, sub, out) }, // d sc q - dmin mc
  Q5_0: { uShift: 112, zeroPoints: [1, 0], d: 0 }, // d (q - 16)
  Q5_1: { uShift: 128, zeroPoints: [0, 0], d: 0, m: 2 }, // d q + m
  Q5_K: { uShift: 128, zeroPoints: [0, 0], d: 0, dmin: 2, codes: (b, p, sub, out) => scaleMinK4(b, p + 4, sub, out) }, // d sc q - dmin mc
  Q6_K: { uShift: 96, zeroPoints: [2, 0], d: 208, codes: (b, p, sub, out) => void (out[0] = b[p + 192 + sub]!), signedCodes: true }, // d sc (q - 32)
  Q8_0: { uShift: 0, zeroPoints: [8, 0], d: 0 }, // d q, q int8 stored + 128
  // d sc q - dmin mc, a nibble each
  Q2_K: { uShift: 0, zeroPoints: [0], d: 80, dmin: 82, codes: (b, p, sub, out) => void ((out[0] = b[p + sub]! & 15), (out[1] = b[p + sub]! >> 4)) },
  // d sc (q - 8), q = the 3-bit quant + 4 (repack's q)
  Q3_K: { uShift: 0, zeroPoints: [8], d: 108, codes: (b, p, sub, out) => void (out[0] = scaleQ3_K(b, p + 96, sub)), signedCodes: true },
  // d (u - 128), u = level + 128: the non-linear levels are exact 8-bit integers
  IQ4_NL: { uShift: 0, zeroPoints: [8, 0], d: 0 },
  IQ4_XS: { uShift: 0, zeroPoints: [8, 0], d: 0, codes: (b, p, sub, out) => void (out[0] = scaleIQ4_XS(b, p, sub)), signedCodes: true },
};

/**
 * The cache's form of a quantized matrix (see CompactQuantized); rows reordered like `repack`.
 * `bytes8`: an 8-bit format as one byte plane (ignored for 4-bit formats).
 */
export function compactRepack(dtype: string, raw: Uint8Array, rows: number, cols: number, rowOrder?: Int32Array, bytes8 = false): CompactQuantized {
  const r = REPACKABLE[dtype];
  const c = COMPACT[dtype];
  if (!r || !c) throw new UserError(`tensor type ${dtype} cannot stay quantized`);
  const rowBytes = (cols / r.ggmlBlock) * r.ggmlBytes;
  if (raw.length < rows * rowBytes) throw new UserError(`${dtype}: ${rows}x${cols} needs ${rows * rowBytes} bytes, got ${raw.length}`);
  const blocks = cols / r.blockSize;
  const superBlocks = cols / r.ggmlBlock;
  const group = r.ggmlBlock === 256 ? 256 / r.blockSize : 1;
  const groups = blocks / group;
  const oneBytePlane = bytes8 && r.bits === 8;
  const twoPlanes = r.bits === 8 && !oneBytePlane;
  const planeBytes = cols / 2;
  const out: CompactQuantized = {
    blockSize: r.blockSize,
    rows,
    cols,
    twoPlanes,
    bytes8: oneBytePlane,
    data: new Uint8Array(rows * planeBytes * (r.bits === 8 ? 2 : 1)),
    d: new Uint16Array(rows * groups),
    group,
    sc: c.codes ? new Uint8Array(rows * blocks) : undefined,
    scSigned: !!c.signedCodes,
    m: c.m !== undefined ? new Uint16Array(rows * blocks) : undefined,
    negDmin: c.dmin !== undefined ? new Uint16Array(rows * groups) : undefined,
    mc: c.codes && c.dmin !== undefined ? new Uint8Array(rows * blocks) : undefined,
    // repack's 8-bit q is the weight's quant + 128, as MatMulNBits' 8-bit default zero point reads it.
    zeroPoints: oneBytePlane ? [128] : c.zeroPoints,
  };
  const unpack = UNPACKERS[dtype]!;
  const q = new Uint8Array(cols);
  const scratchScales = new Float32Array(blocks);
  const scratchMins = new Float32Array(blocks);
  const sm = new Int32Array(2);
  const u16 = (b: Uint8Array, p: number) => b[p]! | (b[p + 1]! << 8);
  for (let i = 0; i < rows; i++) {
    const src = rowOrder ? rowOrder[i]! : i;
    const row = raw.subarray(src * rowBytes, (src + 1) * rowBytes);
    unpack(row, q, scratchScales, scratchMins);
    if (oneBytePlane) out.data.set(q, i * cols);
    else if (!twoPlanes) {
      const dst = out.data.subarray(i * planeBytes, (i + 1) * planeBytes);
      for (let j = 0; j < planeBytes; j++) dst[j] = q[2 * j]! | (q[2 * j + 1]! << 4);
    } else {
      // u = q - uShift: the format's own unsigned quant, split into nibbles.
      for (let j = 0; j < planeBytes; j++) {
        const a = (q[2 * j]! - c.uShift) & 255, b = (q[2 * j + 1]! - c.uShift) & 255;
        out.data[2 * i * planeBytes + j] = (a >> 4) | (b & 0xf0);
        out.data[(2 * i + 1) * planeBytes + j] = (a & 15) | ((b & 15) << 4);
      }
    }
    for (let s = 0; s < superBlocks; s++) {
      const p = s * r.ggmlBytes;
      if (group === 1) {
        out.d[i * groups + s] = u16(row, p + c.d);
        if (out.m) out.m[i * blocks + s] = u16(row, p + c.m!);
        continue;
      }
      out.d[i * groups + s] = u16(row, p + c.d);
      if (out.negDmin) out.negDmin[i * groups + s] = u16(row, p + c.dmin!) ^ 0x8000; // flip the sign bit
      for (let b = 0; b < group; b++) {
        const at = i * blocks + s * group + b;
        c.codes!(row, p, b, sm);
        out.sc![at] = sm[0]!; // a signed code wraps to its int8 byte
        if (out.mc) out.mc[at] = sm[1]!;
      }
    }
  }
  return out;
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
  // Super-blocks of 256 = 16 sub-blocks of 16 (element 128 h + 32 k + l: bits 2k of qs[32 h + l]):
  // y = d*sc*q - dmin*m = d*sc*(q - 8) + (8*d*sc - dmin*m)
  Q2_K(raw, q, scales, mins) {
    for (let s = 0, p = 0; s < scales.length / 16; s++, p += 84) {
      const d = f16(raw, p + 80), dmin = f16(raw, p + 82);
      for (let e = 0; e < 256; e += 16) {
        const code = raw[p + (e >> 4)]!;
        const sc = d * (code & 15);
        scales[s * 16 + (e >> 4)] = sc;
        mins![s * 16 + (e >> 4)] = f(8 * sc - dmin * (code >> 4));
        const half = e >> 7, shift = ((e >> 5) & 3) * 2, l0 = e & 31;
        for (let l = l0; l < l0 + 16; l++) q[s * 256 + e - l0 + l] = (raw[p + 16 + half * 32 + l]! >> shift) & 3;
      }
    }
  },
  // Like Q2_K's layout, plus a high bit from hmask: y = d*sc*(u - 4) with u = low bits + 4*hbit, stored u + 4
  Q3_K(raw, q, scales) {
    for (let s = 0, p = 0; s < scales.length / 16; s++, p += 110) {
      const d = f16(raw, p + 108);
      for (let e = 0; e < 256; e += 16) {
        scales[s * 16 + (e >> 4)] = d * scaleQ3_K(raw, p + 96, e >> 4);
        const half = e >> 7, k = (e >> 5) & 3, l0 = e & 31, bit = 4 * half + k;
        for (let l = l0; l < l0 + 16; l++) q[s * 256 + e - l0 + l] = ((raw[p + 32 + half * 32 + l]! >> (2 * k)) & 3) + 4 * ((raw[p + l]! >> bit) & 1) + 4;
      }
    }
  },
  // y = d * level, level an int8 from IQ4_LEVELS: stored level + 128
  IQ4_NL(raw, q, scales) {
    for (let i = 0, p = 0; i < scales.length; i++, p += 18) {
      scales[i] = f16(raw, p);
      iq4Quants(raw, p + 2, q, i * 32);
    }
  },
  // Super-blocks of 256 = 8 sub-blocks of 32 laid out like IQ4_NL: y = d * (ls - 32) * level
  IQ4_XS(raw, q, scales) {
    for (let s = 0, p = 0; s < scales.length / 8; s++, p += 136) {
      const d = f16(raw, p);
      for (let ib = 0; ib < 8; ib++) {
        scales[s * 8 + ib] = d * scaleIQ4_XS(raw, p, ib);
        iq4Quants(raw, p + 8 + ib * 16, q, s * 256 + ib * 32);
      }
    }
  },
};

/** 32 IQ4 indices (16 bytes from raw[qs], low nibbles first) as stored 8-bit quants: level + 128. */
function iq4Quants(raw: Uint8Array, qs: number, q: Uint8Array, at: number): void {
  for (let j = 0; j < 16; j++) {
    const v = raw[qs + j]!;
    q[at + j] = IQ4_LEVELS[v & 15]! + 128;
    q[at + j + 16] = IQ4_LEVELS[v >> 4]! + 128;
  }
}
