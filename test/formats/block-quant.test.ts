/**
 * Quantized matrices that stay quantized: ggml blocks re-laid-out for onnxruntime's MatMulNBits
 * (src/formats/block-quant.ts), stored by the weight store and multiplied by the graph builder.
 * Reference: gguf-py's dequantization of the fixture in test/fixtures/quant (one [4, 256] tensor
 * of every ggml type), made by tools/reference/make_quant_fixture.py.
 *
 * Tolerances: the repacked form holds every weight exactly, except that the formats with mins
 * (Q4_1, Q4_K, Q5_1, Q5_K and the 8-bit planes) fold a constant into the min, one float32
 * rounding: |error| <= 1 ulp of the block's min, checked as 1e-6 relative to the tensor's largest
 * weight. Products in onnxruntime add fp32 accumulation over 256 terms: 2e-5 relative to the
 * sum of |x * w|.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPACKABLE, canRepack, repack, repackedValue, splitNibbles } from "../../src/formats/block-quant.js";
import { WeightStore, type TensorTransform, type WeightEntry } from "../../src/formats/weight-store.js";
import { GraphBuilder, isQuantizedExternal } from "../../src/graph/builder.js";
import { createSession, runSession, ort } from "../../src/graph/session.js";
import { createProgress } from "../../src/progress.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const root = REPO_ROOT;
const FIX = path.join(root, "test", "fixtures", "quant");
const GGUF = path.join(FIX, "quant.gguf");
interface RefTensor { name: string; dtype: string; shape: number[]; offset: number; count: number; fileOffset: number; byteLength: number }
const reference = JSON.parse(fs.readFileSync(path.join(FIX, "reference.json"), "utf8")) as { tensors: RefTensor[] };
const refBytes = fs.readFileSync(path.join(FIX, "reference.f32"));
const refValues = new Float32Array(refBytes.buffer.slice(refBytes.byteOffset, refBytes.byteOffset + refBytes.length));
const fileBytes = fs.readFileSync(GGUF);
const quantTensors = reference.tensors.filter((t) => REPACKABLE[t.dtype]);
const [ROWS, COLS] = [4, 256];

function expected(t: RefTensor): Float32Array {
  return refValues.subarray(t.offset, t.offset + t.count);
}
function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

test("every quantized type is in the fixture", () => {
  assert.deepEqual(quantTensors.map((t) => t.dtype).sort(), Object.keys(REPACKABLE).sort());
});

test("repacked blocks hold exactly the weights gguf-py dequantizes, also split into 4-bit planes", () => {
  for (const t of quantTensors) {
    assert.ok(canRepack(t.dtype, t.shape));
    const raw = fileBytes.subarray(t.fileOffset, t.fileOffset + t.byteLength);
    const q = repack(t.dtype, raw, ROWS, COLS);
    const want = expected(t);
    const tol = 1e-6 * maxAbs(want);
    let err = 0;
    for (let r = 0; r < ROWS; r++) for (let c = 0; c < COLS; c++) err = Math.max(err, Math.abs(repackedValue(q, r, c) - want[r * COLS + c]!));
    assert.ok(err <= tol, `${t.dtype}: repacked values differ by ${err} (tolerance ${tol})`);
    if (q.bits === 8) {
      // The two-plane form used at run time: s * (16 * (high - 8) + (low - 8)) + min'.
      const { high, low, mins } = splitNibbles(q);
      const blocks = COLS / q.blockSize;
      let splitErr = 0;
      for (let r = 0; r < ROWS; r++) {
        for (let c = 0; c < COLS; c++) {
          const byte = (plane: Uint8Array) => plane[(r * COLS + c) >> 1]!;
          const nib = (plane: Uint8Array) => (c & 1 ? byte(plane) >> 4 : byte(plane) & 15) - 8;
          const b = r * blocks + Math.floor(c / q.blockSize);
          const v = q.scales[b]! * (16 * nib(high) + nib(low)) + mins[b]!;
          splitErr = Math.max(splitErr, Math.abs(v - want[r * COLS + c]!));
        }
      }
      assert.ok(splitErr <= tol, `${t.dtype}: split planes differ by ${splitErr} (tolerance ${tol})`);
    }
  }
});

test("a corrupt or short tensor is a clear error, not a crash", () => {
  assert.throws(() => repack("Q4_K", new Uint8Array(10), ROWS, COLS), /Q4_K: 4x256 needs 576 bytes, got 10/);
  assert.throws(() => repack("IQ2_XXS", new Uint8Array(10), ROWS, COLS), /IQ2_XXS cannot stay quantized/);
  assert.equal(canRepack("Q4_K", [4, 100]), false); // rows not made of whole super-blocks: stays fp32
  assert.equal(canRepack("Q4_K", [4, 2, 256]), false); // not a matrix
});

/** Reverses the rows: a pure row permutation, as llama.cpp's q/k un-permutation is. */
const reverseRows: TensorTransform = {
  id: "reverse-rows",
  apply(data, shape) {
    const [rows, cols] = shape as [number, number];
    const out = new Float32Array(data.length);
    for (let r = 0; r < rows; r++) out.set(data.subarray((rows - 1 - r) * cols, (rows - r) * cols), r * cols);
    return { data: out, shape };
  },
};

test("onnxruntime multiplies and gathers the stored quantized matrices like their fp32 values", async () => {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-bq-"));
  try {
    const entries = new Map<string, WeightEntry>();
    for (const t of quantTensors) {
      const ref = { name: t.name, shape: t.shape, dtype: t.dtype, file: GGUF, offset: t.fileOffset, byteLength: t.byteLength };
      entries.set(t.name, { ref });
      entries.set(`${t.name}.reversed`, { ref, transform: reverseRows });
      entries.set(`${t.name}.bytes`, { ref }); // 8-bit formats as one byte plane (the head's form)
    }
    const bytePlanes = new Set(quantTensors.map((t) => `${t.name}.bytes`));
    const store = await WeightStore.open(entries, [GGUF], cache, createProgress({ quiet: true }), false, bytePlanes);
    // Kept quantized: the store is about the size of the blocks, not of fp32 (1024 x 4 bytes each).
    const fp32Bytes = entries.size * ROWS * COLS * 4;
    assert.ok(store.bytes < fp32Bytes, `store holds ${store.bytes} bytes, fp32 would be ${fp32Bytes}`);
    for (const name of entries.keys()) assert.ok(isQuantizedExternal(store.external(name)), `${name} is stored quantized`);

    const g = new GraphBuilder("block-quant-test");
    const x = g.input("x", "float32", ["M", COLS]);
    const ids = g.input("ids", "int64", ["I"]);
    for (const name of entries.keys()) {
      const ext = store.external(name);
      const w = isQuantizedExternal(ext) ? g.quantizedWeight(name, ext) : g.weight(name, ext);
      g.output(g.linear(x, w), `${name}:linear`);
      g.output(g.gather(w, ids), `${name}:gather`);
      g.output(g.add(w, g.scalar(0)), `${name}:whole`); // any other op sees the fp32 matrix
    }
    const session = await createSession(g, store.dir);
    const M = 3;
    const xs = Float32Array.from({ length: M * COLS }, (_, i) => Math.sin(i * 0.7) * 2);
    const pick = [3, 0];
    const out = await runSession(session, { x: new ort.Tensor("float32", xs, [M, COLS]), ids: new ort.Tensor("int64", BigInt64Array.from(pick, BigInt), [pick.length]) }, "test graph");

    const eightBit = ["Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL", "IQ4_XS"];
    for (const t of quantTensors) {
      const ext = store.external(`${t.name}.bytes`);
      assert.ok(isQuantizedExternal(ext) && ext.bytes8 === eightBit.includes(t.dtype), `${t.name}: one byte plane exactly for the 8-bit formats`);
      for (const [name, reversed] of [[t.name, false], [`${t.name}.reversed`, true], [`${t.name}.bytes`, false]] as const) {
        const base = expected(t);
        const w = reversed ? reverseRows.apply(base, [ROWS, COLS]).data : base;
        const y = out[`${name}:linear`]!.data as Float32Array;
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < ROWS; n++) {
            let sum = 0, mag = 0;
            for (let k = 0; k < COLS; k++) { sum += xs[m * COLS + k]! * w[n * COLS + k]!; mag += Math.abs(xs[m * COLS + k]! * w[n * COLS + k]!); }
            assert.ok(Math.abs(y[m * ROWS + n]! - sum) <= 2e-5 * mag, `${name} linear [${m}, ${n}]: ${y[m * ROWS + n]} vs ${sum}`);
          }
        }
        const rows = out[`${name}:gather`]!.data as Float32Array;
        const whole = out[`${name}:whole`]!.data as Float32Array;
        const tol = 1e-6 * maxAbs(w);
        for (let i = 0; i < pick.length; i++) for (let k = 0; k < COLS; k++) {
          assert.ok(Math.abs(rows[i * COLS + k]! - w[pick[i]! * COLS + k]!) <= tol, `${name} gather row ${pick[i]} col ${k}`);
        }
        for (let i = 0; i < w.length; i++) assert.ok(Math.abs(whole[i]! - w[i]!) <= tol, `${name} dequantized element ${i}`);
      }
    }
  } finally {
    fs.rmSync(cache, { recursive: true, force: true });
  }
});

test("a conversion repacked by worker threads writes the same cache, byte for byte, as one on the main thread", async () => {
  // Real SmolLM2's 211 quantized tensors (Q4_1, Q8_0), converted twice into fresh caches: once with
  // two repacking workers (what a big model's first load uses), once on the main thread.
  const { realSource } = await import("../helpers/real-models.js");
  const { openModelFiles } = await import("../../src/engine/model.js");
  const files = await openModelFiles(await realSource("smollm2-135m-instruct"));
  const caches = [fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-repack-")), fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-inline-"))];
  const before = process.env["LOGIT_LENS_REPACK_WORKERS"];
  try {
    const stores: WeightStore[] = [];
    for (const [i, workers] of ["2", "0"].entries()) {
      process.env["LOGIT_LENS_REPACK_WORKERS"] = workers;
      // The head (its Q8_0 embedding, tied) as one byte plane, as LoadedModel stores it.
      stores.push(await WeightStore.open(files.entries, files.files, caches[i]!, createProgress({ quiet: true }), false, new Set(["model.embed_tokens.weight"])));
    }
    const bin = (s: WeightStore) => fs.readFileSync(path.join(s.dir, "weights.bin"));
    const [a, b] = [bin(stores[0]!), bin(stores[1]!)];
    assert.ok(a.length > 50e6, `weights.bin is ${a.length} bytes`);
    assert.ok(a.equals(b), "weights.bin differs");
    assert.equal(fs.readFileSync(path.join(stores[0]!.dir, "weights.json"), "utf8"), fs.readFileSync(path.join(stores[1]!.dir, "weights.json"), "utf8"));
  } finally {
    if (before === undefined) delete process.env["LOGIT_LENS_REPACK_WORKERS"];
    else process.env["LOGIT_LENS_REPACK_WORKERS"] = before;
    for (const c of caches) fs.rmSync(c, { recursive: true, force: true });
  }
});

test("a repacking worker's failure reaches the caller as the same one-line error", async () => {
  const { RepackPool } = await import("../../src/formats/repack-pool.js");
  const pool = new RepackPool(1);
  try {
    const t = quantTensors.find((x) => x.dtype === "Q4_K")!;
    // The tensor's bytes said to lie past the end of the file, as in a file cut short after it was checked.
    const ref = { name: t.name, shape: t.shape, dtype: t.dtype, file: GGUF, offset: fileBytes.length - 100, byteLength: t.byteLength };
    await assert.rejects(pool.repack(ref, ROWS, COLS), (e: Error) => e.name === "UserError" && /file ends inside tensor t\.q4_k \(truncated file\?\)/.test(e.message));
    // The pool still works after a failed job.
    const good = await pool.repack({ ...ref, offset: t.fileOffset }, ROWS, COLS);
    assert.equal(good.rows, ROWS);
  } finally {
    await pool.close();
  }
});
