/**
 * Bounded-time fuzzing of the GGUF and safetensors readers (and what reads their output next: the
 * GGUF tokenizer, tensor dequantization). Random mutations of real headers (byte flips, extreme
 * integers at count and length positions, truncations, insertions, edits of the safetensors JSON)
 * must each end in success or in one UserError line: never another exception, a hang or a crash.
 *
 * Bounded: about 1.5 s per format (LOGIT_LENS_FUZZ_MS changes it). The seed is random per run and
 * printed on failure; LOGIT_LENS_FUZZ_SEED replays one.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { UserError } from "../../src/errors.js";
import { readGguf } from "../../src/formats/gguf.js";
import { readSafetensors } from "../../src/formats/safetensors.js";
import { readTensorF32 } from "../../src/formats/dequantize.js";
import { tokenizerFromGguf } from "../../src/tokens/gguf-tokenizer.js";
import { REPO_ROOT } from "../helpers/run-cli.js";
import { mulberry32 } from "../../src/lens/sampling.js";

const BUDGET_MS = Number(process.env["LOGIT_LENS_FUZZ_MS"] ?? 1500);
const SEED = Number(process.env["LOGIT_LENS_FUZZ_SEED"] ?? Math.floor(Math.random() * 2 ** 31));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-fuzz-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The project's seeded generator (mulberry32), to pick mutations reproducibly. */
const rng = mulberry32;

const U64S = [0n, 1n, 2n, 7n, 255n, 0x7fffffffn, 0xffffffffn, 0x100000000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];
const U32S = [0, 1, 2, 4, 8, 9, 12, 13, 30, 255, 0x7fffffff, 0x80000000, 0xffffffff];

/** One random mutation of `src` within its first `headerLen` bytes (where the structure is). */
function mutate(src: Buffer, headerLen: number, r: () => number): { data: Buffer; what: string } {
  const data = Buffer.from(src);
  const at = (n: number) => Math.floor(r() * Math.max(1, headerLen - n));
  const kind = Math.floor(r() * 6);
  switch (kind) {
    case 0: {
      const n = 1 + Math.floor(r() * 8);
      for (let i = 0; i < n; i++) data[at(1)] = Math.floor(r() * 256);
      return { data, what: `${n} random bytes` };
    }
    case 1: {
      const p = at(8);
      const v = U64S[Math.floor(r() * U64S.length)]!;
      data.writeBigUInt64LE(v, p);
      return { data, what: `u64 ${v} at ${p}` };
    }
    case 2: {
      const p = at(4);
      const v = U32S[Math.floor(r() * U32S.length)]!;
      data.writeUInt32LE(v, p);
      return { data, what: `u32 ${v} at ${p}` };
    }
    case 3: {
      const n = Math.floor(r() * src.length);
      return { data: data.subarray(0, n), what: `truncated to ${n}` };
    }
    case 4: {
      const p = at(0);
      const ins = Buffer.from(Array.from({ length: 1 + Math.floor(r() * 16) }, () => Math.floor(r() * 256)));
      return { data: Buffer.concat([data.subarray(0, p), ins, data.subarray(p)]), what: `${ins.length} bytes inserted at ${p}` };
    }
    default: {
      const p = at(0);
      const n = 1 + Math.floor(r() * 16);
      return { data: Buffer.concat([data.subarray(0, p), data.subarray(p + n)]), what: `${n} bytes deleted at ${p}` };
    }
  }
}

/** Edits of the safetensors JSON text: numbers, dtypes, structure. */
function mutateJson(src: Buffer, r: () => number): { data: Buffer; what: string } {
  const n = Number(src.readBigUInt64LE(0));
  let text = src.subarray(8, 8 + n).toString("utf8");
  const numbers = [...text.matchAll(/\d+/g)];
  const choice = Math.floor(r() * 4);
  let what: string;
  if (choice === 0 && numbers.length > 0) {
    const m = numbers[Math.floor(r() * numbers.length)]!;
    const v = ["0", "-1", "1e308", "4294967295", "9007199254740993", "18446744073709551615", "1.5", "null", "[]"][Math.floor(r() * 9)]!;
    text = text.slice(0, m.index) + v + text.slice(m.index! + m[0].length);
    what = `number ${m[0]} -> ${v}`;
  } else if (choice === 1) {
    const v = ["F32", "F16", "BF16", "I8", "BOOL", "Q4_0", "F8_E4M3", "", "f32"][Math.floor(r() * 9)]!;
    text = text.replace(/"dtype":"[^"]*"/, `"dtype":"${v}"`);
    what = `dtype -> ${v}`;
  } else if (choice === 2) {
    const v = ['"shape":[]', '"shape":[1e9,1e9]', '"shape":[-1]', '"shape":"x"', '"data_offsets":[5,1]', '"data_offsets":[0]', '"__metadata__":{"a":1}'][Math.floor(r() * 7)]!;
    text = text.replace(/"(shape|data_offsets)":\[[^\]]*\]/, v);
    what = `field -> ${v}`;
  } else {
    const p = Math.floor(r() * text.length);
    text = text.slice(0, p) + text.slice(p + 1 + Math.floor(r() * 4));
    what = `json chars deleted at ${p}`;
  }
  const json = Buffer.from(text, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(r() < 0.9 ? json.length : Math.floor(r() * 2 ** 40)));
  return { data: Buffer.concat([len, json, src.subarray(8 + n)]), what };
}

/** Runs `body` on mutations until the budget is spent; any non-UserError (or a multi-line one) fails. */
function fuzz(label: string, seeds: { name: string; data: Buffer; headerLen: number }[], body: (file: string) => void, extra?: (src: Buffer, r: () => number) => { data: Buffer; what: string }): number {
  const r = rng(SEED);
  const file = path.join(tmp, `${label}.bin`);
  const deadline = Date.now() + BUDGET_MS;
  let runs = 0;
  while (Date.now() < deadline) {
    const seed = seeds[runs % seeds.length]!;
    const m = extra && r() < 0.5 ? extra(seed.data, r) : mutate(seed.data, seed.headerLen, r);
    fs.writeFileSync(file, m.data);
    try {
      body(file);
    } catch (e) {
      const where = `${label} seed ${SEED}, run ${runs} (${seed.name}: ${m.what}); replay with LOGIT_LENS_FUZZ_SEED=${SEED}`;
      assert.ok(e instanceof UserError, `${where}: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
      assert.ok(!e.message.includes("\n"), `${where}: multi-line message: ${e.message}`);
      assert.ok(e.message.length <= 2100, `${where}: a ${e.message.length}-character message`);
    }
    runs++;
  }
  return runs;
}

/** A small GGUF with a real-shaped tokenizer (BPE, merges, special ids) and an F16 tensor. */
function tokenizerGguf(): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
  const u64 = (v: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
  const str = (s: string) => { const b = Buffer.from(s, "utf8"); u64(b.length); parts.push(b); };
  const tokens = ["a", "b", "c", "ab", "abc", "Ġ", "Ġa", "<s>", "</s>"];
  const meta: [string, () => void][] = [
    ["general.architecture", () => { u32(8); str("llama"); }],
    ["llama.embedding_length", () => { u32(4); u32(8); }],
    ["tokenizer.ggml.model", () => { u32(8); str("gpt2"); }],
    ["tokenizer.ggml.tokens", () => { u32(9); u32(8); u64(tokens.length); for (const t of tokens) str(t); }],
    ["tokenizer.ggml.token_type", () => { u32(9); u32(5); u64(tokens.length); for (let i = 0; i < tokens.length; i++) u32(i >= 7 ? 3 : 1); }],
    ["tokenizer.ggml.merges", () => { u32(9); u32(8); u64(3); for (const m of ["a b", "ab c", "Ġ a"]) str(m); }],
    ["tokenizer.ggml.bos_token_id", () => { u32(4); u32(7); }],
    ["tokenizer.ggml.eos_token_id", () => { u32(4); u32(8); }],
    ["tokenizer.chat_template", () => { u32(8); str("{% for m in messages %}{{ m.content }}{% endfor %}"); }],
  ];
  parts.push(Buffer.from("GGUF", "latin1"));
  u32(3);
  u64(1);
  u64(meta.length);
  for (const [k, w] of meta) { str(k); w(); }
  str("token_embd.weight");
  u32(2);
  u64(8);
  u64(tokens.length);
  u32(1); // F16
  u64(0);
  let header = Buffer.concat(parts);
  header = Buffer.concat([header, Buffer.alloc(Math.ceil(header.length / 32) * 32 - header.length)]);
  return Buffer.concat([header, Buffer.alloc(2 * 8 * tokens.length, 0x3c)]);
}

test("GGUF reader, tokenizer and dequantization on mutated headers: one-line errors, no crash", { timeout: 60_000 }, () => {
  const quant = fs.readFileSync(path.join(REPO_ROOT, "test", "fixtures", "quant", "quant.gguf"));
  const tok = tokenizerGguf();
  const headerOf = (b: Buffer, file: string) => {
    fs.writeFileSync(file, b);
    return readGguf(file).dataOffset;
  };
  const seeds = [
    { name: "quant.gguf", data: quant, headerLen: headerOf(quant, path.join(tmp, "h1.gguf")) },
    { name: "tokenizer gguf", data: tok, headerLen: headerOf(tok, path.join(tmp, "h2.gguf")) },
  ];
  const runs = fuzz("gguf", seeds, (file) => {
    const g = readGguf(file);
    if (g.metadata.has("tokenizer.ggml.tokens")) tokenizerFromGguf(g.metadata).encode("abc ab");
    for (const t of g.tensors.slice(0, 3)) readTensorF32(t);
  });
  assert.ok(runs > 50, `only ${runs} runs in ${BUDGET_MS} ms`);
});

test("safetensors reader and dequantization on mutated headers: one-line errors, no crash", { timeout: 60_000 }, () => {
  const tiny = fs.readFileSync(path.join(REPO_ROOT, "test", "fixtures", "tiny", "gpt2", "model.safetensors"));
  const headerLen = 8 + Number(tiny.readBigUInt64LE(0));
  const runs = fuzz("safetensors", [{ name: "tiny gpt2", data: tiny, headerLen }], (file) => {
    const s = readSafetensors(file);
    for (const t of s.tensors.slice(0, 3)) readTensorF32(t);
  }, mutateJson);
  assert.ok(runs > 50, `only ${runs} runs in ${BUDGET_MS} ms`);
});
