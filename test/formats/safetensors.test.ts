/**
 * safetensors reader: files are built here byte by byte (8-byte LE header length, JSON header,
 * data), single and sharded, then corrupted; every bad file must give a one-line UserError.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readSafetensors, readSafetensorsFolder } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { UserError } from "../../src/errors.js";

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-st-"));
process.on("exit", () => fs.rmSync(tmpDir, { recursive: true, force: true }));
let counter = 0;
function freshDir(): string {
  const d = path.join(tmpDir, `d${counter++}`);
  fs.mkdirSync(d);
  return d;
}

interface Spec { dtype: string; shape: number[]; data: Buffer }

/** Serializes tensors the way the safetensors library does (data packed in order, offsets relative). */
function build(tensors: Record<string, Spec>, metadata?: Record<string, string>, headerOverride?: (h: Record<string, unknown>) => void): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  headerOverride?.(header);
  let json = Buffer.from(JSON.stringify(header), "utf8");
  // The format pads the header with spaces to 8 bytes; readers must accept that.
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, ...Object.values(tensors).map((t) => t.data)]);
}

const u16 = (vals: number[]) => Buffer.from(new Uint16Array(vals).buffer);
const f32 = (vals: number[]) => Buffer.from(new Float32Array(vals).buffer);

// Known conversions, bit pattern -> value.
const F16_CASES: [number, number][] = [
  [0x3c00, 1], [0xc000, -2], [0x7bff, 65504], [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24],
  [0x3555, 0.333251953125], [0x7c00, Infinity], [0xfc00, -Infinity], [0x8000, -0], [0x7e00, NaN],
];
const BF16_CASES: [number, number][] = [
  [0x3f80, 1], [0xc000, -2], [0x4049, 3.140625], [0x7f80, Infinity], [0xff80, -Infinity],
  [0x0001, 2 ** -133], [0x8000, -0], [0x7fc0, NaN], [0x7f7f, 3.3895313892515355e38],
];

function sameFloat(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

function expectUserError(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof UserError, `expected UserError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.match(caught.message, pattern);
  assert.ok(!caught.message.includes("\n"));
}

test("single file: metadata, refs, F32/F16/BF16 values", () => {
  const dir = freshDir();
  const file = path.join(dir, "model.safetensors");
  fs.writeFileSync(file, build({
    "model.embed_tokens.weight": { dtype: "F32", shape: [2, 3], data: f32([1, 2, 3, -4, 5.5, 1e-3]) },
    "a.f16": { dtype: "F16", shape: [F16_CASES.length], data: u16(F16_CASES.map((c) => c[0])) },
    "b.bf16": { dtype: "BF16", shape: [3, 3], data: u16(BF16_CASES.map((c) => c[0])) },
    "scalar": { dtype: "F32", shape: [], data: f32([7]) },
  }, { format: "pt" }));
  const st = readSafetensors(file);
  assert.deepEqual(st.metadata, { format: "pt" });
  assert.equal(st.path, path.resolve(file));
  assert.deepEqual(st.tensors.map((t) => t.name), ["model.embed_tokens.weight", "a.f16", "b.bf16", "scalar"]);
  const headerLen = Number(fs.readFileSync(file).readBigUInt64LE(0));
  const emb = st.tensors[0]!;
  assert.deepEqual(emb, { name: "model.embed_tokens.weight", shape: [2, 3], dtype: "F32", file: path.resolve(file), offset: 8 + headerLen, byteLength: 24 });
  assert.deepEqual(Array.from(readTensorF32(emb)), Array.from(new Float32Array([1, 2, 3, -4, 5.5, 1e-3])));
  const f16 = readTensorF32(st.tensors[1]!);
  F16_CASES.forEach(([bits, want], i) => assert.ok(sameFloat(f16[i]!, want), `F16 0x${bits.toString(16)}: got ${f16[i]} want ${want}`));
  const bf16 = readTensorF32(st.tensors[2]!);
  assert.deepEqual(st.tensors[2]!.shape, [3, 3]);
  BF16_CASES.forEach(([bits, want], i) => assert.ok(sameFloat(bf16[i]!, want), `BF16 0x${bits.toString(16)}: got ${bf16[i]} want ${want}`));
  assert.deepEqual(Array.from(readTensorF32(st.tensors[3]!)), [7]);

  // The folder form finds model.safetensors.
  assert.deepEqual(readSafetensorsFolder(dir).map((t) => t.name), st.tensors.map((t) => t.name));
});

test("F16 agrees with float32 rounding for every finite half value", () => {
  // Every half is exactly representable in float32: converting the f32 back by rounding must give
  // the same bits. Checks the whole table through the public path.
  const dir = freshDir();
  const file = path.join(dir, "model.safetensors");
  const all = new Uint16Array(65536).map((_, i) => i);
  fs.writeFileSync(file, build({ all: { dtype: "F16", shape: [65536], data: Buffer.from(all.buffer) } }));
  const got = readTensorF32(readSafetensors(file).tensors[0]!);
  for (let h = 0; h < 65536; h++) {
    const exp = (h >> 10) & 31, mant = h & 1023, sign = h >> 15 ? -1 : 1;
    const want = exp === 31 ? (mant ? NaN : sign * Infinity) : sign * (exp === 0 ? mant * 2 ** -24 : (1024 + mant) * 2 ** (exp - 25));
    if (!sameFloat(got[h]!, want)) assert.fail(`half 0x${h.toString(16)}: got ${got[h]} want ${want}`);
  }
});

test("sharded folder with model.safetensors.index.json", () => {
  const dir = freshDir();
  const s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  fs.writeFileSync(path.join(dir, s1), build({
    "layers.0.w": { dtype: "BF16", shape: [2], data: u16([0x3f80, 0xc000]) },
    "embed": { dtype: "F32", shape: [1, 2], data: f32([0.25, -0.5]) },
  }));
  fs.writeFileSync(path.join(dir, s2), build({ "layers.1.w": { dtype: "F16", shape: [2, 1], data: u16([0x3c00, 0x3555]) } }));
  const index = { metadata: { total_size: 16 }, weight_map: { embed: s1, "layers.0.w": s1, "layers.1.w": s2 } };
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify(index));
  const refs = readSafetensorsFolder(dir);
  assert.deepEqual(refs.map((t) => [t.name, path.basename(t.file), t.dtype]), [
    ["embed", s1, "F32"], ["layers.0.w", s1, "BF16"], ["layers.1.w", s2, "F16"],
  ]);
  assert.deepEqual(Array.from(readTensorF32(refs[0]!)), [0.25, -0.5]);
  assert.deepEqual(Array.from(readTensorF32(refs[1]!)), [1, -2]);
  assert.deepEqual(Array.from(readTensorF32(refs[2]!)), [1, 0.333251953125]);

  // Missing shard.
  fs.rmSync(path.join(dir, s2));
  expectUserError(() => readSafetensorsFolder(dir), /shard model-00002-of-00002\.safetensors \(holding layers\.1\.w\) is missing/);
  // Index naming a tensor its shard lacks.
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { embed: s1, ghost: s1 } }));
  expectUserError(() => readSafetensorsFolder(dir), /has no tensor ghost/);
  // Broken index JSON.
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), "{ weight_map: ");
  expectUserError(() => readSafetensorsFolder(dir), /model\.safetensors\.index\.json: not valid JSON/);
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), "{}");
  expectUserError(() => readSafetensorsFolder(dir), /has no "weight_map"/);
  // Empty folder.
  expectUserError(() => readSafetensorsFolder(freshDir()), /no model\.safetensors or model\.safetensors\.index\.json/);
});

test("corrupt files give one-line UserErrors", () => {
  const dir = freshDir();
  const good = build({ w: { dtype: "F32", shape: [2, 2], data: f32([1, 2, 3, 4]) } });
  const write = (b: Buffer) => {
    const p = path.join(dir, `c${counter++}.safetensors`);
    fs.writeFileSync(p, b);
    return p;
  };
  const withLen = (n: bigint) => { const b = Buffer.from(good); b.writeBigUInt64LE(n, 0); return b; };

  expectUserError(() => readSafetensors(write(withLen(BigInt(good.length)))), /header length \d+ is larger than the file/);
  expectUserError(() => readSafetensors(write(withLen(0xffffffffffffffffn))), /header length 18446744073709551615 is larger than the file/);
  expectUserError(() => readSafetensors(write(Buffer.from([1, 2, 3]))), /not a safetensors file \(only 3 bytes\)/);
  expectUserError(() => readSafetensors(path.join(dir, "nope.safetensors")), /cannot open safetensors file \(no such file\)/);
  // Truncated data: header intact, last bytes gone.
  expectUserError(() => readSafetensors(write(good.subarray(0, good.length - 4))), /tensor w ends at byte \d+ but the file has only \d+ bytes; the file is truncated/);
  // Offsets out of bounds, reversed, or not matching the shape.
  const mk = (f: (h: Record<string, any>) => void) => write(build({ w: { dtype: "F32", shape: [2, 2], data: f32([1, 2, 3, 4]) } }, undefined, f));
  expectUserError(() => readSafetensors(mk((h) => (h.w.data_offsets = [0, 1600]))), /but its data_offsets span 1600 bytes/);
  expectUserError(() => readSafetensors(mk((h) => { h.w.data_offsets = [1600, 1616]; })), /ends at byte \d+ but the file has only/);
  expectUserError(() => readSafetensors(mk((h) => (h.w.data_offsets = [16, 0]))), /invalid data_offsets \[16,0\]/);
  expectUserError(() => readSafetensors(mk((h) => (h.w.data_offsets = "x"))), /invalid data_offsets/);
  expectUserError(() => readSafetensors(mk((h) => (h.w.shape = [2, -2]))), /invalid shape \[2,-2\]/);
  expectUserError(() => readSafetensors(mk((h) => (h.w.shape = [3, 2]))), /is F32 \[3, 2\] \(24 bytes\) but its data_offsets span 16 bytes/);
  // Unsupported dtype is named.
  expectUserError(() => readSafetensors(mk((h) => (h.w.dtype = "Q9"))), /tensor w has unknown dtype Q9/);
  expectUserError(() => readSafetensors(mk((h) => delete h.w.dtype)), /tensor w has no dtype/);
  // Bad JSON and non-object JSON.
  const raw = (json: string) => {
    const j = Buffer.from(json);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(j.length));
    return write(Buffer.concat([len, j]));
  };
  expectUserError(() => readSafetensors(raw("{\"w\": {\"dtype\": ")), /header is not valid JSON/);
  expectUserError(() => readSafetensors(raw("[1, 2]")), /header is not a JSON object/);
  expectUserError(() => readSafetensors(raw("{\"__metadata__\": {\"a\": 1}}")), /__metadata__\.a is not a string/);
});
