/**
 * Rewrites a GGUF with its matrices quantized to another ggml type, for tests: the metadata bytes
 * are copied as they are, the tensor table is rewritten, and the chosen tensors are quantized from
 * their fp32 values by round-to-nearest (the layouts of ggml-quants.c; the rounding rule does not
 * matter to the tests, which compare two readings of the same written file).
 */
import fs from "node:fs";
import { byteLengthOf, dequantizeBlocks } from "../../src/formats/dequantize.js";

const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q2_K: 10, Q3_K: 11, IQ4_NL: 20, IQ4_XS: 23 } as const;
/** Source types it reads besides F32 (dequantized by the product's own decoder first). */
const SOURCE_TYPES: Record<number, string> = { 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 20: "IQ4_NL", 23: "IQ4_XS", 30: "BF16" };
export type SimpleQuant = "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "Q8_0" | "IQ4_NL";
/** Types made of super-blocks of 256 (rows must be whole super-blocks). */
export type SuperBlockQuant = "Q2_K" | "Q3_K" | "IQ4_XS";
const SUPER_BLOCK_BYTES: Record<SuperBlockQuant, number> = { Q2_K: 84, Q3_K: 110, IQ4_XS: 136 };
const BLOCK_BYTES: Record<SimpleQuant, number> = { Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q8_0: 34, IQ4_NL: 18 };
const IQ4_LEVELS = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** The index of the IQ4 level nearest to t. */
function nearestLevel(t: number): number {
  let best = 0;
  for (let i = 1; i < 16; i++) if (Math.abs(IQ4_LEVELS[i]! - t) < Math.abs(IQ4_LEVELS[best]! - t)) best = i;
  return best;
}

/** The element of largest magnitude, with its sign. */
function signedMax(v: Float32Array): number {
  let m = 0;
  for (const t of v) if (Math.abs(t) > Math.abs(m)) m = t;
  return m;
}

class Reader {
  pos = 0;
  constructor(readonly b: Buffer) {}
  u32(): number { const v = this.b.readUInt32LE(this.pos); this.pos += 4; return v; }
  u64(): number { const v = Number(this.b.readBigUInt64LE(this.pos)); this.pos += 8; return v; }
  str(): string { const n = this.u64(); const s = this.b.toString("utf8", this.pos, this.pos + n); this.pos += n; return s; }
  skipValue(type: number): void {
    const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
    if (type === 8) this.str();
    else if (type === 9) {
      const inner = this.u32();
      const n = this.u64();
      for (let i = 0; i < n; i++) this.skipValue(inner);
    } else this.pos += sizes[type]!;
  }
}

// One scratch word for the float's bits (a new array per call made a 135M-weight model take minutes).
const SCRATCH_F32 = new Float32Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_F32.buffer);

function f16(x: number): number {
  // float32 -> IEEE half, round to nearest even (normal range is all the scales need).
  SCRATCH_F32[0] = x;
  const u = SCRATCH_U32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) return sign; // scales of zero rows
  if (exp >= 31) return sign | 0x7c00;
  let h = sign | (exp << 10) | (mant >> 13);
  mant &= 0x1fff;
  if (mant > 0x1000 || (mant === 0x1000 && h & 1)) h++;
  return h;
}
/** float32 -> IEEE half for any weight value, subnormals included (f16 above covers the normal range only). */
function f16Any(x: number): number {
  const a = Math.abs(x);
  if (a >= 6.103515625e-5 || a === 0) return f16(x) & (a === 0 ? 0x8000 : 0xffff);
  // Subnormal halves: multiples of 2^-24, rounded to nearest.
  return (x < 0 ? 0x8000 : 0) | Math.round(a / 2 ** -24);
}
function half(h: number): number {
  const exp = (h >> 10) & 0x1f, mant = h & 0x3ff, s = h & 0x8000 ? -1 : 1;
  return exp === 0 ? s * mant * 2 ** -24 : s * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Quantizes `x` (a whole number of 32-element blocks) into ggml blocks of `type`. */
export function quantizeBlocks(type: SimpleQuant, x: Float32Array): Buffer {
  const nb = x.length / 32;
  const out = Buffer.alloc(nb * BLOCK_BYTES[type]);
  for (let i = 0; i < nb; i++) {
    const v = x.subarray(i * 32, i * 32 + 32);
    const p = i * BLOCK_BYTES[type];
    let amax = 0, max = 0, lo = Infinity, hi = -Infinity;
    for (const t of v) { if (Math.abs(t) > amax) { amax = Math.abs(t); max = t; } lo = Math.min(lo, t); hi = Math.max(hi, t); }
    const q = new Int32Array(32);
    if (type === "IQ4_NL") {
      // ggml's choice of sign: the largest-magnitude weight maps to the level -127.
      const dRaw = max / -127, d = half(f16(dRaw));
      out.writeUInt16LE(f16(dRaw), p);
      for (let j = 0; j < 16; j++) out[p + 2 + j] = nearestLevel(d ? v[j]! / d : 0) | (nearestLevel(d ? v[j + 16]! / d : 0) << 4);
      continue;
    }
    if (type === "Q8_0") {
      const d = half(f16(amax / 127));
      out.writeUInt16LE(f16(amax / 127), p);
      for (let j = 0; j < 32; j++) out.writeInt8(d ? Math.max(-127, Math.min(127, Math.round(v[j]! / d))) : 0, p + 2 + j);
      continue;
    }
    const bits = type === "Q4_0" || type === "Q4_1" ? 4 : 5;
    const top = (1 << bits) - 1;
    const symmetric = type === "Q4_0" || type === "Q5_0";
    const dRaw = symmetric ? max / -(1 << (bits - 1)) : (hi - lo) / top;
    const d = half(f16(dRaw));
    const m = symmetric ? 0 : half(f16(lo));
    for (let j = 0; j < 32; j++) {
      const t = symmetric ? v[j]! / (d || 1) + (1 << (bits - 1)) : (v[j]! - m) / (d || 1);
      q[j] = Math.max(0, Math.min(top, Math.round(t)));
    }
    let o = p;
    out.writeUInt16LE(f16(dRaw), o); o += 2;
    if (!symmetric) { out.writeUInt16LE(f16(lo), o); o += 2; }
    if (bits === 5) {
      let qh = 0;
      for (let j = 0; j < 32; j++) qh |= ((q[j]! >> 4) & 1) << j;
      out.writeUInt32LE(qh >>> 0, o); o += 4;
    }
    for (let j = 0; j < 16; j++) out[o + j] = (q[j]! & 15) | ((q[j + 16]! & 15) << 4);
  }
  return out;
}

/**
 * Quantizes `x` (a whole number of 256-element super-blocks) into ggml blocks of a K-quant or
 * IQ4_XS, round to nearest with sub-block scales from each sub-block's extremes (the layouts of
 * ggml-quants.c; not llama.cpp's error-minimising search, which the tests do not need).
 */
export function quantizeSuperBlocks(type: SuperBlockQuant, x: Float32Array): Buffer {
  const nb = x.length / 256;
  const bytes = SUPER_BLOCK_BYTES[type];
  const out = Buffer.alloc(nb * bytes);
  const clamp = (t: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, t));
  for (let i = 0; i < nb; i++) {
    const v = x.subarray(i * 256, i * 256 + 256);
    const p = i * bytes;
    if (type === "IQ4_XS") {
      const s = Array.from({ length: 8 }, (_, ib) => signedMax(v.subarray(ib * 32, ib * 32 + 32)) / -127);
      const dRaw = Math.max(...s.map(Math.abs)) / 32, d = half(f16(dRaw));
      out.writeUInt16LE(f16(dRaw), p);
      let scalesH = 0;
      for (let ib = 0; ib < 8; ib++) {
        const ls = clamp(d ? Math.round(s[ib]! / d) : 0, -32, 31) + 32;
        scalesH |= (ls >> 4) << (2 * ib);
        out[p + 4 + (ib >> 1)] |= (ls & 15) << (4 * (ib & 1));
        const dl = d * (ls - 32);
        for (let j = 0; j < 16; j++) {
          const a = v[ib * 32 + j]!, b = v[ib * 32 + j + 16]!;
          out[p + 8 + ib * 16 + j] = nearestLevel(dl ? a / dl : 0) | (nearestLevel(dl ? b / dl : 0) << 4);
        }
      }
      out.writeUInt16LE(scalesH, p + 2);
      continue;
    }
    // Q2_K and Q3_K: sub-blocks of 16; element 128 h + 32 k + l sits in bits 2k of qs[32 h + l].
    const sub = (j: number) => v.subarray(j * 16, j * 16 + 16);
    const place = (e: number) => ({ at: 32 * (e >> 7) + (e & 31), k: (e >> 5) & 3, h: e >> 7 });
    if (type === "Q3_K") {
      const qs = p + 32;
      const s = Array.from({ length: 16 }, (_, j) => signedMax(sub(j)) / -4); // q in -4..3
      const dRaw = Math.max(...s.map(Math.abs)) / 32, d = half(f16(dRaw));
      for (let j = 0; j < 16; j++) {
        const code = clamp(d ? Math.round(s[j]! / d) : 0, -32, 31), sc6 = code + 32;
        out[p + 96 + (j & 7)] |= (sc6 & 15) << (4 * (j >> 3));
        out[p + 104 + (j & 3)] |= ((sc6 >> 4) & 3) << (2 * (j >> 2));
        const dl = d * code;
        for (let l = 0; l < 16; l++) {
          const e = j * 16 + l, w = place(e);
          const q = clamp(dl ? Math.round(v[e]! / dl) : 0, -4, 3);
          const bit = q >= 0 ? 1 : 0;
          out[qs + w.at] |= (bit ? q : q + 4) << (2 * w.k);
          out[p + (e & 31)] |= bit << (4 * w.h + w.k);
        }
      }
      out.writeUInt16LE(f16(dRaw), p + 108);
      continue;
    }
    // Q2_K: w = d sc q - dmin m, q in 0..3
    const lo = Array.from({ length: 16 }, (_, j) => Math.min(0, ...sub(j)));
    const hi = Array.from({ length: 16 }, (_, j) => Math.max(...sub(j)));
    const scale = lo.map((m, j) => (hi[j]! - m) / 3);
    const dRaw = Math.max(...scale) / 15, dminRaw = Math.max(...lo.map((m) => -m)) / 15;
    const d = half(f16(dRaw)), dmin = half(f16(dminRaw));
    for (let j = 0; j < 16; j++) {
      const sc = clamp(d ? Math.round(scale[j]! / d) : 0, 0, 15), mc = clamp(dmin ? Math.round(-lo[j]! / dmin) : 0, 0, 15);
      out[p + j] = sc | (mc << 4);
      const dl = d * sc, ml = dmin * mc;
      for (let l = 0; l < 16; l++) {
        const e = j * 16 + l, w = place(e);
        out[p + 16 + w.at] |= clamp(dl ? Math.round((v[e]! + ml) / dl) : 0, 0, 3) << (2 * w.k);
      }
    }
    out.writeUInt16LE(f16(dRaw), p + 80);
    out.writeUInt16LE(f16(dminRaw), p + 82);
  }
  return out;
}

/**
 * Writes `to`: the GGUF `from` with every tensor that `pick(name, shape)` selects stored as `type`
 * (quant rows must be whole blocks of 32, or of 256 for the super-block types). Tensors of `from`
 * that are not F32 (a quantized model) are dequantized first; those not picked are then written as
 * F32. The metadata (including
 * general.file_type) is copied unchanged.
 */
export function requantizeGguf(from: string, to: string, type: SimpleQuant | SuperBlockQuant | "F16", pick: (name: string, shape: number[]) => boolean): void {
  rewriteGguf(from, to, (name, shape) => (pick(name, shape) ? type : undefined), false);
}

/**
 * Writes `to`: the GGUF `from` with each tensor that `choose` gives a type stored in that type (by
 * the same rules as requantizeGguf); every other tensor keeps its bytes and type as they are.
 */
export function requantizeGgufMixed(from: string, to: string, choose: (name: string, shape: number[]) => SimpleQuant | SuperBlockQuant | "F16" | undefined): void {
  rewriteGguf(from, to, choose, true);
}

function rewriteGguf(from: string, to: string, choose: (name: string, shape: number[]) => SimpleQuant | SuperBlockQuant | "F16" | undefined, keepOthers: boolean): void {
  const b = fs.readFileSync(from);
  const r = new Reader(b);
  if (b.toString("latin1", 0, 4) !== "GGUF") throw new Error(`${from}: not a GGUF`);
  r.pos = 4;
  const version = r.u32();
  const nTensors = r.u64();
  const nKv = r.u64();
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = r.str();
    const t = r.u32();
    if (key === "general.alignment") alignment = b.readUInt32LE(r.pos);
    r.skipValue(t);
  }
  const metaEnd = r.pos;
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = r.str();
    const n = r.u32();
    const dims = Array.from({ length: n }, () => r.u64());
    infos.push({ name, dims, type: r.u32(), offset: r.u64() });
  }
  const align = (x: number) => Math.ceil(x / alignment) * alignment;
  const dataStart = align(r.pos);

  const blobs: Buffer[] = [];
  const table: Buffer[] = [];
  let offset = 0;
  for (const info of infos) {
    const count = info.dims.reduce((a, c) => a * c, 1);
    const shape = [...info.dims].reverse(); // ggml ne -> row-major, outermost first
    const type = choose(info.name, shape);
    const superBlocks = type !== undefined && type in SUPER_BLOCK_BYTES;
    const picked = type !== undefined && shape.length === 2 && shape[1]! % (superBlocks ? 256 : 32) === 0;
    const dtype = info.type === GGML_TYPE.F32 ? "F32" : SOURCE_TYPES[info.type];
    if (!dtype) throw new Error(`${from}: requantizeGguf cannot read ggml type ${info.type} (${info.name})`);
    const raw = b.subarray(dataStart + info.offset, dataStart + info.offset + byteLengthOf(dtype, count));
    let data: Buffer = raw;
    let newType: number = info.type;
    if (picked || !keepOthers) {
      const floats = dtype === "F32" ? new Float32Array(Uint8Array.from(raw).buffer) : dequantizeBlocks(dtype, raw, count);
      data = Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength);
      newType = GGML_TYPE.F32;
      if (picked) {
        if (type === "F16") {
          const halves = new Uint16Array(count); // little-endian hosts, as GGUF files are
          for (let i = 0; i < count; i++) halves[i] = f16Any(floats[i]!);
          data = Buffer.from(halves.buffer);
        } else data = superBlocks ? quantizeSuperBlocks(type as SuperBlockQuant, floats) : quantizeBlocks(type as SimpleQuant, floats);
        newType = GGML_TYPE[type!];
      }
    }
    const nameBytes = Buffer.from(info.name, "utf8");
    const entry = Buffer.alloc(8 + nameBytes.length + 4 + 8 * info.dims.length + 4 + 8);
    let o = entry.writeBigUInt64LE(BigInt(nameBytes.length), 0);
    nameBytes.copy(entry, o); o += nameBytes.length;
    o = entry.writeUInt32LE(info.dims.length, o);
    for (const d of info.dims) o = entry.writeBigUInt64LE(BigInt(d), o);
    o = entry.writeUInt32LE(newType, o);
    entry.writeBigUInt64LE(BigInt(offset), o);
    table.push(entry);
    blobs.push(data, Buffer.alloc(align(data.length) - data.length));
    offset += align(data.length);
  }
  const head = Buffer.concat([b.subarray(0, metaEnd), ...table]);
  head.writeUInt32LE(version, 4);
  fs.writeFileSync(to, Buffer.concat([head, Buffer.alloc(align(head.length) - head.length), ...blobs]));
}
