/**
 * GGUF header reader: metadata and tensor directory, without touching tensor data.
 *
 * Format (little-endian; https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
 *   magic "GGUF", u32 version, u64 tensor_count, u64 kv_count,
 *   kv_count x (string key, u32 value_type, value),
 *   tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset),
 *   padding to `general.alignment` (default 32), then the data section; tensor offsets are
 *   relative to its start. Strings are u64 length + UTF-8 bytes (no terminator).
 *
 * The header is read through a small buffered reader (fs.readSync in chunks) because model files
 * are hundreds of MB to many GB while the header, even with a 262k-token vocabulary, is a few MB.
 * Everything in the header is untrusted: every length and count is checked against the bytes left
 * in the file before anything is allocated, so a corrupt or truncated file gives one UserError
 * line instead of a RangeError, a giant allocation or a hang.
 */
import fs from "node:fs";
import path from "node:path";
import { UserError, check } from "../errors.js";
import { openForReading } from "./files.js";
import { SUPPORTED_DTYPES } from "./dequantize.js";
import { CONFIG_LIMITS } from "./sanity.js";
import type { GgufMetadata, GgufValue, TensorRef } from "./tensor-ref.js";

export interface GgufFile {
  /** Absolute path of the file. */
  path: string;
  /** GGUF version (2 or 3; they differ only in 64-bit counts vs big-endian support, both read here). */
  version: number;
  fileSize: number;
  /** Alignment of tensor data, from `general.alignment` or the default 32. */
  alignment: number;
  /** Absolute offset of the data section; TensorRef offsets already include it. */
  dataOffset: number;
  metadata: GgufMetadata;
  tensors: TensorRef[];
}

/** ggml type ids (ggml.h `enum ggml_type`), so that unsupported types are named, not numbered. */
const GGML_TYPE_NAMES: Record<number, string> = {
  0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_2 (removed from ggml)", 5: "Q4_3 (removed from ggml)",
  6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K",
  14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
  21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
  29: "IQ1_M", 30: "BF16", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8", 34: "TQ1_0", 35: "TQ2_0",
  36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
};

/** GGUF metadata value types (gguf.md `gguf_metadata_value_type`). */
const enum VT {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}
/** Encoded size of each fixed-size value type; strings and arrays are variable (0 here). */
const VT_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
/** Smallest encoding of one array element: strings are at least their u64 length, arrays type + count. */
const VT_MIN_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/** Limits that no real file comes near; past them the header is corrupt, not just large. */
const MAX_TENSORS = 1_000_000;
const MAX_KV = 1_000_000;
const MAX_ARRAY_DEPTH = 8;
const MAX_DIMS = 4; // GGML_MAX_DIMS

/** A value's name for error messages, built only when an error needs it. */
type Name = string | (() => string);
const name = (n: Name): string => (typeof n === "string" ? n : n());

/**
 * Buffered sequential reader over the file. `need(n)` guarantees bytes [pos, pos+n) are in `buf`
 * (re-reading from `pos`, growing the buffer for big items); asking for bytes past the end throws a
 * UserError that says what was being read.
 */
class HeaderReader {
  private buf: Buffer;
  private bufStart = 0; // file offset of buf[0]
  private bufLen = 0; // valid bytes in buf
  pos = 0; // absolute file offset of the next byte to read
  /** What is being read, for error messages ("metadata key 'x'", "tensor info 12"). */
  context = "the header";

  constructor(
    private readonly fd: number,
    readonly fileSize: number,
    private readonly name: string,
  ) {
    this.buf = Buffer.allocUnsafe(1 << 20);
  }

  fail(problem: string): never {
    throw new UserError(`${this.name}: ${problem} (while reading ${this.context})`);
  }

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Ensures n bytes at `pos` are buffered and returns their index in `buf`. */
  private need(n: number): number {
    if (n > this.remaining) {
      this.fail(`file ends at byte ${this.fileSize}, inside the GGUF header; the file is truncated or corrupt`);
    }
    const rel = this.pos - this.bufStart;
    if (rel >= 0 && rel + n <= this.bufLen) return rel;
    // Refill from `pos`: grow when a single item (a long string, a numeric array) exceeds the buffer.
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(Math.max(n, this.buf.length * 2));
    const want = Math.min(this.buf.length, this.fileSize - this.pos);
    let got = 0;
    while (got < want) {
      const r = fs.readSync(this.fd, this.buf, got, want - got, this.pos + got);
      if (r === 0) break; // file shrank under us: handled by the check below
      got += r;
    }
    this.bufStart = this.pos;
    this.bufLen = got;
    if (got < n) this.fail(`file ends before the end of the GGUF header (at byte ${this.pos + got}); the file is truncated`);
    return 0;
  }

  u8(): number {
    const i = this.need(1);
    this.pos += 1;
    return this.buf[i]!;
  }
  u32(): number {
    const i = this.need(4);
    this.pos += 4;
    return this.buf.readUInt32LE(i);
  }
  /** u64 as a number; values past 2^53 cannot be exact and mean a corrupt header. */
  u64(what: string): number {
    const i = this.need(8);
    this.pos += 8;
    const lo = this.buf.readUInt32LE(i);
    const hi = this.buf.readUInt32LE(i + 4);
    if (hi >= 0x200000) this.fail(`${what} is ${(BigInt(hi) << 32n) | BigInt(lo)}, too large to be exact in JavaScript`);
    return hi * 0x1_0000_0000 + lo;
  }
  i64(what: string): number {
    const i = this.need(8);
    this.pos += 8;
    const v = this.buf.readBigInt64LE(i);
    const n = Number(v);
    if (!Number.isSafeInteger(n)) this.fail(`${what} is ${v}, too large to be exact in JavaScript`);
    return n;
  }

  /** `what` names the value for error messages; a function so that a 262k-entry vocabulary does not build 262k names. */
  string(what: Name): string {
    const len = this.u64(`length of ${name(what)}`);
    if (len > this.remaining) {
      this.fail(`${name(what)} claims ${len} bytes but only ${this.remaining} remain in the file; the file is truncated or corrupt`);
    }
    const i = this.need(len);
    this.pos += len;
    return this.buf.toString("utf8", i, i + len);
  }

  /** One value of type `type`; `depth` bounds array nesting so a crafted file cannot blow the stack. */
  value(type: number, what: Name, depth: number): GgufValue {
    const b = () => this.buf;
    switch (type) {
      case VT.UINT8: return this.u8();
      case VT.INT8: { const i = this.need(1); this.pos += 1; return b().readInt8(i); }
      case VT.UINT16: { const i = this.need(2); this.pos += 2; return b().readUInt16LE(i); }
      case VT.INT16: { const i = this.need(2); this.pos += 2; return b().readInt16LE(i); }
      case VT.UINT32: return this.u32();
      case VT.INT32: { const i = this.need(4); this.pos += 4; return b().readInt32LE(i); }
      case VT.FLOAT32: { const i = this.need(4); this.pos += 4; return b().readFloatLE(i); }
      case VT.BOOL: {
        const v = this.u8();
        if (v > 1) this.fail(`${name(what)} is a bool with byte value ${v} (must be 0 or 1)`);
        return v === 1;
      }
      case VT.STRING: return this.string(what);
      case VT.UINT64: return this.u64(name(what));
      case VT.INT64: return this.i64(name(what));
      case VT.FLOAT64: { const i = this.need(8); this.pos += 8; return b().readDoubleLE(i); }
      case VT.ARRAY: return this.array(what, depth);
      default: this.fail(`${name(what)} has unknown value type ${type}`);
    }
  }

  private array(what: Name, depth: number): GgufValue[] {
    if (depth >= MAX_ARRAY_DEPTH) this.fail(`${name(what)} nests arrays more than ${MAX_ARRAY_DEPTH} deep`);
    const elemType = this.u32();
    if (elemType > VT.FLOAT64) this.fail(`${name(what)} is an array of unknown value type ${elemType}`);
    const count = this.u64(`element count of ${name(what)}`);
    if (count * VT_MIN_SIZE[elemType]! > this.remaining) {
      this.fail(`${name(what)} claims ${count} elements but only ${this.remaining} bytes remain in the file; the file is truncated or corrupt`);
    }
    const out: GgufValue[] = new Array(count);
    const size = VT_SIZE[elemType]!;
    if (size > 0 && elemType !== VT.BOOL) {
      // Fixed-size numbers (token scores, token types: 262k of them in Gemma 3): decode in one pass.
      const i0 = this.need(count * size);
      const buf = this.buf;
      for (let k = 0, i = i0; k < count; k++, i += size) {
        switch (elemType) {
          case VT.UINT8: out[k] = buf[i]!; break;
          case VT.INT8: out[k] = buf.readInt8(i); break;
          case VT.UINT16: out[k] = buf.readUInt16LE(i); break;
          case VT.INT16: out[k] = buf.readInt16LE(i); break;
          case VT.UINT32: out[k] = buf.readUInt32LE(i); break;
          case VT.INT32: out[k] = buf.readInt32LE(i); break;
          case VT.FLOAT32: out[k] = buf.readFloatLE(i); break;
          case VT.FLOAT64: out[k] = buf.readDoubleLE(i); break;
          default: {
            // 64-bit integers: keep the exactness check of the scalar path.
            this.pos = this.bufStart + i;
            out[k] = elemType === VT.UINT64 ? this.u64(`${name(what)}[${k}]`) : this.i64(`${name(what)}[${k}]`);
          }
        }
      }
      this.pos = this.bufStart + i0 + count * size;
    } else if (elemType === VT.STRING) {
      // The vocabulary (up to 262k strings) and merges: the hot path of header parsing, so no
      // per-element closures or names (they doubled the parse time through garbage collection).
      for (let k = 0; k < count; k++) {
        const i = this.need(8);
        const lo = this.buf.readUInt32LE(i), hi = this.buf.readUInt32LE(i + 4);
        const len = hi * 0x1_0000_0000 + lo;
        if (len > this.remaining - 8) this.string(() => `${name(what)}[${k}]`); // throws the precise error
        this.pos += 8;
        const j = this.need(len);
        this.pos += len;
        out[k] = this.buf.toString("utf8", j, j + len);
      }
    } else {
      for (let k = 0; k < count; k++) out[k] = this.value(elemType, () => `${name(what)}[${k}]`, depth + 1);
    }
    return out;
  }
}

/** Reads the header of a GGUF file: metadata and tensor directory, validated against the file size. */
export function readGguf(file: string): GgufFile {
  const abs = path.resolve(file);
  const fd = openForReading(file, abs, "GGUF file");
  try {
    const fileSize = fs.fstatSync(fd).size;
    return parse(new HeaderReader(fd, fileSize, file), abs, file);
  } finally {
    fs.closeSync(fd);
  }
}

function parse(r: HeaderReader, abs: string, name: string): GgufFile {
  const fileSize = r.fileSize;
  if (fileSize < 4) throw new UserError(`${name}: not a GGUF file (only ${fileSize} bytes)`);
  const magic = r.u32();
  if (magic !== 0x46554747) {
    const text = Buffer.alloc(4);
    text.writeUInt32LE(magic);
    const shown = /^[\x20-\x7e]{4}$/.test(text.toString("latin1")) ? `"${text.toString("latin1")}"` : `0x${text.toString("hex")}`;
    throw new UserError(`${name}: not a GGUF file (starts with ${shown}, expected "GGUF")`);
  }
  const version = r.u32();
  if (version === 1) throw new UserError(`${name}: GGUF version 1 (from 2023) is not supported; re-convert the model with a current llama.cpp`);
  if (version === 0x02000000 || version === 0x03000000) {
    throw new UserError(`${name}: big-endian GGUF files are not supported; use the little-endian version of this model`);
  }
  if (version !== 2 && version !== 3) throw new UserError(`${name}: unknown GGUF version ${version} (logit-lens reads versions 2 and 3)`);

  r.context = "the header counts";
  const tensorCount = r.u64("tensor count");
  const kvCount = r.u64("metadata count");
  check(tensorCount <= MAX_TENSORS, `${name}: header claims ${tensorCount} tensors (more than ${MAX_TENSORS}); the file is corrupt`);
  check(kvCount <= MAX_KV, `${name}: header claims ${kvCount} metadata entries (more than ${MAX_KV}); the file is corrupt`);

  const metadata: GgufMetadata = new Map();
  for (let k = 0; k < kvCount; k++) {
    r.context = `metadata entry ${k} of ${kvCount}`;
    const key = r.string("metadata key");
    r.context = `metadata key '${key}'`;
    if (metadata.has(key)) r.fail(`metadata key '${key}' appears twice`);
    const type = r.u32();
    metadata.set(key, r.value(type, `metadata '${key}'`, 0));
  }

  let alignment = 32;
  const al = metadata.get("general.alignment");
  if (al !== undefined) {
    check(typeof al === "number" && Number.isInteger(al) && al > 0 && (al & (al - 1)) === 0,
      `${name}: general.alignment is ${JSON.stringify(al)}, not a positive power of two`);
    alignment = al;
  }

  interface Info { name: string; ne: number[]; typeId: number; offset: number }
  const infos: Info[] = [];
  const seen = new Set<string>();
  for (let t = 0; t < tensorCount; t++) {
    r.context = `tensor info ${t} of ${tensorCount}`;
    const tname = r.string("tensor name");
    r.context = `tensor info '${tname}'`;
    if (seen.has(tname)) r.fail(`tensor '${tname}' appears twice`);
    seen.add(tname);
    const nDims = r.u32();
    if (nDims > MAX_DIMS) r.fail(`tensor ${tname} has ${nDims} dimensions (ggml allows at most ${MAX_DIMS})`);
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) ne.push(r.u64(`dimension ${d} of tensor ${tname}`));
    const typeId = r.u32();
    const offset = r.u64(`data offset of tensor ${tname}`);
    infos.push({ name: tname, ne, typeId, offset });
  }

  // The data section starts at the first aligned offset after the header.
  const headerEnd = r.pos;
  const dataOffset = Math.ceil(headerEnd / alignment) * alignment;

  const supported = Object.keys(SUPPORTED_DTYPES).join(", ");
  const tensors: TensorRef[] = infos.map((info) => {
    const typeName = GGML_TYPE_NAMES[info.typeId];
    const dtypeInfo = typeName !== undefined ? SUPPORTED_DTYPES[typeName] : undefined;
    if (!dtypeInfo) {
      throw new UserError(`${name}: tensor ${info.name} has type ${typeName ?? `id ${info.typeId} (unknown)`}, which logit-lens does not support (supported: ${supported})`);
    }
    let count = 1;
    for (const d of info.ne) count *= d;
    check(Number.isSafeInteger(count), `${name}: tensor ${info.name} has an absurd shape [${info.ne.join(", ")}]`);
    const ne0 = info.ne.length > 0 ? info.ne[0]! : 1;
    check(ne0 % dtypeInfo.blockSize === 0,
      `${name}: tensor ${info.name} has rows of ${ne0} elements, not a multiple of the ${typeName} block size ${dtypeInfo.blockSize}`);
    const byteLength = (count / dtypeInfo.blockSize) * dtypeInfo.typeSize;
    check(info.offset % alignment === 0,
      `${name}: tensor ${info.name} starts at data offset ${info.offset}, which is not aligned to ${alignment} bytes; the file is corrupt`);
    const start = dataOffset + info.offset;
    check(start + byteLength <= fileSize,
      `${name}: tensor ${info.name} needs bytes ${start}..${start + byteLength} but the file has only ${fileSize} bytes; the file is truncated (incomplete download?)`);
    return {
      name: info.name,
      // ggml lists dimensions innermost first (ne[0] = row length); TensorRef is outermost first.
      shape: info.ne.slice().reverse(),
      dtype: typeName!,
      file: abs,
      offset: start,
      byteLength,
    };
  });

  checkModelNumbers(name, metadata, tensors);
  return { path: abs, version, fileSize, alignment, dataOffset, metadata, tensors };
}

const LIMITS = { ...CONFIG_LIMITS, ffn: CONFIG_LIMITS.intermediate };

/**
 * The model's declared sizes, checked before any code sizes an array by them: `block_count` of
 * 2^32-1 would otherwise have the config code allocate until V8 aborts, even in `inspect`; a
 * negative norm epsilon or a zero rotary base would make every activation NaN. Where the tensors
 * are present (not in vocabulary-only files) the counts must also match them.
 */
function checkModelNumbers(name: string, metadata: GgufMetadata, tensors: TensorRef[]): void {
  const arch = metadata.get("general.architecture");
  if (typeof arch !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(arch)) return; // reported by the loader
  const values = (key: string): unknown[] | undefined => {
    const v = metadata.get(`${arch}.${key}`);
    if (v === undefined) return undefined;
    // Per-layer arrays (some models give head counts or FFN sizes per layer) are checked element-wise.
    return Array.isArray(v) ? (v.length === 0 ? [v] : v) : [v];
  };
  const count = (key: string, max: number, min = 1): number | undefined => {
    const vs = values(key);
    if (vs === undefined) return undefined;
    if (vs.length > LIMITS.layers) throw new UserError(`${name}: metadata '${arch}.${key}' lists ${vs.length} values, more than ${LIMITS.layers} layers; the file is corrupt`);
    for (const v of vs) {
      if (typeof v === "boolean") continue; // per-layer flags (Gemma 4's sliding_window_pattern), not a count
      if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
        if (v === 0 && key === "block_count") throw new UserError(`${name}: metadata '${arch}.block_count' is 0: a model needs at least one layer`);
        throw new UserError(`${name}: metadata '${arch}.${key}' is ${JSON.stringify(v)?.slice(0, 40)}, not a plausible value (an integer from ${min} to ${max}); the file is corrupt`);
      }
    }
    return typeof vs[0] === "number" ? vs[0] : undefined;
  };
  const positive = (key: string, what: string): void => {
    for (const v of values(key) ?? []) {
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
        throw new UserError(`${name}: metadata '${arch}.${key}' is ${JSON.stringify(v)?.slice(0, 40)}, but ${what} must be a finite number above 0; every activation would come out NaN or meaningless`);
      }
    }
  };
  const blocks = count("block_count", LIMITS.layers);
  const hidden = count("embedding_length", LIMITS.hidden);
  count("attention.head_count", LIMITS.heads);
  count("attention.head_count_kv", LIMITS.heads);
  count("attention.key_length", LIMITS.headDim);
  count("attention.value_length", LIMITS.headDim);
  count("feed_forward_length", LIMITS.ffn);
  count("context_length", LIMITS.context);
  count("vocab_size", LIMITS.vocab);
  count("attention.sliding_window", LIMITS.context, 0); // 0: no sliding window (Phi-3 GGUFs)
  count("attention.sliding_window_pattern", LIMITS.layers);
  positive("attention.layer_norm_rms_epsilon", "the norm epsilon");
  positive("attention.layer_norm_epsilon", "the norm epsilon");
  positive("rope.freq_base", "the rotary base");
  positive("rope.freq_base_swa", "the rotary base");
  positive("rope.scaling.factor", "the rotary scaling factor");
  for (const key of ["attn_logit_softcapping", "final_logit_softcapping"]) {
    // 0 means "none" to llama.cpp; only a negative or non-finite value is wrong.
    for (const v of values(key) ?? []) {
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new UserError(`${name}: metadata '${arch}.${key}' is ${JSON.stringify(v)}, not a soft-cap value`);
    }
  }

  if (tensors.length === 0) return; // a vocabulary-only file
  let maxBlock = -1;
  for (const t of tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) maxBlock = Math.max(maxBlock, Number(m[1]));
  }
  // (A file with no block tensors at all is left to the loader, which names the real problem:
  // an unsupported architecture, or the missing tensors.)
  if (blocks !== undefined && maxBlock >= 0 && blocks !== maxBlock + 1) {
    throw new UserError(`${name}: metadata '${arch}.block_count' is ${blocks} but the file holds tensors for ${maxBlock + 1} blocks; the file is corrupt`);
  }
  const embed = tensors.find((t) => t.name === "token_embd.weight");
  if (embed && embed.shape.length === 2) {
    const [rows, cols] = embed.shape as [number, number];
    if (hidden !== undefined && cols !== hidden) {
      throw new UserError(`${name}: metadata '${arch}.embedding_length' is ${hidden} but token_embd.weight has rows of ${cols}; the file is corrupt`);
    }
    // llama.cpp sizes the vocabulary by the token list and needs exactly that many embedding rows.
    const tokens = metadata.get("tokenizer.ggml.tokens");
    if (Array.isArray(tokens) && tokens.length !== rows) {
      throw new UserError(`${name}: the vocabulary lists ${tokens.length} tokens but the embedding (token_embd.weight) has ${rows} rows; the tokenizer does not belong to these weights`);
    }
  }
}
