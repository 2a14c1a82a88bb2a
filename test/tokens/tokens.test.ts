/**
 * Unit tests for token bytes, rendering, chat templates and the GGUF -> tokenizer conversion on
 * small hand-made vocabularies. No model files needed (gguf-tokenizer.test.ts runs the real ones).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.js";
import type { GgufMetadata, GgufValue } from "../../src/formats/tensor-ref.js";
import { renderChatTemplate } from "../../src/tokens/chat-template.js";
import { tokenizerFromGguf } from "../../src/tokens/gguf-tokenizer.js";
import { fromHex, hex, reassemble, renderToken, utf8Segments, visibleWhitespace } from "../../src/tokens/render.js";
import {
  BYTE_TO_UNICODE,
  byteLevelToBytes,
  bytesToByteLevel,
  sentencePieceToBytes,
  tokenStringToBytes,
  utf8Bytes,
} from "../../src/tokens/token-bytes.js";
import { loadTokenizerFromHfFolder } from "../../src/tokens/tokenizer.js";

const bl = (s: string) => byteLevelToBytes(s)!;
const td = new TextDecoder();

test("GPT-2 byte decoder: 'ĠðŁĲł' is ' 🐠' (the seed's fish)", () => {
  // The middle token is U+0132 "Ĳ" (byte 0x90). The seed thread prints it as the two letters "IJ",
  // its NFKC form; those would be the bytes 49 4A. Never NFKC-normalise vocabulary strings.
  assert.equal("Ĳ".normalize("NFKC"), "IJ");
  assert.equal(hex(bl("IJ")), "494a");
  const bytes = bl("ĠðŁĲł");
  assert.equal(hex(bytes), "20f09f90a0");
  assert.equal(td.decode(bytes), " 🐠");
  // The three tokens, one by one, are not text.
  assert.deepEqual([hex(bl("ĠðŁ")), hex(bl("Ĳ")), hex(bl("ł"))], ["20f09f", "90", "a0"]);
});

test("byte-level alphabet covers all 256 bytes, both ways", () => {
  assert.equal(new Set(BYTE_TO_UNICODE).size, 256);
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(byteLevelToBytes(bytesToByteLevel(all)), all);
  assert.equal(BYTE_TO_UNICODE[0x20], "Ġ");
  assert.equal(BYTE_TO_UNICODE[0x0a], "Ċ");
  assert.equal(byteLevelToBytes("<|im_end|>€"), null, "characters outside the alphabet are not byte-level");
});

test("SentencePiece pieces: ▁ is a space, <0xNN> is one byte", () => {
  assert.equal(td.decode(sentencePieceToBytes("▁Paris")), " Paris");
  assert.deepEqual(sentencePieceToBytes("<0xF0>"), Uint8Array.of(0xf0));
  assert.deepEqual(sentencePieceToBytes("<0x0A>"), Uint8Array.of(0x0a));
  assert.equal(td.decode(sentencePieceToBytes("<0xZZ>")), "<0xZZ>");
  // Special tokens are their text; user-added SentencePiece entries still use ▁ for spaces.
  assert.equal(td.decode(tokenStringToBytes("<start_of_turn>", "sentencepiece", "special")), "<start_of_turn>");
  assert.equal(td.decode(tokenStringToBytes("▁▁", "sentencepiece", "added")), "  ");
  assert.equal(td.decode(tokenStringToBytes("<|im_end|>", "byte-level", "special")), "<|im_end|>");
});

test("renderToken: whole characters, visible whitespace, partial characters as hex with a note", () => {
  assert.deepEqual(renderToken(utf8Bytes(" Paris")), { text: "␣Paris", complete: true, hex: "205061726973" });
  assert.equal(renderToken(utf8Bytes("\n\n")).text, "↵↵");
  assert.equal(renderToken(utf8Bytes("\tx\r")).text, "→x␍");
  assert.deepEqual(renderToken(bl("ĠðŁ")), { text: "␣⟨F0 9F⟩", complete: false, hex: "20f09f", note: "emoji…" });
  assert.deepEqual(renderToken(bl("Ĳ")), { text: "⟨90⟩", complete: false, hex: "90", note: "…continuation" });
  assert.deepEqual(renderToken(bl("ł")), { text: "⟨A0⟩", complete: false, hex: "a0", note: "…continuation" });
  // CJK: 你 is E4 BD A0.
  assert.deepEqual(renderToken(Uint8Array.of(0xe4, 0xbd)), { text: "⟨E4 BD⟩", complete: false, hex: "e4bd", note: "CJK…" });
  assert.equal(renderToken(Uint8Array.of(0xa0, 0x20, 0xf0, 0x9f)).note, "…continuation, emoji…");
  assert.equal(renderToken(Uint8Array.of(0xff)).note, "invalid UTF-8");
  assert.equal(renderToken(Uint8Array.of(0xc3)).note, "Latin-1 letter…");
  for (const b of [Uint8Array.of(0xf0), Uint8Array.of(0x9f, 0x90), Uint8Array.of(0xe4)]) {
    assert.ok(!renderToken(b).text.includes("\uFFFD"), "never U+FFFD");
  }
  // Emoji and CJK that are whole stay as they are.
  assert.deepEqual(renderToken(utf8Bytes("🐠你")), { text: "🐠你", complete: true, hex: "f09f90a0e4bda0" });
});

test("visibleWhitespace hides nothing", () => {
  assert.equal(visibleWhitespace("a b"), "a␣b");
  assert.equal(visibleWhitespace("\u00a0\u200b\u3000\u0000\u007f"), "⟨U+00A0⟩⟨U+200B⟩⟨U+3000⟩␀␡");
});

test("reassemble joins ĠðŁ + Ĳ + ł into ' 🐠' and says where each character came from", () => {
  const r = reassemble([bl("ĠðŁ"), bl("Ĳ"), bl("ł")]);
  assert.equal(r.text, " 🐠");
  assert.deepEqual(
    r.spans.map((s) => [s.text, s.tokens, s.complete]),
    [
      [" ", [0, 0], true],
      ["🐠", [0, 2], true],
    ],
  );
  assert.deepEqual(r.spans[1]!.bytes, [1, 5]);
});

test("reassemble: SentencePiece byte fallback <0xF0><0x9F><0x90><0xA0> is 🐠", () => {
  const pieces = ["▁Fish", "<0xF0>", "<0x9F>", "<0x90>", "<0xA0>", "!"];
  const r = reassemble(pieces.map(sentencePieceToBytes));
  assert.equal(r.text, " Fish🐠!");
  assert.deepEqual(
    r.spans.map((s) => [s.text, s.tokens]),
    [
      [" Fish", [0, 0]],
      ["🐠", [1, 4]],
      ["!", [5, 5]],
    ],
  );
});

test("reassemble: CJK split across tokens, and an unfinished emoji at the end", () => {
  const b = utf8Bytes("你好"); // E4 BD A0 E5 A5 BD
  const r = reassemble([b.subarray(0, 2), b.subarray(2, 4), b.subarray(4)]);
  assert.equal(r.text, "你好");
  assert.deepEqual(
    r.spans.map((s) => [s.text, s.tokens]),
    [
      ["你", [0, 1]],
      ["好", [1, 2]],
    ],
  );
  const cut = reassemble([utf8Bytes("Hi"), bl("ĠðŁ")]);
  assert.equal(cut.text, "Hi ⟨F0 9F⟩");
  assert.deepEqual(cut.spans.at(-1), { text: "⟨F0 9F⟩", tokens: [1, 1], bytes: [3, 5], complete: false, note: "emoji…" });
  assert.deepEqual(reassemble([]), { text: "", spans: [] });
});

test("utf8Segments follows the maximal-subpart rule", () => {
  const segs = utf8Segments(Uint8Array.of(0x41, 0xe2, 0x82, 0x41, 0xed, 0xa0, 0x80, 0xf4, 0x90));
  assert.deepEqual(
    segs.map((s) => (s.kind === "char" ? s.text : `${s.reason}:${s.end - s.start}`)),
    ["A", "invalid:2", "A", "invalid:1", "continuation:2", "invalid:1", "continuation:1"],
  );
  assert.deepEqual(fromHex("20f09f"), Uint8Array.of(0x20, 0xf0, 0x9f));
});

// ---------------------------------------------------------------------------------------------
// GGUF metadata -> tokenizer, on tiny vocabularies

function byteLevelVocab(extra: string[]): string[] {
  return [...BYTE_TO_UNICODE, ...extra];
}

function gpt2Metadata(overrides: [string, GgufValue][] = []): GgufMetadata {
  const tokens = byteLevelVocab(["Ġt", "he", "Ġthe", "Ġf", "Ġfi", "Ġfis", "Ġfish", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
  const types = tokens.map((t) => (t.startsWith("<|") ? 3 : 1));
  return new Map<string, GgufValue>([
    ["general.architecture", "llama"],
    ["tokenizer.ggml.model", "gpt2"],
    ["tokenizer.ggml.pre", "smollm"],
    ["tokenizer.ggml.tokens", tokens],
    ["tokenizer.ggml.token_type", types],
    ["tokenizer.ggml.merges", ["Ġ t", "h e", "Ġt he", "Ġ f", "Ġf i", "Ġfi s", "Ġfis h"]],
    ["tokenizer.ggml.bos_token_id", tokens.indexOf("<|im_start|>")],
    ["tokenizer.ggml.eos_token_id", tokens.indexOf("<|im_end|>")],
    [
      "tokenizer.chat_template",
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    ],
    ...overrides,
  ]);
}

test("GGUF gpt2 vocabulary: merges, special tokens, bytes", () => {
  const tok = tokenizerFromGguf(gpt2Metadata());
  const ids = tok.encode(" the fish 🐠");
  assert.deepEqual(ids.map((i) => tok.tokenString(i)), ["Ġthe", "Ġfish", "Ġ", "ð", "Ł", "Ĳ", "ł"]);
  assert.equal(tok.addBos, false);
  assert.equal(tok.byteMode, "byte-level");
  assert.equal(td.decode(Uint8Array.from(ids.flatMap((i) => [...tok.tokenBytes(i)]))), " the fish 🐠");
  assert.equal(tok.decode(ids), " the fish 🐠");
  const chat = tok.encode("<|im_start|>user\nthe<|im_end|>");
  assert.equal(tok.tokenString(chat[0]!), "<|im_start|>");
  assert.equal(tok.tokenString(chat.at(-1)!), "<|im_end|>");
  assert.ok(tok.isSpecial(chat[0]!) && !tok.isSpecial(ids[0]!));
  // <|endoftext|> looks like an end of turn (llama.cpp's list): it ends generation too.
  assert.deepEqual(tok.eosIds.map((i) => tok.tokenString(i)).sort(), ["<|endoftext|>", "<|im_end|>"]);
  assert.equal(tok.decode(chat, { skipSpecialTokens: true }), "user\nthe");
  assert.equal(
    tok.applyChatTemplate([{ role: "user", content: "hi" }]),
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.equal(tok.tokenId("Ġthe"), 258);
  assert.equal(tok.tokenString(100000), "<id 100000>");
  assert.ok(tok.isSpecial(100000));
});

test("GGUF add_bos_token puts BOS first; encodeChat does not double it", () => {
  const md = gpt2Metadata([
    ["tokenizer.ggml.add_bos_token", true],
    ["tokenizer.chat_template", "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"],
  ]);
  const tok = tokenizerFromGguf(md);
  const bos = tok.bosId!;
  assert.equal(tok.encode("the")[0], bos);
  assert.notEqual(tok.encode("the", { addSpecialTokens: false })[0], bos);
  const ids = tok.encodeChat([{ role: "user", content: " the" }]);
  assert.deepEqual(ids.map((i) => tok.tokenString(i)), ["<|im_start|>", "Ġthe"]);
});

test("GGUF errors are one-line UserErrors naming the problem", () => {
  assert.throws(() => tokenizerFromGguf(gpt2Metadata([["tokenizer.ggml.model", "rwkv"]])), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /unsupported tokenizer model 'rwkv'/);
    return true;
  });
  assert.throws(() => tokenizerFromGguf(gpt2Metadata([["tokenizer.ggml.pre", "kimi-k2"]])), /unsupported pre-tokenizer 'kimi-k2'/);
  assert.throws(() => tokenizerFromGguf(new Map()), /has no tokenizer/);
  assert.throws(() => tokenizerFromGguf(gpt2Metadata([["tokenizer.ggml.tokens", 5]])), UserError);
  const noTemplate = gpt2Metadata();
  noTemplate.delete("tokenizer.chat_template");
  assert.throws(() => tokenizerFromGguf(noTemplate).applyChatTemplate([{ role: "user", content: "x" }]), /no chat template/);
});

function spmMetadata(addSpacePrefix: boolean): GgufMetadata {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  const scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
    scores.push(0);
  }
  // Higher score merges first. "ab" beats "▁a", so "▁ab" is reached as ▁ + ab.
  const pieces: [string, number][] = [["▁", -1], ["a", -2], ["b", -3], ["ab", -4], ["▁a", -5], ["▁ab", -6], ["c", -7]];
  for (const [p, s] of pieces) {
    tokens.push(p);
    types.push(1);
    scores.push(s);
  }
  tokens.push("<start_of_turn>");
  types.push(3);
  scores.push(0);
  return new Map<string, GgufValue>([
    ["general.architecture", "gemma3"],
    ["tokenizer.ggml.model", "llama"],
    ["tokenizer.ggml.tokens", tokens],
    ["tokenizer.ggml.token_type", types],
    ["tokenizer.ggml.scores", scores],
    ["tokenizer.ggml.add_space_prefix", addSpacePrefix],
  ]);
}

test("GGUF SentencePiece: score-ordered merges, byte fallback, space prefix", () => {
  const tok = tokenizerFromGguf(spmMetadata(true));
  assert.equal(tok.byteMode, "sentencepiece");
  assert.equal(tok.addBos, true);
  const ids = tok.encode("ab é");
  assert.deepEqual(ids.map((i) => tok.tokenString(i)), ["<s>", "▁ab", "▁", "<0xC3>", "<0xA9>"]);
  assert.equal(td.decode(Uint8Array.from(ids.slice(1).flatMap((i) => [...tok.tokenBytes(i)]))), " ab é");
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "ab é", "decode drops the prepended space");
  // After a special token the text gets the space prefix again (llama.cpp does this too).
  assert.deepEqual(
    tok.encode("<start_of_turn>ab", { addSpecialTokens: false }).map((i) => tok.tokenString(i)),
    ["<start_of_turn>", "▁ab"],
  );
  const noPrefix = tokenizerFromGguf(spmMetadata(false));
  assert.deepEqual(noPrefix.encode("ab", { addSpecialTokens: false }).map((i) => noPrefix.tokenString(i)), ["ab"]);
  // Gemma GGUFs carry no chat template; the Gemma one is the fallback for the architecture.
  assert.equal(
    noPrefix.applyChatTemplate([{ role: "user", content: "hi" }]),
    "<s><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
  );
});

test("chat templates: raise_exception and broken templates become UserErrors", () => {
  const tpl = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok";
  assert.equal(renderChatTemplate(tpl, [{ role: "user", content: "x" }], {}), "ok");
  assert.throws(
    () => renderChatTemplate(tpl, [{ role: "assistant", content: "x" }], {}),
    (e: unknown) => e instanceof UserError && /first message must be from the user/.test(e.message),
  );
  assert.throws(() => renderChatTemplate("{% for %}", [{ role: "user", content: "x" }], {}), UserError);
  assert.throws(() => renderChatTemplate("x", [], {}), UserError);
});

test("Hugging Face folder: tokenizer.json + tokenizer_config.json", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-hf-"));
  try {
    const vocab: Record<string, number> = {};
    BYTE_TO_UNICODE.forEach((c, i) => (vocab[c] = i));
    vocab["Ġt"] = 256;
    vocab["he"] = 257;
    vocab["Ġthe"] = 258;
    const tokenizerJson = {
      version: "1.0",
      added_tokens: [
        { id: 259, content: "<|begin|>", special: true, normalized: false, lstrip: false, rstrip: false, single_word: false },
        { id: 260, content: "<|eot|>", special: true, normalized: false, lstrip: false, rstrip: false, single_word: false },
      ],
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<|begin|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [],
        special_tokens: { "<|begin|>": { id: "<|begin|>", ids: [259], tokens: ["<|begin|>"] } },
      },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: "BPE", vocab, merges: ["Ġ t", "h e", "Ġt he"], unk_token: null, byte_fallback: false },
    };
    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson));
    fs.writeFileSync(
      path.join(dir, "tokenizer_config.json"),
      JSON.stringify({ bos_token: "<|begin|>", eos_token: { content: "<|eot|>" }, chat_template: "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}" }),
    );
    const tok = loadTokenizerFromHfFolder(dir);
    assert.equal(tok.byteMode, "byte-level");
    assert.equal(tok.bosId, 259);
    assert.equal(tok.addBos, true, "the post-processor's template starts with BOS");
    assert.deepEqual(tok.eosIds, [260]);
    assert.deepEqual(tok.encode(" the 🐠").map((i) => tok.tokenString(i)), ["<|begin|>", "Ġthe", "Ġ", "ð", "Ł", "Ĳ", "ł"]);
    assert.equal(tok.applyChatTemplate([{ role: "user", content: " the" }]), "<|begin|> the<|eot|>");
    assert.deepEqual(tok.encodeChat([{ role: "user", content: " the" }]), [259, 258, 260]);
    assert.ok(tok.isSpecial(260) && !tok.isSpecial(258));
    assert.equal(td.decode(tok.tokenBytes(260)), "<|eot|>");
    assert.throws(() => loadTokenizerFromHfFolder(path.join(dir, "missing")), /no tokenizer.json/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
