/**
 * Issue 6 (hardening), one test per item, each run the way a user meets the problem: the real
 * command line on copies of the tiny Hugging Face fixtures and on GGUF files written here, with a
 * temp LOGIT_LENS_CACHE. Each of these failed before its fix (see the issue for what happened).
 * Children that could eat memory before the fix run with a small V8 heap, so a regression fails
 * fast instead of swapping the machine.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCli, REPO_ROOT, type CliResult } from "../helpers/run-cli.js";
import { writeGguf, type GgufMeta } from "../helpers/gguf-writer.js";
import { writeFileAtomic } from "../../src/outputs/write-file.js";
import { readGguf } from "../../src/formats/gguf.js";
import { readSafetensorsFolder } from "../../src/formats/safetensors.js";
import { renderChatTemplate } from "../../src/tokens/chat-template.js";
import { tokenizerFromGguf } from "../../src/tokens/gguf-tokenizer.js";
import type { GgufValue } from "../../src/formats/tensor-ref.js";
import { UserError } from "../../src/errors.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-hardening-"));
const tmpCache = path.join(tmp, "cache");
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const TIMEOUT_MS = 60_000;

function cli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = TIMEOUT_MS): Promise<CliResult> {
  return runCli(args, { timeoutMs, env: { LOGIT_LENS_CACHE: tmpCache, NODE_OPTIONS: "--max-old-space-size=512", ...env } });
}

/** One line on stderr matching `pattern`, exit 2, no stack trace, no hang, no crash. */
function expectCleanFailure(r: CliResult, pattern: RegExp): string {
  const show = `exit ${r.code}${r.signal ? ` (${r.signal})` : ""}${r.timedOut ? " (timed out)" : ""}, stderr:\n${r.stderr.slice(0, 2000)}\nstdout:\n${r.stdout.slice(0, 300)}`;
  assert.equal(r.timedOut, false, `the CLI hung; ${show}`);
  assert.equal(r.code, 2, `expected exit 2 (a user error); ${show}`);
  assert.ok(!r.stderr.includes("    at "), `stack trace on stderr; ${show}`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.length, 1, `expected exactly one line on stderr; ${show}`);
  assert.doesNotMatch(lines[0]!, /internal error/, show);
  assert.match(lines[0]!, pattern, show);
  return lines[0]!;
}

function expectSuccess(r: CliResult): void {
  assert.equal(r.code, 0, `exit ${r.code}${r.timedOut ? " (timed out)" : ""}; stderr:\n${r.stderr.slice(0, 2000)}`);
}

/** A copy of a tiny Hugging Face fixture, with config.json edited by `edit`. */
function fixture(name: string, edit?: (cfg: Record<string, unknown>) => void, arch = "llama"): string {
  const src = path.join(REPO_ROOT, "test", "fixtures", "tiny", arch);
  const dst = path.join(tmp, name);
  fs.mkdirSync(dst, { recursive: true });
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    if (fs.existsSync(path.join(src, f))) fs.copyFileSync(path.join(src, f), path.join(dst, f));
  }
  if (edit) {
    const cfg = JSON.parse(fs.readFileSync(path.join(dst, "config.json"), "utf8")) as Record<string, unknown>;
    edit(cfg);
    fs.writeFileSync(path.join(dst, "config.json"), JSON.stringify(cfg));
  }
  return dst;
}

/** Overwrites one tensor of a safetensors file with `value` in every element (F32 only). */
function fillTensor(file: string, tensor: string, value: number): void {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const e = header[tensor];
  assert.ok(e && e.dtype === "F32", `${file}: no F32 tensor ${tensor}`);
  for (let o = 8 + n + e.data_offsets[0]; o < 8 + n + e.data_offsets[1]; o += 4) buf.writeFloatLE(value, o);
  fs.writeFileSync(file, buf);
}

/** A small llama GGUF (2 blocks of tensors, tokenizer), with metadata overridden by `meta`. */
function llamaGguf(name: string, meta: Record<string, GgufMeta> = {}, opts: { vocab?: number; blocks?: number } = {}): string {
  const vocab = opts.vocab ?? 8;
  const tokens = Array.from({ length: vocab }, (_, i) => `t${i}`);
  const tensors = [{ name: "token_embd.weight", shape: [8, 16] }, { name: "output_norm.weight", shape: [16] }];
  for (let b = 0; b < (opts.blocks ?? 2); b++) {
    for (const [t, shape] of [["attn_norm", [16]], ["attn_q", [16, 16]], ["attn_k", [16, 16]], ["attn_v", [16, 16]], ["attn_output", [16, 16]], ["ffn_norm", [16]], ["ffn_gate", [32, 16]], ["ffn_up", [32, 16]], ["ffn_down", [16, 32]]] as const) {
      tensors.push({ name: `blk.${b}.${t}.weight`, shape: [...shape] });
    }
  }
  return writeGguf(path.join(tmp, name), {
    "general.architecture": "llama",
    "llama.block_count": 2,
    "llama.embedding_length": 16,
    "llama.attention.head_count": 2,
    "llama.feed_forward_length": 32,
    "llama.context_length": 64,
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": tokens,
    ...meta,
  }, tensors);
}

/** The pid of a process that has exited (for partial files "left by a killed process"). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  return Number(r.stdout);
}

function oneLineUserError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.ok(!e.message.includes("\n"), e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------

describe("1. paths from model files", () => {
  test("a local safetensors index may not name a shard outside its own folder", async () => {
    const dir = fixture("index-escape");
    const outside = path.join(tmp, "outside");
    fs.mkdirSync(outside, { recursive: true });
    fs.renameSync(path.join(dir, "model.safetensors"), path.join(outside, "model.safetensors"));
    const names = readSafetensorsFolder(path.join(REPO_ROOT, "test", "fixtures", "tiny", "llama")).map((t) => t.name);
    fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, "../outside/model.safetensors"])) }));
    expectCleanFailure(await cli(["inspect", "--model", dir]), /names the shard "\.\.\/outside\/model\.safetensors".*not a file inside/);
  });
});

describe("2. --out never replaces what is at the target path", () => {
  test("a symbolic link stays a link; the file it points at gets the output", async () => {
    const real = path.join(tmp, "real-report.txt");
    const link = path.join(tmp, "report-link.txt");
    fs.writeFileSync(real, "old");
    fs.symlinkSync(real, link);
    expectSuccess(await cli(["inspect", "--model", fixture("out-link"), "--out", link, "--quiet"]));
    assert.ok(fs.lstatSync(link).isSymbolicLink(), "the link was replaced by a regular file");
    assert.match(fs.readFileSync(real, "utf8"), /architecture\s+llama/);
  });

  test("a FIFO (like a device node) is written through, not replaced by a regular file", async () => {
    const fifo = path.join(tmp, "out.fifo");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0, "mkfifo failed");
    const reader = spawn("cat", [fifo], { stdio: ["ignore", "pipe", "ignore"] });
    const got: Buffer[] = [];
    reader.stdout.on("data", (b: Buffer) => got.push(b));
    const done = new Promise<void>((resolve) => reader.on("close", () => resolve()));
    try {
      writeFileAtomic(fifo, "through the pipe\n");
      assert.ok(fs.lstatSync(fifo).isFIFO(), "the FIFO was replaced by a regular file");
      await done;
      assert.equal(Buffer.concat(got).toString("utf8"), "through the pipe\n");
    } finally {
      reader.kill();
    }
  });

  test("a folder is refused with one line", () => {
    oneLineUserError(() => writeFileAtomic(tmp, "x"), /it is a folder/);
  });
});

describe("4. numbers from files are checked before anything is sized by them", () => {
  test("a GGUF block_count of 2^32-1 is one line in inspect, not a V8 abort", async () => {
    const file = llamaGguf("blocks-huge.gguf", { "llama.block_count": { u32: 0xffffffff } });
    expectCleanFailure(await cli(["inspect", "--model", file]), /block_count' is 4294967295, not a plausible value/);
  });

  test("a GGUF block_count that disagrees with the tensors present", async () => {
    const file = llamaGguf("blocks-lie.gguf", { "llama.block_count": 40 });
    expectCleanFailure(await cli(["inspect", "--model", file]), /block_count' is 40 but the file holds tensors for 2 blocks/);
  });

  test("config.json with num_hidden_layers 1e9 is one line in inspect", async () => {
    const dir = fixture("layers-huge", (c) => (c["num_hidden_layers"] = 1e9));
    expectCleanFailure(await cli(["inspect", "--model", dir]), /"num_hidden_layers" is 1000000000, not a plausible value/);
  });

  test("0 layers is a clear error, not a hook-name error", async () => {
    const dir = fixture("layers-zero", (c) => (c["num_hidden_layers"] = 0));
    expectCleanFailure(await cli(["lens", "--model", dir, "--prompt", "hello", "--quiet"]), /"num_hidden_layers" is 0: a model needs at least one layer/);
  });

  test("a config claiming more layers than its weights hold", async () => {
    const dir = fixture("layers-more", (c) => (c["num_hidden_layers"] = 6));
    expectCleanFailure(await cli(["inspect", "--model", dir]), /"num_hidden_layers" is 6 but the safetensors weights hold 2 layers/);
  });
});

describe("5. chat templates run with bounds", () => {
  test("a template that loops for ages stops at the deadline with one line", async () => {
    const dir = fixture("template-loop");
    const tc = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    tc["chat_template"] = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x";
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(tc));
    const t0 = Date.now();
    const r = await cli(["lens", "--model", dir, "--chat", "--prompt", "hi", "--quiet"], { LOGIT_LENS_TEMPLATE_TIMEOUT_MS: "1500" }, 45_000);
    expectCleanFailure(r, /chat template did not finish within 1\.5 s/);
    assert.ok(Date.now() - t0 < 30_000);
  });

  test("a template that builds a huge string is refused, the process stays small", () => {
    const big = "{% for i in range(3000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}";
    oneLineUserError(() => renderChatTemplate(big, [{ role: "user", content: "hi" }], {}, {}, { maxChars: 100_000 }), /produced too much text: its output is \d+ characters, more than the limit of 100000/);
    // A real template still renders.
    assert.equal(renderChatTemplate("{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}", [{ role: "user", content: "hi" }], {}), "[user] hi");
  });
});

describe("6. NaN and Inf are errors, never results", () => {
  test("a NaN weight: the lens names the first hook point where values go bad", async () => {
    const dir = fixture("nan-weight");
    fillTensor(path.join(dir, "model.safetensors"), "model.layers.1.mlp.down_proj.weight", NaN);
    expectCleanFailure(await cli(["lens", "--model", dir, "--prompt", "hello world", "--quiet"]), /activations are not finite \(NaN\) first at blocks\.1\.hook_mlp_out, position 0/);
  });

  test("an Inf in the unembedding: the lens refuses its own non-finite outputs", async () => {
    const dir = fixture("inf-unembed", (c) => (c["tie_word_embeddings"] = true));
    // The tiny llama ties its unembedding to the embedding: poison a row no prompt token uses.
    const buf = fs.readFileSync(path.join(dir, "model.safetensors"));
    const n = Number(buf.readBigUInt64LE(0));
    const h = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
    const at = 8 + n + h["model.embed_tokens.weight"]!.data_offsets[0] + 511 * 64 * 4;
    buf.writeFloatLE(Infinity, at);
    fs.writeFileSync(path.join(dir, "model.safetensors"), buf);
    expectCleanFailure(await cli(["lens", "--model", dir, "--prompt", "hello", "--quiet"]), /lens gave a non-finite .* at blocks\.\d+\.hook_resid_post, position \d+/);
  });

  test("a negative norm epsilon or a zero rotary base is refused before the run", async () => {
    expectCleanFailure(await cli(["lens", "--model", fixture("eps-negative", (c) => (c["rms_norm_eps"] = -1e-6)), "--prompt", "hi", "--quiet"]), /"rms_norm_eps" is -0\.000001, but the norm epsilon must be a finite number above 0/);
    const zeroRope = fixture("rope-zero", (c) => {
      c["rope_theta"] = 0;
      c["rope_parameters"] = { rope_theta: 0, rope_type: "default" };
    });
    expectCleanFailure(await cli(["lens", "--model", zeroRope, "--prompt", "hi", "--quiet"]), /rope_theta" is 0, but the rotary base must be a finite number above 0/);
    const gguf = llamaGguf("eps-negative.gguf", { "llama.attention.layer_norm_rms_epsilon": { f32: -1 } });
    expectCleanFailure(await cli(["inspect", "--model", gguf]), /layer_norm_rms_epsilon' is -1, but the norm epsilon must be/);
  });
});

describe("7. tokenizer consistency", () => {
  const meta = (m: Record<string, GgufValue>) => new Map<string, GgufValue>(Object.entries(m));
  const base = { "tokenizer.ggml.model": "gpt2" };

  test("a token list shorter than its merges is refused", () => {
    // "Ġcap" + "ital" -> "Ġcapital" needs all three tokens; the list was cut before them.
    const tokens = ["T", "h", "e", "Th", "The", "Ġ", "c", "a", "p", "Ġc", "Ġca", "Ġcap", "i", "t", "l", "it", "ital"];
    const merges = ["T h", "Th e", "Ġ c", "Ġc a", "Ġca p", "i t", "it a", "ita l", "Ġcap ital"];
    oneLineUserError(() => tokenizerFromGguf(meta({ ...base, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges })), /BPE merges name tokens missing from its \d+-token vocabulary/);
  });

  test("special-token ids outside the vocabulary are refused", () => {
    const tokens = ["a", "b", "ab"];
    oneLineUserError(
      () => tokenizerFromGguf(meta({ ...base, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.eos_token_id": 50 })),
      /eos_token_id is 50, outside the vocabulary of 3 tokens/,
    );
  });

  test("a token list that does not match the embedding's rows is refused", async () => {
    const file = llamaGguf("vocab-short.gguf", {}, { vocab: 5 });
    oneLineUserError(() => readGguf(file), /vocabulary lists 5 tokens but the embedding \(token_embd\.weight\) has 8 rows/);
    expectCleanFailure(await cli(["inspect", "--model", file]), /vocabulary lists 5 tokens/);
  });
});

describe("8. the cache does not leak", () => {
  const cache = path.join(tmp, "cache8");
  const env = { LOGIT_LENS_CACHE: cache };

  test("partial conversions of dead processes are swept; cache list shows sizes; prune removes only stale folders", async () => {
    const model = fixture("cache-model");
    expectSuccess(await cli(["lens", "--model", model, "--prompt", "hi", "--quiet"], env));
    const compiled = path.join(cache, "compiled");
    const [key] = fs.readdirSync(compiled);
    assert.ok(key && fs.existsSync(path.join(compiled, key, "source.json")), "source.json records what the folder was converted from");

    // A killed conversion: a partial file of a dead pid in the live folder, and a folder holding nothing else.
    const pid = deadPid();
    const old = new Date(Date.now() - 60 * 60_000);
    const partial = path.join(compiled, key, `weights.bin.${pid}.partial`);
    fs.writeFileSync(partial, Buffer.alloc(1000));
    fs.utimesSync(partial, old, old);
    const killed = path.join(compiled, "0123456789abcdef01234567");
    fs.mkdirSync(killed);
    fs.writeFileSync(path.join(killed, `weights.bin.${pid}.partial`), Buffer.alloc(1000));
    fs.utimesSync(path.join(killed, `weights.bin.${pid}.partial`), old, old);
    fs.utimesSync(killed, old, old);
    // A fresh partial of a live process is never touched.
    const live = path.join(compiled, key, `weights.bin.${process.pid}.partial`);
    fs.writeFileSync(live, "x");

    expectSuccess(await cli(["lens", "--model", model, "--prompt", "hi", "--quiet"], env));
    assert.ok(!fs.existsSync(partial), "the dead process's partial file is still there");
    assert.ok(!fs.existsSync(killed), "the never-finished folder is still there");
    assert.ok(fs.existsSync(live), "a live process's partial file was removed");
    fs.rmSync(live);

    // A second model, then the first one's source changes (as after `models fetch --force`).
    const other = fixture("cache-model-2", undefined, "qwen2");
    expectSuccess(await cli(["lens", "--model", other, "--prompt", "hi", "--quiet"], env));
    const list = await cli(["cache", "list"], env);
    expectSuccess(list);
    assert.match(list.stdout, /converted models \(compiled\/\): 2, [\d.]+ MiB/);
    assert.match(list.stdout, new RegExp(`${key}\\s+[\\d.]+ MiB\\s+used \\d{4}-\\d\\d-\\d\\d\\s+cache-model`));
    assert.match(list.stdout, /nothing to prune/);

    const later = new Date(Date.now() + 5000);
    fs.utimesSync(path.join(model, "model.safetensors"), later, later);
    const stale = await cli(["cache", "list"], env);
    assert.match(stale.stdout, /\[stale: source .*model\.safetensors has changed since/);
    const dry = await cli(["cache", "prune", "--dry-run"], env);
    expectSuccess(dry);
    assert.match(dry.stdout, /would remove 1 item/);
    assert.ok(fs.existsSync(path.join(compiled, key)));
    const pruned = await cli(["cache", "prune"], env);
    expectSuccess(pruned);
    assert.match(pruned.stdout, new RegExp(`removed .*${key}.*has changed since`));
    assert.deepEqual(fs.readdirSync(compiled).length, 1, "the other model's folder stays");

    // Not used for N days: --older-than.
    const aged = await cli(["cache", "prune", "--older-than", "0"], env);
    expectSuccess(aged);
    assert.deepEqual(fs.readdirSync(compiled), []);
  });

  test("an older conversion of the same source (a format change) is superseded", async () => {
    const c2 = path.join(tmp, "cache8b");
    const env2 = { LOGIT_LENS_CACHE: c2 };
    expectSuccess(await cli(["lens", "--model", fixture("superseded"), "--prompt", "hi", "--quiet"], env2));
    const compiled = path.join(c2, "compiled");
    const [key] = fs.readdirSync(compiled);
    const older = path.join(compiled, "fedcba9876543210fedcba98");
    fs.cpSync(path.join(compiled, key!), older, { recursive: true });
    const record = JSON.parse(fs.readFileSync(path.join(older, "source.json"), "utf8")) as { lastUsed: string };
    record.lastUsed = new Date(Date.now() - 3 * 86_400_000).toISOString();
    fs.writeFileSync(path.join(older, "source.json"), JSON.stringify(record));
    const list = await cli(["cache", "list"], env2);
    assert.match(list.stdout, /fedcba9876543210fedcba98 .*\[stale: superseded by a newer conversion of the same source\]/);
    expectSuccess(await cli(["cache", "prune"], env2));
    assert.deepEqual(fs.readdirSync(compiled), [key]);
  });

  test("bad cache arguments are one line", async () => {
    expectCleanFailure(await cli(["cache", "shrink"], env), /unknown 'cache' subcommand 'shrink'/);
    expectCleanFailure(await cli(["cache", "prune", "--older-than", "-3"], env), /--older-than must be a number of days/);
  });
});

describe("9. environment failures are user errors", () => {
  test("an unusable cache falls back to a temporary one, with a warning", async () => {
    const file = path.join(tmp, "not-a-folder");
    fs.writeFileSync(file, "x");
    const tmpdir = path.join(tmp, "tmpdir");
    fs.mkdirSync(tmpdir);
    const r = await cli(["lens", "--model", fixture("ro-cache"), "--prompt", "hi", "--quiet", "--json"], { LOGIT_LENS_CACHE: path.join(file, "cache"), TMPDIR: tmpdir });
    expectSuccess(r);
    assert.match(r.stderr, /warning: the cache .* is not writable \(ENOTDIR\); converting into .*tmpdir/);
    assert.ok(JSON.parse(r.stdout).layers);
  });

  test("a malformed rope_parameters is one line, not an internal error", async () => {
    expectCleanFailure(await cli(["inspect", "--model", fixture("rope-string", (c) => (c["rope_parameters"] = "fast"))]), /"rope_parameters" is "fast", not an object/);
    expectCleanFailure(await cli(["inspect", "--model", fixture("rope-null", (c) => (c["rope_parameters"] = { full_attention: null }))]), /"rope_parameters.full_attention" is null/);
  });

  test("a full disk is one line saying so", { skip: !fs.existsSync("/dev/full") && "no /dev/full here" }, async () => {
    expectCleanFailure(await cli(["inspect", "--model", fixture("full-disk"), "--out", "/dev/full"]), /no space left on the device/);
    assert.ok(fs.statSync("/dev/full").isCharacterDevice());
  });
});

describe("10. generation that reaches the context limit", () => {
  test("reports stop_reason context-limit, in JSON and on the terminal", async () => {
    const dir = fixture("short-context", (c) => (c["max_position_embeddings"] = 8));
    const r = await cli(["generate", "--model", dir, "--prompt", "hello", "--max-new-tokens", "50", "--json", "--quiet"]);
    expectSuccess(r);
    const report = JSON.parse(r.stdout) as { generation: { stop_reason: string }; tokens: unknown[] };
    assert.equal(report.tokens.length, 8);
    assert.equal(report.generation.stop_reason, "context-limit");
    const t = await cli(["generate", "--model", dir, "--prompt", "hello", "--max-new-tokens", "50", "--quiet", "--no-color"]);
    expectSuccess(t);
    assert.match(t.stdout, /stopped at the model's context limit of 8 tokens/);
  });
});
