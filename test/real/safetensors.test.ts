/**
 * The Hugging Face folder path on a real model: a folder made at test time (into the cache, never
 * committed) from the real SmolLM2 weights: config.json, the weights as two safetensors shards with
 * an index, tokenizer.json + tokenizer_config.json built from the GGUF's vocabulary, merges and
 * special tokens the way the original SmolLM2 tokenizer.json is laid out. Loading that folder must
 * tokenize and compute exactly as loading the GGUF does.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LoadedModel } from "../../src/engine/model.js";
import { LogitLens } from "../../src/lens/logit-lens.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { readGguf } from "../../src/formats/gguf.js";
import { cacheRoot } from "../../src/sources/cache.js";
import { createProgress } from "../../src/progress.js";

const quiet = createProgress({ quiet: true });

/** Writes `tensors` (name -> [shape, float32 data]) as one safetensors file. */
function writeSafetensors(file: string, tensors: [string, number[], Float32Array][]): void {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const [name, shape, data] of tensors) {
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const fd = fs.openSync(file, "w");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  for (const [, , data] of tensors) fs.writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  fs.closeSync(fd);
}

async function makeHfFolder(ggufPath: string, model: LoadedModel): Promise<string> {
  const dir = path.join(cacheRoot(), "test-models", "smollm2-135m-instruct-hf");
  if (fs.existsSync(path.join(dir, "complete"))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const c = model.config;
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: c.hidden, intermediate_size: c.intermediate,
    num_hidden_layers: c.nLayers, num_attention_heads: c.nHeads, num_key_value_heads: c.nKvHeads, head_dim: c.headDim,
    vocab_size: c.vocabSize, max_position_embeddings: c.maxPositions, rms_norm_eps: c.normEps, rope_theta: c.ropeTheta,
    hidden_act: "silu", tie_word_embeddings: c.tiedEmbeddings, bos_token_id: 1, eos_token_id: 2, torch_dtype: "float32",
  }, null, 1));

  // Weights: the dequantized fp32 tensors (transformers' names and layouts), split over two shards.
  const names = model.store.names().sort();
  const shards: [string, number[], Float32Array][][] = [[], []];
  const weightMap: Record<string, string> = {};
  names.forEach((name, i) => {
    const { data, shape } = model.store.tensorF32(name);
    const shard = i < names.length / 2 ? 0 : 1;
    shards[shard]!.push([name, shape, data]);
    weightMap[name] = `model-0000${shard + 1}-of-00002.safetensors`;
  });
  shards.forEach((s, i) => writeSafetensors(path.join(dir, `model-0000${i + 1}-of-00002.safetensors`), s));
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));

  // Tokenizer: SmolLM2's tokenizer.json layout (byte-level BPE, digits split one by one).
  const meta = readGguf(ggufPath).metadata;
  const tokens = meta.get("tokenizer.ggml.tokens") as string[];
  const types = meta.get("tokenizer.ggml.token_type") as number[];
  const merges = meta.get("tokenizer.ggml.merges") as string[];
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => (vocab[t] = i));
  const special = tokens.map((t, id) => ({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })).filter((t) => types[t.id] === 3);
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify({
    version: "1.0", truncation: null, padding: null, added_tokens: special, normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits: true }, { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }] },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  }));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify({
    add_prefix_space: false, bos_token: "<|im_start|>", eos_token: "<|im_end|>", unk_token: "<|endoftext|>",
    model_max_length: 8192, tokenizer_class: "GPT2Tokenizer", chat_template: meta.get("tokenizer.chat_template"),
  }));
  fs.writeFileSync(path.join(dir, "complete"), "");
  return dir;
}

test("real SmolLM2 as a Hugging Face folder (sharded safetensors) reads exactly like its GGUF", async () => {
  const ggufSource = await resolveModelSource("smollm2-135m-instruct", { progress: quiet });
  assert.equal(ggufSource.kind, "gguf");
  // Dequantized, so that both run the same fp32 arithmetic: this compares the readers, not the kernels.
  const gguf = await LoadedModel.load(ggufSource, quiet, { dequantize: true });
  const dir = await makeHfFolder((ggufSource as { path: string }).path, gguf);
  const hfSource = await resolveModelSource(dir, { progress: quiet });
  assert.equal(hfSource.kind, "hf-folder");
  const hf = await LoadedModel.load(hfSource, quiet);
  assert.deepEqual(JSON.parse(JSON.stringify(hf.config)), JSON.parse(JSON.stringify(gguf.config)));

  const prompts = ["The capital of France is", "Fish emoji: 🐠, horse emoji:", "In 2024, 12345 people wrote\n\tcode: don't stop!"];
  for (const prompt of prompts) assert.deepEqual(hf.tokenizer.encode(prompt), gguf.tokenizer.encode(prompt), `tokens of ${JSON.stringify(prompt)}`);
  const chat = [{ role: "user", content: "Is there a seahorse emoji?" }];
  assert.deepEqual(hf.tokenizer.encodeChat(chat, { addGenerationPrompt: true }), gguf.tokenizer.encodeChat(chat, { addGenerationPrompt: true }));

  const ids = gguf.tokenizer.encode(prompts[1]!);
  const [a, b] = [await new LogitLens(gguf).apply(ids, { topK: 5 }), await new LogitLens(hf).apply(ids, { topK: 5 })];
  a.readouts.forEach((r, l) => r.cells.forEach((cell, p) => {
    assert.deepEqual(b.readouts[l]!.cells[p]!.topIds, cell.topIds, `layer ${l} position ${p}`);
    assert.ok(Math.abs(b.readouts[l]!.cells[p]!.topLogprobs[0]! - cell.topLogprobs[0]!) < 1e-5);
  }));
  const [la, lb] = [(await (await gguf.forward([], "last")).run(ids)).logits!, (await (await hf.forward([], "last")).run(ids)).logits!];
  let err = 0;
  for (let v = 0; v < la.length; v++) err = Math.max(err, Math.abs(la[v]! - lb[v]!));
  assert.ok(err < 1e-5, `final logits differ by ${err}`);
});
