/**
 * Turns tensor bytes (plain floats or ggml quantized blocks) into float32, element for element in
 * the file's row-major order. The block layouts follow ggml-quants.c (`dequantize_row_*`) and
 * gguf-py's quants.py, which the tests use as the reference; results match gguf-py bit for bit.
 *
 * Speed: this runs once per tensor at load time over every weight of the model, so the inner loops
 * use plain typed-array indexing (no DataView, no per-element function calls) and a 65536-entry
 * half->float table. Each float32 output is computed in double precision and rounded once when
 * stored, which gives the same value as ggml's float arithmetic here: every product of an f16 scale
 * and a small integer quant is exact before the final rounding.
 */
import fs from "node:fs";
import { UserError, check } from "../errors.js";
import type { TensorRef } from "./tensor-ref.js";
import { openForReading } from "./files.js";

/** Elements per block and bytes per block, as in ggml's type traits (GGML_QUANT_SIZES). */
export const SUPPORTED_DTYPES: Readonly<Record<string, { blockSize: number; typeSize: number }>> = {
  F32: { blockSize: 1, typeSize: 4 },
  F16: { blockSize: 1, typeSize: 2 },
  BF16: { blockSize: 1, typeSize: 2 },
  Q8_0: { blockSize: 32, typeSize: 34 },
  Q4_0: { blockSize: 32, typeSize: 18 },
  Q4_1: { blockSize: 32, typeSize: 20 },
  Q5_0: { blockSize: 32, typeSize: 22 },
  Q5_1: { blockSize: 32, typeSize: 24 },
  Q4_K: { blockSize: 256, typeSize: 144 },
  Q5_K: { blockSize: 256, typeSize: 176 },
  Q6_K: { blockSize: 256, typeSize: 210 },
  Q2_K: { blockSize: 256, typeSize: 84 },
  Q3_K: { blockSize: 256, typeSize: 110 },
  IQ4_NL: { blockSize: 32, typeSize: 18 },
  IQ4_XS: { blockSize: 256, typeSize: 136 },
};

/** Bytes needed for `count` elements of `dtype`; throws UserError for unknown types or partial blocks. */
export function byteLengthOf(dtype: string, count: number): number {
  const info = SUPPORTED_DTYPES[dtype];
  if (!info) throw new UserError(`tensor type ${dtype} is not supported (supported: ${Object.keys(SUPPORTED_DTYPES).join(", ")})`);
  check(count % info.blockSize === 0, `${count} elements of ${dtype} is not a whole number of ${info.blockSize}-element blocks`);
  return (count / info.blockSize) * info.typeSize;
}

/**
 * IEEE half -> float for all 65536 bit patterns, including subnormals, infinities and NaN
 * (NaN payloads are not preserved, which nothing downstream cares about). Built once, 256 KiB.
 */
const HALF_TO_FLOAT: Float32Array = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = mant * 2 ** -24; // subnormal (and zero): mant * 2^-14 / 1024
    else if (exp === 31) v = mant === 0 ? Infinity : NaN;
    else v = (1 + mant / 1024) * 2 ** (exp - 15);
    table[h] = sign * v;
  }
  return table;
})();

/** Half -> float for one value; exported for tests and for code that reads single f16 scalars. */
export function halfToFloat(bits: number): number {
  return HALF_TO_FLOAT[bits & 0xffff]!;
}

/** Dequantizes `count` elements of `dtype` from `bytes` (which must hold exactly those blocks). */
export function dequantizeBlocks(dtype: string, bytes: Uint8Array, count: number): Float32Array {
  const need = byteLengthOf(dtype, count);
  check(bytes.length >= need, `${dtype}: ${count} elements need ${need} bytes, got ${bytes.length}`);
  const out = new Float32Array(count);
  dequantizeInto(dtype, bytes, out);
  return out;
}

/**
 * Reads a tensor's bytes from its file and returns it as float32. Reads in chunks of whole blocks
 * so that peak memory is the float32 result plus one chunk, not the result plus the whole raw
 * tensor (a 262k-vocabulary embedding is 670 MB as float32).
 */
export function readTensorF32(ref: TensorRef): Float32Array {
  const info = SUPPORTED_DTYPES[ref.dtype];
  if (!info) {
    throw new UserError(`${ref.file}: tensor ${ref.name} has type ${ref.dtype}, which logit-lens does not support (supported: ${Object.keys(SUPPORTED_DTYPES).join(", ")})`);
  }
  let count = 1;
  for (const d of ref.shape) count *= d;
  check(Number.isSafeInteger(count), `${ref.file}: tensor ${ref.name} has an absurd shape [${ref.shape.join(", ")}]`);
  check(count % info.blockSize === 0, `${ref.file}: tensor ${ref.name} has ${count} elements, not a whole number of ${ref.dtype} blocks of ${info.blockSize}`);
  const nBlocks = count / info.blockSize;
  check(ref.byteLength === nBlocks * info.typeSize, `${ref.file}: tensor ${ref.name} should take ${nBlocks * info.typeSize} bytes as ${ref.dtype} [${ref.shape.join(", ")}], but its entry says ${ref.byteLength}`);

  const out = new Float32Array(count);
  if (count === 0) return out;
  const fd = openForReading(ref.file, ref.file, "model file");
  try {
    // About 8 MiB of raw bytes per chunk: big enough that syscalls do not matter, small enough to be cheap.
    const blocksPerChunk = Math.max(1, Math.floor((8 << 20) / info.typeSize));
    const chunk = new Uint8Array(Math.min(nBlocks, blocksPerChunk) * info.typeSize);
    for (let block = 0; block < nBlocks; block += blocksPerChunk) {
      const blocks = Math.min(blocksPerChunk, nBlocks - block);
      const len = blocks * info.typeSize;
      const view = chunk.subarray(0, len);
      readFully(fd, view, ref.offset + block * info.typeSize, () => `${ref.file}: file ends inside tensor ${ref.name} (truncated file?)`);
      dequantizeInto(ref.dtype, view, out.subarray(block * info.blockSize, (block + blocks) * info.blockSize));
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/**
 * Rows [first, end) of a 2-D tensor ([rows, cols], ggml blocks running along a row) as float32,
 * into `out` ((end - first) * cols elements). A row range of a block-quantized matrix is one
 * contiguous run of whole blocks, so this reads only those bytes: the lens dequantizes its
 * unembedding a tile of rows at a time this way (src/lens/logit-lens.ts). `scratch` may be a
 * buffer kept between calls for the raw bytes; a bigger one is made when it is too small.
 */
export function readRowsF32(ref: TensorRef, first: number, end: number, out: Float32Array, scratch?: Uint8Array): Uint8Array {
  const [rows, cols] = ref.shape as [number, number];
  check(ref.shape.length === 2 && Number.isInteger(first) && Number.isInteger(end) && 0 <= first && first <= end && end <= rows, `${ref.name}: rows ${first}..${end} are outside [${ref.shape.join(", ")}]`);
  check(out.length === (end - first) * cols, `${ref.name}: ${end - first} rows need ${(end - first) * cols} floats, got ${out.length}`);
  const rowBytes = byteLengthOf(ref.dtype, cols);
  const len = (end - first) * rowBytes;
  const raw = scratch && scratch.length >= len ? scratch : new Uint8Array(len);
  const view = raw.subarray(0, len);
  const fd = openForReading(ref.file, ref.file, "model file");
  try {
    readFully(fd, view, ref.offset + first * rowBytes, () => `${ref.file}: file ends inside tensor ${ref.name} (truncated file?)`);
  } finally {
    fs.closeSync(fd);
  }
  dequantizeInto(ref.dtype, view, out);
  return raw;
}

/** Fills `buf` from `position`, looping over short reads; EOF before the end is a UserError. */
function readFully(fd: number, buf: Uint8Array, position: number, eofMessage: () => string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw new UserError(eofMessage());
    done += n;
  }
}

/** Dequantizes whole blocks from `b` into `out` (out.length elements). */
function dequantizeInto(dtype: string, b: Uint8Array, out: Float32Array): void {
  switch (dtype) {
    case "F32": return convertF32(b, out);
    case "F16": return convertF16(b, out);
    case "BF16": return convertBF16(b, out);
    case "Q8_0": return dequantQ8_0(b, out);
    case "Q4_0": return dequantQ4_0(b, out);
    case "Q4_1": return dequantQ4_1(b, out);
    case "Q5_0": return dequantQ5_0(b, out);
    case "Q5_1": return dequantQ5_1(b, out);
    case "Q4_K": return dequantQ4_K(b, out);
    case "Q5_K": return dequantQ5_K(b, out);
    case "Q6_K": return dequantQ6_K(b, out);
    case "Q2_K": return dequantQ2_K(b, out);
    case "Q3_K": return dequantQ3_K(b, out);
    case "IQ4_NL": return dequantIQ4_NL(b, out);
    case "IQ4_XS": return dequantIQ4_XS(b, out);
    default:
      throw new UserError(`tensor type ${dtype} is not supported (supported: ${Object.keys(SUPPORTED_DTYPES).join(", ")})`);
  }
}

// All formats below are little-endian, as are all machines Node runs on in practice; typed-array
// views over the bytes therefore read them correctly.

function convertF32(b: Uint8Array, out: Float32Array): void {
  // A Float32Array view needs 4-byte alignment; copy through bytes when the caller's slice is not aligned.
  if (b.byteOffset % 4 === 0) out.set(new Float32Array(b.buffer, b.byteOffset, out.length));
  else new Uint8Array(out.buffer, out.byteOffset, out.length * 4).set(b.subarray(0, out.length * 4));
}

function convertF16(b: Uint8Array, out: Float32Array): void {
  const n = out.length;
  const t = HALF_TO_FLOAT;
  if (b.byteOffset % 2 === 0) {
    const h = new Uint16Array(b.buffer, b.byteOffset, n);
    for (let i = 0; i < n; i++) out[i] = t[h[i]!]!;
  } else {
    for (let i = 0; i < n; i++) out[i] = t[b[2 * i]! | (b[2 * i + 1]! << 8)]!;
  }
}

function convertBF16(b: Uint8Array, out: Float32Array): void {
  // bfloat16 is the top half of a float32: shift the bits into place, NaN/inf/subnormals included.
  const n = out.length;
  const o = new Uint32Array(out.buffer, out.byteOffset, n);
  for (let i = 0; i < n; i++) o[i] = ((b[2 * i]! | (b[2 * i + 1]! << 8)) << 16) >>> 0;
}

// block_q8_0: f16 d, int8 qs[32]; y = d * q.
function dequantQ8_0(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 5;
  // A signed view of the same bytes avoids sign-extending each quant by hand.
  const s = new Int8Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 34, o += 32) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    for (let j = 0; j < 32; j++) out[o + j] = s[p + 2 + j]! * d;
  }
}

// block_q4_0: f16 d, u8 qs[16]; low nibbles are elements 0..15, high nibbles 16..31; y = (q - 8) * d.
function dequantQ4_0(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 5;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 18, o += 32) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    for (let j = 0; j < 16; j++) {
      const q = b[p + 2 + j]!;
      out[o + j] = ((q & 15) - 8) * d;
      out[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

// block_q4_1: f16 d, f16 m, u8 qs[16]; y = q * d + m.
function dequantQ4_1(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 5;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 20, o += 32) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    const m = t[b[p + 2]! | (b[p + 3]! << 8)]!;
    for (let j = 0; j < 16; j++) {
      const q = b[p + 4 + j]!;
      out[o + j] = (q & 15) * d + m;
      out[o + j + 16] = (q >> 4) * d + m;
    }
  }
}

// block_q5_0: f16 d, u32 qh (bit j = 5th bit of element j), u8 qs[16]; y = (q - 16) * d.
function dequantQ5_0(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 5;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 22, o += 32) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    const qh = b[p + 2]! | (b[p + 3]! << 8) | (b[p + 4]! << 16) | (b[p + 5]! << 24);
    for (let j = 0; j < 16; j++) {
      const q = b[p + 6 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[o + j] = (((q & 15) | h0) - 16) * d;
      out[o + j + 16] = (((q >> 4) | h1) - 16) * d;
    }
  }
}

// block_q5_1: f16 d, f16 m, u32 qh, u8 qs[16]; y = q * d + m.
function dequantQ5_1(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 5;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 24, o += 32) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    const m = t[b[p + 2]! | (b[p + 3]! << 8)]!;
    const qh = b[p + 4]! | (b[p + 5]! << 8) | (b[p + 6]! << 16) | (b[p + 7]! << 24);
    for (let j = 0; j < 16; j++) {
      const q = b[p + 8 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[o + j] = ((q & 15) | h0) * d + m;
      out[o + j + 16] = ((q >> 4) | h1) * d + m;
    }
  }
}

/**
 * K-quant 6-bit scales and mins (ggml's get_scale_min_k4): 12 bytes hold 8 scales and 8 mins.
 * Sub-blocks 0..3 use the low 6 bits of bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 take
 * their low 4 bits from bytes 8..11 and their top 2 bits from the spare top bits of bytes 0..7.
 */
export function scaleMinK4(b: Uint8Array, s: number, j: number, sc: Int32Array): void {
  if (j < 4) {
    sc[0] = b[s + j]! & 63;
    sc[1] = b[s + j + 4]! & 63;
  } else {
    sc[0] = (b[s + j + 4]! & 0xf) | ((b[s + j - 4]! >> 6) << 4);
    sc[1] = (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4);
  }
}

// block_q4_K (144 bytes, 256 elements): f16 d, f16 dmin, u8 scales[12], u8 qs[128]. Eight
// sub-blocks of 32; each 32 bytes of qs hold two sub-blocks (low nibbles first). y = d*sc*q - dmin*m.
function dequantQ4_K(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const sm = new Int32Array(2);
  const nb = out.length >> 8;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 144, o += 256) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    const dmin = t[b[p + 2]! | (b[p + 3]! << 8)]!;
    const s = p + 4;
    let q = p + 16;
    for (let j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
      scaleMinK4(b, s, is, sm);
      const d1 = d * sm[0]!, m1 = dmin * sm[1]!;
      scaleMinK4(b, s, is + 1, sm);
      const d2 = d * sm[0]!, m2 = dmin * sm[1]!;
      const y = o + j;
      for (let l = 0; l < 32; l++) {
        const v = b[q + l]!;
        out[y + l] = d1 * (v & 15) - m1;
        out[y + 32 + l] = d2 * (v >> 4) - m2;
      }
    }
  }
}

// block_q5_K (176 bytes): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]. Like Q4_K, plus a
// fifth bit per element: bit (2k) of qh[l] for the low-nibble sub-block k, bit (2k+1) for the high one.
function dequantQ5_K(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const sm = new Int32Array(2);
  const nb = out.length >> 8;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 176, o += 256) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    const dmin = t[b[p + 2]! | (b[p + 3]! << 8)]!;
    const s = p + 4;
    const qh = p + 16;
    let ql = p + 48;
    for (let j = 0, is = 0, u = 0; j < 256; j += 64, is += 2, u += 2, ql += 32) {
      scaleMinK4(b, s, is, sm);
      const d1 = d * sm[0]!, m1 = dmin * sm[1]!;
      scaleMinK4(b, s, is + 1, sm);
      const d2 = d * sm[0]!, m2 = dmin * sm[1]!;
      const y = o + j;
      for (let l = 0; l < 32; l++) {
        const v = b[ql + l]!;
        const h = b[qh + l]!;
        out[y + l] = d1 * ((v & 15) | (((h >> u) & 1) << 4)) - m1;
        out[y + 32 + l] = d2 * ((v >> 4) | (((h >> (u + 1)) & 1) << 4)) - m2;
      }
    }
  }
}

// block_q6_K (210 bytes): u8 ql[128], u8 qh[64], int8 scales[16], f16 d. Two halves of 128
// elements; in each, ql[l] / ql[l+32] give low nibbles (elements l, l+32 low; l+64, l+96 high) and
// qh[l] gives the top 2 bits of all four, in bit pairs 0,2,4,6. y = d * scale[l/16 + 2k] * (q - 32).
function dequantQ6_K(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 8;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 210, o += 256) {
    const d = t[b[p + 208]! | (b[p + 209]! << 8)]!;
    for (let half = 0; half < 2; half++) {
      const ql = p + half * 64;
      const qh = p + 128 + half * 32;
      const sc = p + 192 + half * 8;
      const y = o + half * 128;
      // Scales change every 16 elements: hoist the four active ones (d * int8 scale is exact).
      for (let is = 0; is < 2; is++) {
        const s1 = d * ((b[sc + is]! << 24) >> 24);
        const s2 = d * ((b[sc + is + 2]! << 24) >> 24);
        const s3 = d * ((b[sc + is + 4]! << 24) >> 24);
        const s4 = d * ((b[sc + is + 6]! << 24) >> 24);
        for (let l = is * 16; l < is * 16 + 16; l++) {
          const a = b[ql + l]!, c = b[ql + l + 32]!, h = b[qh + l]!;
          out[y + l] = s1 * (((a & 15) | ((h & 3) << 4)) - 32);
          out[y + l + 32] = s2 * (((c & 15) | (((h >> 2) & 3) << 4)) - 32);
          out[y + l + 64] = s3 * (((a >> 4) | (((h >> 4) & 3) << 4)) - 32);
          out[y + l + 96] = s4 * (((c >> 4) | (((h >> 6) & 3) << 4)) - 32);
        }
      }
    }
  }
}

// block_q2_K (84 bytes): u8 scales[16] (low nibble the scale code, high nibble the min code of each
// sub-block of 16), u8 qs[64], f16 d, f16 dmin. Two halves of 128 elements; in each, element
// 32 * k + l is bits 2k..2k+1 of qs[half * 32 + l]. y = d * sc * q - dmin * m.
function dequantQ2_K(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 8;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 84, o += 256) {
    const d = t[b[p + 80]! | (b[p + 81]! << 8)]!;
    const dmin = t[b[p + 82]! | (b[p + 83]! << 8)]!;
    for (let e = 0; e < 256; e += 16) {
      const sc = b[p + (e >> 4)]!;
      const dl = d * (sc & 15), ml = dmin * (sc >> 4);
      const half = e >> 7, shift = ((e >> 5) & 3) * 2, l0 = e & 31;
      for (let l = l0; l < l0 + 16; l++) out[o + (e - l0) + l] = dl * ((b[p + 16 + half * 32 + l]! >> shift) & 3) - ml;
    }
  }
}

/**
 * Q3_K's sub-block scale code i (0..15) as the signed value it stands for (6 bits less 32): low
 * nibbles of bytes 0..7 for i < 8, their high nibbles for i >= 8, and the top two bits from bytes
 * 8..11, two bits per code (gguf-py's Q3_K.dequantize_blocks spells out the pattern).
 */
export function scaleQ3_K(b: Uint8Array, s: number, i: number): number {
  const low = (b[s + (i & 7)]! >> (4 * (i >> 3))) & 15;
  const high = (b[s + 8 + (i & 3)]! >> (2 * (i >> 2))) & 3;
  return (low | (high << 4)) - 32;
}

// block_q3_K (110 bytes): u8 hmask[32], u8 qs[64], u8 scales[12], f16 d. Element 128 * h + 32 * k + l
// takes bits 2k..2k+1 of qs[32 h + l] and bit (4 h + k) of hmask[l]; a clear hmask bit subtracts 4.
// y = d * scale * (q - 4 * (1 - bit)).
function dequantQ3_K(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 8;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 110, o += 256) {
    const d = t[b[p + 108]! | (b[p + 109]! << 8)]!;
    for (let e = 0; e < 256; e += 16) {
      const dl = d * scaleQ3_K(b, p + 96, e >> 4);
      const half = e >> 7, k = (e >> 5) & 3, l0 = e & 31, bit = 4 * half + k;
      for (let l = l0; l < l0 + 16; l++) {
        const q = ((b[p + 32 + half * 32 + l]! >> (2 * k)) & 3) - ((b[p + l]! >> bit) & 1 ? 0 : 4);
        out[o + (e - l0) + l] = dl * q;
      }
    }
  }
}

/** IQ4_NL's 16 non-linear levels (ggml-common.h kvalues_iq4nl), shared by IQ4_XS. */
export const IQ4_LEVELS: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/**
 * 32 IQ4 weights: the 16 bytes from b[qs] hold indices into IQ4_LEVELS, low nibbles for elements
 * 0..15, high nibbles for 16..31; each weight is scale * level. Shared by IQ4_NL and IQ4_XS.
 */
function iq4Weights(b: Uint8Array, qs: number, scale: number, out: Float32Array, y: number): void {
  const k = IQ4_LEVELS;
  for (let j = 0; j < 16; j++) {
    const q = b[qs + j]!;
    out[y + j] = scale * k[q & 15]!;
    out[y + j + 16] = scale * k[q >> 4]!;
  }
}

// block_iq4_nl (18 bytes, 32 elements): f16 d, u8 qs[16] (iq4Weights). y = d * level.
function dequantIQ4_NL(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 5;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 18, o += 32) iq4Weights(b, p + 2, t[b[p]! | (b[p + 1]! << 8)]!, out, o);
}

/** IQ4_XS's sub-block (of 32) scale code ib (0..7) as the signed value it stands for: 4 low bits from scales_l, 2 high from scales_h, less 32. */
export function scaleIQ4_XS(b: Uint8Array, p: number, ib: number): number {
  const low = (b[p + 4 + (ib >> 1)]! >> (4 * (ib & 1))) & 15;
  const high = ((b[p + 2]! | (b[p + 3]! << 8)) >> (2 * ib)) & 3;
  return (low | (high << 4)) - 32;
}

// block_iq4_xs (136 bytes, 256 elements): f16 d, u16 scales_h, u8 scales_l[4], u8 qs[128]. Eight
// sub-blocks of 32, each laid out like an IQ4_NL block's quants. y = d * scale * level.
function dequantIQ4_XS(b: Uint8Array, out: Float32Array): void {
  const t = HALF_TO_FLOAT;
  const nb = out.length >> 8;
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 136, o += 256) {
    const d = t[b[p]! | (b[p + 1]! << 8)]!;
    for (let ib = 0; ib < 8; ib++) iq4Weights(b, p + 8 + ib * 16, d * scaleIQ4_XS(b, p, ib), out, o + ib * 32);
  }
}
