/**
 * GGUF reader and dequantizer against gguf-py (the reference port of ggml): the fixture in
 * test/fixtures/quant/ was written and dequantized by tools/reference/make_quant_fixture.py.
 * Corruption tests patch temp copies of it and demand a one-line UserError, never a crash.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readGguf } from "../../src/formats/gguf.js";
import { readTensorF32, dequantizeBlocks, halfToFloat } from "../../src/formats/dequantize.js";
import { UserError } from "../../src/errors.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const root = REPO_ROOT;
const FIX = path.join(root, "test", "fixtures", "quant");
const GGUF = path.join(FIX, "quant.gguf");

interface RefTensor { name: string; dtype: string; shape: number[]; offset: number; count: number; fileOffset: number; byteLength: number }
const reference = JSON.parse(fs.readFileSync(path.join(FIX, "reference.json"), "utf8")) as {
  alignment: number; version: number; tensors: RefTensor[]; metadata: Record<string, { type: string; value: unknown }>;
};
const refBytes = fs.readFileSync(path.join(FIX, "reference.f32"));
const refValues = new Float32Array(refBytes.buffer.slice(refBytes.byteOffset, refBytes.byteOffset + refBytes.length));
const original = fs.readFileSync(GGUF);

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-gguf-"));
process.on("exit", () => fs.rmSync(tmpDir, { recursive: true, force: true }));
let tmpCounter = 0;
function writeTemp(bytes: Uint8Array): string {
  const p = path.join(tmpDir, `case${tmpCounter++}.gguf`);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Asserts readGguf on these bytes throws a one-line UserError whose message matches `pattern`. */
function expectUserError(bytes: Uint8Array, pattern: RegExp): string {
  const p = writeTemp(bytes);
  let caught: unknown;
  try {
    readGguf(p);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof UserError, `expected UserError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.match(caught.message, pattern);
  assert.ok(!caught.message.includes("\n"), `message should be one line: ${caught.message}`);
  assert.ok(caught.message.startsWith(p), `message should name the file: ${caught.message}`);
  return caught.message;
}

/** Byte position just after the GGUF string `s` (u64 length + bytes) in the fixture. */
function afterString(s: string): number {
  const enc = Buffer.from(s, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(enc.length));
  const at = original.indexOf(Buffer.concat([len, enc]));
  assert.ok(at >= 0, `fixture lacks string ${s}`);
  return at + 8 + enc.length;
}

/** Position of a tensor's info fields: after its name come u32 n_dims, u64 ne[n_dims], u32 type, u64 offset. */
function tensorInfo(name: string): { typeAt: number; offsetAt: number } {
  const p = afterString(name);
  const nDims = original.readUInt32LE(p);
  const typeAt = p + 4 + 8 * nDims;
  return { typeAt, offsetAt: typeAt + 4 };
}

function patched(f: (b: Buffer) => void, bytes: Buffer = original): Buffer {
  const b = Buffer.from(bytes);
  f(b);
  return b;
}

test("parses header, alignment and tensor directory like gguf-py", () => {
  const g = readGguf(GGUF);
  assert.equal(g.version, 3);
  assert.equal(g.alignment, 64);
  assert.equal(g.fileSize, original.length);
  assert.equal(g.path, path.resolve(GGUF));
  assert.equal(g.dataOffset % 64, 0);
  assert.equal(g.tensors.length, reference.tensors.length);
  for (const [i, ref] of reference.tensors.entries()) {
    const t = g.tensors[i]!;
    assert.equal(t.name, ref.name);
    assert.equal(t.dtype, ref.dtype);
    assert.deepEqual(t.shape, ref.shape, `${ref.name}: ne must be reversed into outermost-first order`);
    assert.equal(t.offset, ref.fileOffset, `${ref.name} offset`);
    assert.equal(t.byteLength, ref.byteLength, `${ref.name} byteLength`);
    assert.equal(t.file, path.resolve(GGUF));
  }
  assert.equal(g.tensors[0]!.offset, g.dataOffset);
});

test("metadata of every value type round-trips", () => {
  const g = readGguf(GGUF);
  assert.equal(g.metadata.get("general.architecture"), "llama");
  assert.equal(g.metadata.get("general.alignment"), 64);
  for (const [key, { type, value }] of Object.entries(reference.metadata)) {
    assert.ok(g.metadata.has(key), `missing ${key}`);
    assert.deepStrictEqual(g.metadata.get(key), value, `${key} (${type})`);
  }
  // Types as JS sees them: bools stay booleans, 64-bit integers are exact numbers.
  assert.equal(typeof g.metadata.get("test.true"), "boolean");
  assert.equal(g.metadata.get("test.u64"), Number.MAX_SAFE_INTEGER);
  assert.equal(g.metadata.get("test.i64"), -Number.MAX_SAFE_INTEGER);
});

function sameFloat(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

test("readTensorF32 matches gguf-py's dequantize exactly for every type", () => {
  const g = readGguf(GGUF);
  for (const ref of reference.tensors) {
    const t = g.tensors.find((x) => x.name === ref.name)!;
    const got = readTensorF32(t);
    assert.equal(got.length, ref.count, ref.name);
    const want = refValues.subarray(ref.offset, ref.offset + ref.count);
    let bad = 0, first = -1;
    for (let i = 0; i < got.length; i++) {
      if (!sameFloat(got[i]!, want[i]!)) { bad++; if (first < 0) first = i; }
    }
    assert.equal(bad, 0, `${ref.name} (${ref.dtype}): ${bad} mismatches, first at ${first}: got ${got[first]} want ${want[first]}`);
    // Not all zeros or constant: the fixture must actually exercise the format.
    assert.ok(new Set(got).size > 100, `${ref.name}: suspiciously few distinct values`);
  }
});

test("dequantizeBlocks works on in-memory bytes, also at unaligned offsets", () => {
  const g = readGguf(GGUF);
  for (const name of ["t.f32", "t.f16", "t.bf16", "t.q6_k"]) {
    const t = g.tensors.find((x) => x.name === name)!;
    const ref = reference.tensors.find((x) => x.name === name)!;
    // Copy to an odd offset inside a bigger buffer: typed-array views there would throw.
    const holder = new Uint8Array(t.byteLength + 3);
    holder.set(original.subarray(t.offset, t.offset + t.byteLength), 3);
    const got = dequantizeBlocks(t.dtype, holder.subarray(3), ref.count);
    const want = refValues.subarray(ref.offset, ref.offset + ref.count);
    for (let i = 0; i < got.length; i++) assert.ok(sameFloat(got[i]!, want[i]!), `${name}[${i}]`);
  }
  assert.throws(() => dequantizeBlocks("Q4_K", new Uint8Array(144), 100), UserError);
  assert.throws(() => dequantizeBlocks("IQ2_XXS", new Uint8Array(66), 256), /IQ2_XXS is not supported/);
});

test("half -> float covers subnormals, infinities, NaN and signed zero", () => {
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0x03ff), 1023 * 2 ** -24);
  assert.equal(halfToFloat(0x0400), 2 ** -14);
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.equal(halfToFloat(0xfc00), -Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  assert.ok(Object.is(halfToFloat(0x8000), -0));
});

test("corrupt files: bad magic, versions, absurd counts", () => {
  expectUserError(patched((b) => b.write("GGML", 0, "latin1")), /not a GGUF file \(starts with "GGML", expected "GGUF"\)/);
  expectUserError(patched((b) => b.writeUInt32LE(1, 4)), /GGUF version 1 .* not supported/);
  expectUserError(patched((b) => b.writeUInt32LE(7, 4)), /unknown GGUF version 7/);
  expectUserError(patched((b) => b.writeUInt32BE(3, 4)), /big-endian/);
  expectUserError(patched((b) => b.writeBigUInt64LE(2_000_000n, 8)), /claims 2000000 tensors/);
  expectUserError(patched((b) => b.writeBigUInt64LE(1n << 60n, 16)), /metadata count is \d+, too large/);
  expectUserError(Buffer.from("GG"), /not a GGUF file \(only 2 bytes\)/);
  expectUserError(Buffer.alloc(0), /not a GGUF file/);
});

test("corrupt files: truncated mid-header and mid-data", () => {
  const g = readGguf(GGUF);
  for (const cut of [6, 12, 20, 40, 200, afterString("test.string") + 6, g.dataOffset - 70]) {
    expectUserError(original.subarray(0, cut), /truncated/);
  }
  // Cut inside tensor data: the header parses, but the last tensor would read past the end.
  const last = g.tensors[g.tensors.length - 1]!;
  const msg = expectUserError(original.subarray(0, original.length - 100), /truncated/);
  assert.match(msg, new RegExp(`tensor ${last.name.replace(".", "\\.")} needs bytes`));
  expectUserError(original.subarray(0, g.dataOffset + 10), /tensor t\.f32 needs bytes .* truncated/);
  // Exactly the header, with no data at all.
  expectUserError(original.subarray(0, g.dataOffset), /truncated/);
});

test("corrupt files: lengths and offsets pointing past the end", () => {
  // The string value of test.string: after its key come u32 type (8 = STRING) and the u64 length.
  const strLen = afterString("test.string") + 4;
  assert.equal(original.readUInt32LE(strLen - 4), 8);
  expectUserError(patched((b) => b.writeBigUInt64LE(1_000_000_000n, strLen)), /metadata 'test\.string' claims 1000000000 bytes but only \d+ remain/);
  // The element count of test.strings (u32 type 9, u32 element type 8, u64 count).
  const arrCount = afterString("test.strings") + 8;
  expectUserError(patched((b) => b.writeBigUInt64LE(1n << 40n, arrCount)), /claims 1099511627776 elements/);
  // A key length that overflows 2^53.
  expectUserError(patched((b) => b.writeBigUInt64LE(0xffffffffffffffffn, 24)), /too large to be exact/);
  // A u64 metadata value beyond 2^53.
  const u64At = afterString("test.u64") + 4;
  expectUserError(patched((b) => b.writeBigUInt64LE(1n << 60n, u64At)), /metadata 'test\.u64' is 1152921504606846976, too large/);
  // Unknown value type and a bool that is not 0/1.
  expectUserError(patched((b) => b.writeUInt32LE(99, afterString("test.u8"))), /unknown value type 99/);
  expectUserError(patched((b) => b.writeUInt8(7, afterString("test.true") + 4)), /bool with byte value 7/);

  const { offsetAt } = tensorInfo("t.q6_k");
  expectUserError(patched((b) => b.writeBigUInt64LE(64n * 100000n, offsetAt)), new RegExp(`tensor t\\.q6_k needs bytes \\d+\\.\\.\\d+ but the file has only ${original.length} bytes; the file is truncated`));
  expectUserError(patched((b) => b.writeBigUInt64LE(b.readBigUInt64LE(offsetAt) + 4n, offsetAt)), /t\.q6_k starts at data offset \d+, which is not aligned to 64/);
  // Dimension product beyond 2^53.
  const dimAt = afterString("t.q4_0") + 4;
  expectUserError(patched((b) => { b.writeBigUInt64LE(1n << 52n, dimAt); b.writeBigUInt64LE(1n << 40n, dimAt + 8); }), /absurd shape/);
  // Row length not a multiple of the block size.
  expectUserError(patched((b) => b.writeBigUInt64LE(100n, dimAt)), /rows of 100 elements, not a multiple of the Q4_0 block size 32/);
  // Too many dimensions.
  expectUserError(patched((b) => b.writeUInt32LE(9, dimAt - 4)), /9 dimensions/);
  // general.alignment not a power of two.
  const alignAt = afterString("general.alignment") + 4;
  expectUserError(patched((b) => b.writeUInt32LE(48, alignAt)), /general\.alignment is 48, not a positive power of two/);
});

test("corrupt files: unsupported tensor types are named", () => {
  const { typeAt } = tensorInfo("t.q4_k");
  assert.equal(original.readUInt32LE(typeAt), 12);
  expectUserError(patched((b) => b.writeUInt32LE(16, typeAt)),
    /: tensor t\.q4_k has type IQ2_XXS, which logit-lens does not support \(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_NL, IQ4_XS\)$/);
  expectUserError(patched((b) => b.writeUInt32LE(18, typeAt)), /tensor t\.q4_k has type IQ3_XXS, which logit-lens does not support/);
  expectUserError(patched((b) => b.writeUInt32LE(9999, typeAt)), /tensor t\.q4_k has type id 9999 \(unknown\)/);
});

test("readTensorF32 reports a file truncated after parsing", () => {
  const p = writeTemp(original);
  const g = readGguf(p);
  fs.truncateSync(p, original.length - 300);
  const t = g.tensors[g.tensors.length - 1]!;
  assert.throws(() => readTensorF32(t), (e: unknown) => e instanceof UserError && /file ends inside tensor t\.f32_3d/.test(e.message));
});

test("fuzz: truncation at every header byte and random byte flips give UserError or success, nothing else", () => {
  const g = readGguf(GGUF);
  const check = (bytes: Uint8Array, what: string) => {
    const p = writeTemp(bytes);
    try {
      const parsed = readGguf(p);
      // A flip that still parses must describe tensors inside the file.
      for (const t of parsed.tensors) assert.ok(t.offset + t.byteLength <= parsed.fileSize, what);
    } catch (e) {
      assert.ok(e instanceof UserError, `${what}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
    fs.rmSync(p);
  };
  for (let cut = 0; cut <= g.dataOffset; cut += 3) check(original.subarray(0, cut), `cut at ${cut}`);
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < 1500; i++) {
    const b = Buffer.from(original);
    const flips = 1 + Math.floor(rand() * 3);
    for (let f = 0; f < flips; f++) b[Math.floor(rand() * g.dataOffset)] = Math.floor(rand() * 256);
    check(b, `flip case ${i}`);
  }
});
