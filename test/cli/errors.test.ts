/**
 * The command line on bad input: every mistake a user can make (or a broken file they can have)
 * must end as ONE line on stderr naming the problem, a non-zero exit code, no stack trace, and no
 * hang. Also checks the `inspect --json` and `lens --json` documents on the real SmolLM2 model.
 *
 * Broken models are temp copies of the real SmolLM2 GGUF (truncated, patched), tiny GGUFs written
 * here, and copies of the tiny Hugging Face fixtures. Runs on temp models use a temp
 * LOGIT_LENS_CACHE so that nothing converted from a broken file lands in the user's cache.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readGguf } from "../../src/formats/gguf.js";
import { runCli, REPO_ROOT, type CliResult } from "../helpers/run-cli.js";
import { realModelPath } from "../helpers/real-models.js";
import { writeGguf } from "../helpers/gguf-writer.js";

const SMOL = "smollm2-135m-instruct";
const TIMEOUT_MS = 60_000;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-cli-errors-"));
const tmpCache = path.join(tmp, "cache");
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let smolPath = "";
before(async () => {
  smolPath = await realModelPath(SMOL);
});

/** Runs the CLI on a temp model (quiet, temp cache). */
function cliTemp(args: string[]): Promise<CliResult> {
  return runCli([...args, "--quiet"], { timeoutMs: TIMEOUT_MS, env: { LOGIT_LENS_CACHE: tmpCache } });
}

/** Runs the CLI with the user's cache (for the aliases). */
function cli(args: string[]): Promise<CliResult> {
  return runCli(args, { timeoutMs: TIMEOUT_MS });
}

/** One line on stderr matching `pattern`, non-zero exit, no stack trace, no hang, nothing on stdout. */
function expectCleanFailure(r: CliResult, pattern: RegExp): string {
  const show = `exit ${r.code}${r.signal ? ` (${r.signal})` : ""}, stderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(0, 500)}`;
  assert.equal(r.timedOut, false, `the CLI hung (killed after ${TIMEOUT_MS} ms); ${show}`);
  assert.notEqual(r.code, 0, `expected a non-zero exit; ${show}`);
  assert.equal(typeof r.code, "number", `expected an exit code, not a signal; ${show}`);
  assert.ok(!r.stderr.includes("    at "), `stack trace on stderr; ${show}`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.length, 1, `expected exactly one line on stderr; ${show}`);
  const line = lines[0]!;
  assert.match(line, /^logit-lens: /, show);
  assert.doesNotMatch(line, /internal error/, `a user mistake reported as an internal error; ${show}`);
  assert.match(line, pattern, show);
  assert.equal(r.stdout, "", `nothing expected on stdout; ${show}`);
  return line;
}

// ---------------------------------------------------------------- file builders

function copyTruncated(src: string, name: string, size: number): string {
  const dst = path.join(tmp, name);
  fs.copyFileSync(src, dst);
  fs.truncateSync(dst, size);
  return dst;
}

/** Header positions of one tensor-info entry: where its dims and its data offset are written. */
function tensorInfoPosition(file: string, tensor: string): { nDims: number; dimsAt: number; typeAt: number; offsetAt: number } {
  const g = readGguf(file);
  const header = Buffer.alloc(g.dataOffset);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, header, 0, header.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  const nameBytes = Buffer.from(tensor, "utf8");
  const needle = Buffer.alloc(8 + nameBytes.length);
  needle.writeBigUInt64LE(BigInt(nameBytes.length));
  nameBytes.copy(needle, 8);
  const at = header.lastIndexOf(needle);
  assert.ok(at > 0, `tensor info for ${tensor} not found in ${file}`);
  const nDims = header.readUInt32LE(at + needle.length);
  const dimsAt = at + needle.length + 4;
  const typeAt = dimsAt + 8 * nDims;
  return { nDims, dimsAt, typeAt, offsetAt: typeAt + 4 };
}

/** A copy of `src` with bytes patched by `patch(fd)`. */
function patchedCopy(src: string, name: string, patch: (fd: number) => void): string {
  const dst = path.join(tmp, name);
  fs.copyFileSync(src, dst);
  const fd = fs.openSync(dst, "r+");
  try {
    patch(fd);
  } finally {
    fs.closeSync(fd);
  }
  return dst;
}

function writeU64(fd: number, at: number, value: number | bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  fs.writeSync(fd, b, 0, 8, at);
}

/** Copies a tiny Hugging Face fixture folder (test/fixtures/tiny/<arch>) to a temp folder. */
function copyFixture(arch: string, name: string): string {
  const src = path.join(REPO_ROOT, "test", "fixtures", "tiny", arch);
  const dst = path.join(tmp, name);
  fs.mkdirSync(dst, { recursive: true });
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    if (fs.existsSync(path.join(src, f))) fs.copyFileSync(path.join(src, f), path.join(dst, f));
  }
  return dst;
}

/** Rewrites a safetensors file without `drop` (the data section re-packed, offsets recomputed). */
function dropSafetensorsTensor(file: string, drop: string): void {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  assert.ok(header[drop], `${file} has no tensor ${drop}`);
  const data = buf.subarray(8 + n);
  const out: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let pos = 0;
  for (const [name, entry] of Object.entries(header)) {
    if (name === drop) continue;
    if (name === "__metadata__") { out[name] = entry; continue; }
    const bytes = data.subarray(entry.data_offsets[0], entry.data_offsets[1]);
    out[name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [pos, pos + bytes.length] };
    chunks.push(bytes);
    pos += bytes.length;
  }
  let json = Buffer.from(JSON.stringify(out), "utf8");
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, ...chunks]));
}

// ---------------------------------------------------------------- broken model files

describe("broken model files", () => {
  test("random bytes named x.gguf", async () => {
    const file = path.join(tmp, "x.gguf");
    fs.writeFileSync(file, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24)));
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /not a GGUF file/);
  });

  test("an empty .gguf file", async () => {
    const file = path.join(tmp, "empty.gguf");
    fs.writeFileSync(file, "");
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /not a GGUF file|empty|truncated/);
  });

  for (const [label, size] of [["in the header counts", 20], ["in the metadata", 4000], ["in the vocabulary", 300_000]] as const) {
    test(`SmolLM2 truncated mid-header (${label})`, async () => {
      const file = copyTruncated(smolPath, `trunc-header-${size}.gguf`, size);
      expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /truncated/);
    });
  }

  test("SmolLM2 truncated mid-tensor-data", async () => {
    const size = Math.floor(fs.statSync(smolPath).size * 0.6);
    const file = copyTruncated(smolPath, "trunc-data.gguf", size);
    const line = expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /truncated/);
    assert.match(line, /tensor/, "the message should name the tensor cut off");
  });

  test("SmolLM2 truncated by one byte (last tensor incomplete)", async () => {
    const file = copyTruncated(smolPath, "trunc-1.gguf", fs.statSync(smolPath).size - 1);
    expectCleanFailure(await cliTemp(["inspect", "--model", file]), /truncated/);
  });

  test("a tensor offset past the end of the file", async () => {
    const g = readGguf(smolPath);
    const pos = tensorInfoPosition(smolPath, "blk.3.attn_q.weight");
    const past = Math.ceil((g.fileSize - g.dataOffset + 4096) / g.alignment) * g.alignment;
    const file = patchedCopy(smolPath, "offset-past-eof.gguf", (fd) => writeU64(fd, pos.offsetAt, past));
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /blk\.3\.attn_q\.weight.*(truncated|past|beyond|only \d+ bytes)/);
  });

  test("a tensor whose dimensions claim more data than the file holds", async () => {
    const pos = tensorInfoPosition(smolPath, "token_embd.weight");
    const file = patchedCopy(smolPath, "dims-lie.gguf", (fd) => writeU64(fd, pos.dimsAt + 8, 49152 * 64));
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /token_embd\.weight.*(truncated|past|beyond|only \d+ bytes)/);
  });

  test("a tensor whose dimensions do not fit the model (shape lie within the file)", async () => {
    // blk.0.attn_q.weight is [576, 576]; claim [576, 64]: the bytes exist, but the shape is wrong.
    const pos = tensorInfoPosition(smolPath, "blk.0.attn_q.weight");
    assert.equal(pos.nDims, 2);
    const file = patchedCopy(smolPath, "shape-lie.gguf", (fd) => writeU64(fd, pos.dimsAt + 8, 64));
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /blk\.0\.attn_q\.weight|q_proj|shape/);
  });

  test("a misaligned tensor offset", async () => {
    const pos = tensorInfoPosition(smolPath, "blk.5.ffn_up.weight");
    const file = patchedCopy(smolPath, "misaligned.gguf", (fd) => {
      const b = Buffer.alloc(8);
      fs.readSync(fd, b, 0, 8, pos.offsetAt);
      writeU64(fd, pos.offsetAt, b.readBigUInt64LE(0) + 4n);
    });
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /aligned|corrupt/);
  });

  test("a GGUF of an unsupported architecture (mamba)", async () => {
    const file = writeGguf(path.join(tmp, "mamba.gguf"), {
      "general.architecture": "mamba",
      "general.name": "tiny mamba",
      "mamba.context_length": { u32: 128 },
      "mamba.embedding_length": { u32: 8 },
      "mamba.block_count": { u32: 1 },
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.tokens": ["a", "b", "c", "d"],
    }, [{ name: "token_embd.weight", shape: [4, 8] }, { name: "output_norm.weight", shape: [8] }]);
    const line = expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /unsupported architecture/);
    assert.match(line, /mamba/);
    expectCleanFailure(await cliTemp(["inspect", "--model", file]), /unsupported architecture.*mamba/);
  });

  test("a GGUF without general.architecture", async () => {
    const file = writeGguf(path.join(tmp, "noarch.gguf"), { "general.name": "nothing" }, [{ name: "token_embd.weight", shape: [4, 8] }]);
    expectCleanFailure(await cliTemp(["lens", "--model", file, "--prompt", "hi"]), /architecture/);
  });

  test("a Hugging Face folder of an unsupported architecture (bert)", async () => {
    const dir = copyFixture("llama", "bert-folder");
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({
      architectures: ["BertModel"], model_type: "bert", hidden_size: 64, num_hidden_layers: 2,
      num_attention_heads: 4, intermediate_size: 128, vocab_size: 512, max_position_embeddings: 128,
    }));
    const line = expectCleanFailure(await cliTemp(["lens", "--model", dir, "--prompt", "hi"]), /unsupported architecture/);
    assert.match(line, /bert/);
  });

  test("a Hugging Face folder with invalid config.json", async () => {
    const dir = copyFixture("llama", "bad-config");
    fs.writeFileSync(path.join(dir, "config.json"), "{ this is not json");
    expectCleanFailure(await cliTemp(["lens", "--model", dir, "--prompt", "hi"]), /config\.json.*(JSON|json)/);
  });

  test("a Hugging Face folder missing a tensor", async () => {
    const dir = copyFixture("llama", "missing-tensor");
    dropSafetensorsTensor(path.join(dir, "model.safetensors"), "model.layers.1.self_attn.q_proj.weight");
    const line = expectCleanFailure(await cliTemp(["lens", "--model", dir, "--prompt", "hi"]), /missing tensor/);
    assert.match(line, /model\.layers\.1\.self_attn\.q_proj\.weight/);
  });

  test("a Hugging Face folder whose safetensors is truncated", async () => {
    const dir = copyFixture("llama", "trunc-safetensors");
    const file = path.join(dir, "model.safetensors");
    fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    expectCleanFailure(await cliTemp(["lens", "--model", dir, "--prompt", "hi"]), /truncated|corrupt|past|only \d+ bytes/);
  });

  test("a Hugging Face folder without weights", async () => {
    const dir = copyFixture("llama", "no-weights");
    fs.rmSync(path.join(dir, "model.safetensors"));
    expectCleanFailure(await cliTemp(["lens", "--model", dir, "--prompt", "hi"]), /safetensors/);
  });
});

// ---------------------------------------------------------------- bad arguments

describe("bad arguments", () => {
  test("a non-existent model path", async () => {
    const missing = path.join(tmp, "does-not-exist", "model.gguf");
    const line = expectCleanFailure(await cliTemp(["lens", "--model", missing, "--prompt", "hi"]), /no such file/);
    assert.ok(line.includes(missing), "the message should name the path");
  });

  test("an unknown alias", async () => {
    const line = expectCleanFailure(await cliTemp(["lens", "--model", "no-such-model-alias", "--prompt", "hi"]), /unknown model 'no-such-model-alias'/);
    assert.match(line, /smollm2-135m-instruct/, "the message should list the aliases");
  });

  test("an empty prompt", async () => {
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "", "-q"]), /prompt is empty/);
  });

  test("no prompt", async () => {
    expectCleanFailure(await cli(["lens", "--model", SMOL, "-q"]), /--prompt/);
  });

  test("a prompt longer than the model's context", async () => {
    const line = expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "hello ".repeat(9000), "-q"]), /context/);
    assert.match(line, /8192/, "the message should give the context length");
  });

  test("an unknown command", async () => {
    expectCleanFailure(await cliTemp(["frobnicate"]), /unknown command 'frobnicate'/);
  });

  test("an unknown option", async () => {
    expectCleanFailure(await cliTemp(["lens", "--model", SMOL, "--prompt", "hi", "--frobnicate"]), /unknown option '--frobnicate'/i);
  });

  test("a missing option value", async () => {
    const r = await runCli(["lens", "--prompt"], { timeoutMs: TIMEOUT_MS, env: { LOGIT_LENS_CACHE: tmpCache } });
    expectCleanFailure(r, /--prompt/);
  });

  for (const k of ["0", "-3", "abc", "1.5", ""]) {
    test(`bad --top-k '${k}'`, async () => {
      expectCleanFailure(await cliTemp(["lens", "--model", SMOL, "--prompt", "hi", `--top-k=${k}`]), /--top-k/);
    });
  }

  test("bad --variant", async () => {
    expectCleanFailure(await cliTemp(["lens", "--model", SMOL, "--prompt", "hi", "--variant", "tuned"]), /--variant/);
  });

  test("an unknown --points name", async () => {
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "hi", "--points", "resid_post,resid_sideways", "-q"]), /unknown --points name 'resid_sideways'/);
  });

  test("a --track target that tokenizes to nothing", async () => {
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "hi", "--track", "", "-q"]), /--track/);
  });

  test("a --track-family that matches no token", async () => {
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "hi", "--track-family", "contains:zzqqxxjj", "-q"]), /no token/);
  });

  test("--positions out of range", async () => {
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "The capital of France is", "--positions", "7", "-q"]), /--positions: 7 is out of range for a prompt of 5 tokens/);
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "The capital of France is", "--positions", "-9", "-q"]), /--positions/);
  });

  test("bad generation options", async () => {
    expectCleanFailure(await cliTemp(["generate", "--model", SMOL, "--prompt", "hi", "--temperature", "-1"]), /--temperature/);
    expectCleanFailure(await cliTemp(["generate", "--model", SMOL, "--prompt", "hi", "--top-p", "0"]), /--top-p/);
    expectCleanFailure(await cliTemp(["generate", "--model", SMOL, "--prompt", "hi", "--max-new-tokens", "0"]), /--max-new-tokens/);
  });

  test("an unknown --format, and png without --out", async () => {
    expectCleanFailure(await cliTemp(["lens", "--model", SMOL, "--prompt", "hi", "--format", "pdf"]), /unknown --format 'pdf'/);
    expectCleanFailure(await cliTemp(["lens", "--model", SMOL, "--prompt", "hi", "--format", "png"]), /--out/);
  });

  test("--out into a non-existent folder", async () => {
    const out = path.join(tmp, "no-such-folder", "out.json");
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "hi", "--json", "--out", out, "-q"]), /does not exist|cannot write/);
    assert.equal(fs.existsSync(out), false);
  });

  test("an existing --out file is not clobbered when the run fails", async () => {
    const out = path.join(tmp, "keep.json");
    fs.writeFileSync(out, "precious\n");
    // Fails while opening the model...
    expectCleanFailure(await cliTemp(["lens", "--model", path.join(tmp, "x.gguf"), "--prompt", "hi", "--json", "--out", out]), /./);
    assert.equal(fs.readFileSync(out, "utf8"), "precious\n");
    // ...and after the model is loaded (prompt too long).
    expectCleanFailure(await cli(["lens", "--model", SMOL, "--prompt", "hello ".repeat(9000), "--json", "--out", out, "-q"]), /context/);
    assert.equal(fs.readFileSync(out, "utf8"), "precious\n");
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.startsWith("keep.json") && f !== "keep.json"), [], "no temp files left next to --out");
  });

  test("without --quiet, a failure still ends in one error line and no stack", async () => {
    const r = await runCli(["lens", "--model", path.join(tmp, "x.gguf"), "--prompt", "hi"], { timeoutMs: TIMEOUT_MS, env: { LOGIT_LENS_CACHE: tmpCache } });
    assert.notEqual(r.code, 0);
    assert.ok(!r.stderr.includes("    at "), r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.match(lines[lines.length - 1]!, /^logit-lens: .*not a GGUF file/);
  });
});

// ---------------------------------------------------------------- JSON documents on SmolLM2

describe("JSON output on SmolLM2", () => {
  test("inspect --json", async () => {
    const r = await cli(["inspect", "--model", SMOL, "--json", "-q"]);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(info["architecture"], "llama");
    assert.equal(info["n_layers"], 30);
    assert.equal(info["hidden_size"], 576);
    assert.equal(info["vocab_size"], 49152);
    assert.equal(info["n_heads"], 9);
    assert.equal(info["n_kv_heads"], 3);
    assert.equal(info["head_dim"], 64);
    assert.equal(info["intermediate_size"], 1536);
    assert.equal(info["context_length"], 8192);
    assert.equal(info["tied_embeddings"], true);
    assert.equal(info["format"], "gguf");
    assert.equal(info["source"], smolPath);
    assert.ok(typeof info["parameters"] === "number" && info["parameters"] > 130e6 && info["parameters"] < 140e6, `parameters ${info["parameters"]}`);
    assert.ok(info["tensor_types"] && typeof info["tensor_types"] === "object");
  });

  test("lens --json: structure, and ' Paris' after 'The capital of France is'", async () => {
    const r = await cli(["lens", "--model", SMOL, "--prompt", "The capital of France is", "--json", "-q", "--top-k", "5"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "--quiet prints nothing on stderr");
    interface Top { id: number; text: string; bytes: string; prob: number }
    interface Doc {
      model: { name: string; architecture: string; n_layers: number; hidden_size: number; vocab_size: number };
      tokens: { id: number; text: string; bytes: string }[];
      layers: { hook: string; layer: number; positions: { position: number; top: Top[]; entropy: number; kl_to_final: number }[] }[];
      final: { positions: { position: number; top: Top[]; entropy: number }[] };
    }
    const doc = JSON.parse(r.stdout) as Doc;
    assert.equal(doc.model.architecture, "llama");
    assert.equal(doc.model.n_layers, 30);
    assert.equal(doc.model.hidden_size, 576);
    assert.equal(doc.model.vocab_size, 49152);
    const T = doc.tokens.length;
    assert.equal(T, 5, "SmolLM2 tokenizes the prompt into 5 tokens, no BOS");
    assert.equal(doc.tokens.map((t) => Buffer.from(t.bytes, "hex").toString("utf8")).join(""), "The capital of France is");
    assert.equal(doc.layers.length, 30);
    const checkTop = (top: Top[], where: string) => {
      assert.equal(top.length, 5, where);
      let prev = Infinity;
      for (const e of top) {
        assert.ok(Number.isInteger(e.id) && e.id >= 0 && e.id < 49152, `${where}: id ${e.id}`);
        assert.equal(typeof e.text, "string", where);
        assert.match(e.bytes, /^([0-9a-f]{2})*$/, `${where}: bytes ${e.bytes}`);
        assert.ok(e.prob >= 0 && e.prob <= 1 && e.prob <= prev + 1e-9, `${where}: prob ${e.prob}`);
        prev = e.prob;
      }
    };
    doc.layers.forEach((layer, l) => {
      assert.equal(layer.layer, l);
      assert.equal(layer.hook, `blocks.${l}.hook_resid_post`);
      assert.equal(layer.positions.length, T, `layer ${l}: one entry per token`);
      layer.positions.forEach((p, i) => {
        assert.equal(p.position, i);
        checkTop(p.top, `layer ${l} position ${i}`);
        assert.ok(Number.isFinite(p.entropy) && p.entropy >= 0, `layer ${l} position ${i}: entropy ${p.entropy}`);
        assert.ok(Number.isFinite(p.kl_to_final) && p.kl_to_final > -1e-3, `layer ${l} position ${i}: kl ${p.kl_to_final}`);
      });
    });
    assert.equal(doc.final.positions.length, T);
    doc.final.positions.forEach((p, i) => checkTop(p.top, `final position ${i}`));
    const best = doc.final.positions[T - 1]!.top[0]!;
    assert.equal(Buffer.from(best.bytes, "hex").toString("utf8"), " Paris");
    assert.ok(best.prob > 0.5, `p(" Paris") = ${best.prob}`);
    // The last layer is the model's output.
    assert.deepEqual(doc.layers[29]!.positions[T - 1]!.top.map((e) => e.id), doc.final.positions[T - 1]!.top.map((e) => e.id));
  });
});
