/**
 * A GGUF file's embedded tokenizer, rebuilt as a Hugging Face tokenizer.json object and run by
 * tokenizers.js, so that it tokenizes exactly as llama.cpp does (checked against node-llama-cpp
 * in test/tokens/gguf-tokenizer.test.ts).
 *
 * GGUF stores the vocabulary as arrays (`tokenizer.ggml.tokens`, `.token_type`, `.scores`,
 * `.merges`) and names the algorithm (`tokenizer.ggml.model`) and the pre-tokenizer
 * (`tokenizer.ggml.pre`); llama.cpp's llama-vocab.cpp turns those names into behaviour. We do the
 * same translation:
 *
 * - `gpt2`: byte-level BPE with the file's merges. llama.cpp splits the text with a list of
 *   regexes chosen by `tokenizer.ggml.pre` (each regex splits the pieces the previous one left,
 *   keeping both matches and the text between them): a Sequence of Split(Isolated)
 *   pre-tokenizers, then ByteLevel. Those lists and names are llama.cpp's own, generated from its
 *   source into llamacpp-pretokenizers.generated.ts by tools/llamacpp/gen-pretokenizers.mjs. Some pre-tokenizers (llama3, tekken...) look a whole piece up
 *   in the vocabulary before merging (`ignore_merges`).
 * - `llama`: SentencePiece BPE (Llama 2, Gemma 1-3, Phi-3). llama.cpp replaces spaces by `▁`
 *   (after prepending one when `add_space_prefix`), then repeatedly merges the adjacent pair whose
 *   concatenation is a vocabulary entry with the highest score, leftmost first on ties; leftover
 *   characters become `<0xNN>` byte tokens. That is a BPE whose merge rank is the score order of
 *   the merged entry: we give tokenizers.js exactly that rank table (built here from the scores)
 *   and byte fallback.
 * - `gemma4`: BPE with merges over raw UTF-8 with `▁` for spaces, split only at newlines.
 *
 * Control, user-defined and unknown-type tokens (after llama.cpp's fix-ups by token text: "</s>",
 * "<|im_end|>" and other end-of-turn texts are always control tokens) are split out of the raw
 * text before anything else, in llama.cpp's order (longest first) and with its whitespace rules
 * (SpecialTokenSplitter). They also end up in tokenizer.json's added_tokens, for completeness.
 *
 * Loading speed: a 262k vocabulary as a JSON object, and hundreds of thousands of merges keyed
 * the way tokenizers.js keys them, cost more than a second to build. So the tokenizer.json
 * object holds everything but the two big tables, and the BPE model's public `tokens_to_ids`,
 * `vocab` and `bpe_ranks` are then set from tables built straight from the GGUF arrays
 * (`bpe_ranks` answers lookups lazily, see MergeRanks).
 */
import { UserError } from "../errors.js";
import type { GgufMetadata, GgufValue } from "../formats/tensor-ref.js";
import { FALLBACK_CHAT_TEMPLATES } from "./chat-template.js";
import { buildTokenizer, END_OF_TURN_TEXTS, HfLensTokenizer, type LensTokenizer } from "./tokenizer.js";
import { type TokenEntryKind, utf8Bytes } from "./token-bytes.js";
import { NO_BYTE_ENCODE, PRE_TOKENIZER_NAMES, PRE_TOKENIZER_REGEXES, type PreTokenizerEntry } from "./llamacpp-pretokenizers.generated.js";

// llama.cpp token attributes (llama.h `llama_token_attr`), from tokenizer.ggml.token_type
// (UNDEFINED 0, NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6).
const ATTR_UNKNOWN = 1 << 0;
const ATTR_UNUSED = 1 << 1;
const ATTR_NORMAL = 1 << 2;
const ATTR_CONTROL = 1 << 3;
const ATTR_USER_DEFINED = 1 << 4;
const ATTR_BYTE = 1 << 5;
const ATTR_OF_TYPE = [0, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_UNUSED, ATTR_BYTE];

/** FIM tokens llama.cpp recognises by text (first match per kind, unless the file names one): forced to control. */
const FIM_TEXTS: readonly (readonly [kind: string, keys: readonly string[], texts: readonly string[], eog: boolean])[] = [
  ["pre", ["fim_pre_token_id", "prefix_token_id"], ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"], false],
  ["suf", ["fim_suf_token_id", "suffix_token_id"], ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"], false],
  ["mid", ["fim_mid_token_id", "middle_token_id"], ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"], false],
  ["pad", ["fim_pad_token_id"], ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"], true],
  ["rep", ["fim_rep_token_id"], ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"], true],
  ["sep", ["fim_sep_token_id"], ["<|file_sep|>"], true],
];
/** The first end-of-turn text found becomes `eot` when the file names none (llama.cpp's list). */
const EOT_TEXTS: readonly string[] = [
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
  "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
];

/**
 * llama.cpp runs a regex in one of three ways (unicode.cpp `unicode_regex_split`): a hand-written
 * splitter for the common ones, std::regex over a "collapsed" text when the regex uses Unicode
 * categories (\p{L}...), or std::wregex otherwise. On that last path every non-ASCII whitespace
 * character of the text is first replaced by a vertical tab (so that \s matches it), which means a
 * character class listing non-ASCII whitespace never matches it: DeepSeek LLM's punctuation class
 * `[...　-。]` starts at U+3000 IDEOGRAPHIC SPACE, but in llama.cpp it only takes U+3001..U+3002. We
 * reproduce that by putting a guard before every positive character class of such regexes.
 */
const UNICODE_CATEGORY_TOKENS = ["\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}"];
const NOT_NON_ASCII_SPACE = "(?!(?![\\x00-\\x7F])\\s)";

function asLlamaCppRegex(regex: string): string {
  if (UNICODE_CATEGORY_TOKENS.some((c) => regex.includes(c)) || !/[^\x00-\x7F]/.test(regex)) return regex;
  let out = "";
  for (let i = 0; i < regex.length; i++) {
    const c = regex[i]!;
    if (c === "\\") {
      out += c + (regex[i + 1] ?? "");
      i++;
    } else if (c === "[" && regex[i + 1] !== "^") {
      // Copy the whole class, then wrap it: (?:guard[...]) keeps any quantifier that follows.
      let j = i + 1;
      while (j < regex.length && regex[j] !== "]") j += regex[j] === "\\" ? 2 : 1;
      out += `(?:${NOT_NON_ASCII_SPACE}${regex.slice(i, j + 1)})`;
      i = j;
    } else if (c === "[") {
      let j = i + 1;
      while (j < regex.length && regex[j] !== "]") j += regex[j] === "\\" ? 2 : 1;
      out += regex.slice(i, j + 1);
      i = j;
    } else {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading metadata

function describe(v: GgufValue | undefined): string {
  if (v === undefined) return "missing";
  if (Array.isArray(v)) return "an array";
  return `a ${typeof v}`;
}

function getString(m: GgufMetadata, key: string): string | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new UserError(`GGUF metadata ${key} should be a string, found ${describe(v)}`);
  return v;
}

function getInt(m: GgufMetadata, key: string): number | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new UserError(`GGUF metadata ${key} should be an integer, found ${describe(v)}`);
  }
  return v;
}

function getBool(m: GgufMetadata, key: string): boolean | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return v !== 0;
  throw new UserError(`GGUF metadata ${key} should be a boolean, found ${describe(v)}`);
}

function getArray<T extends "string" | "number">(
  m: GgufMetadata,
  key: string,
  type: T,
  minLength: number,
): (T extends "string" ? string : number)[] | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new UserError(`GGUF metadata ${key} should be an array, found ${describe(v)}`);
  if (v.length < minLength) throw new UserError(`GGUF metadata ${key} has ${v.length} entries, fewer than the ${minLength} tokens`);
  for (let i = 0; i < v.length; i++) {
    if (typeof v[i] !== type) throw new UserError(`GGUF metadata ${key}[${i}] should be a ${type}, found ${describe(v[i])}`);
  }
  return v as (T extends "string" ? string : number)[];
}

// ---------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

interface BpeModelFields {
  vocab: string[];
  tokens_to_ids: Map<string, number>;
  unk_token?: string;
  unk_token_id?: number;
  bpe_ranks: Map<string, number>;
  clear_cache(): void;
}

/**
 * The `bpe_ranks` table for tokenizers.js's BPE model, which looks a pair up as
 * `bpe_ranks.get(JSON.stringify([a, b]))` (lower rank merges first). Built lazily: listing every
 * pair up front is the slow part of loading a large vocabulary. Results are memoised.
 */
class MergeRanks extends Map<string, number> {
  private readonly memo = new Map<string, number | undefined>();
  constructor(private readonly lookup: (a: string, b: string) => number | undefined) {
    super();
  }
  override get(key: string): number | undefined {
    if (this.memo.has(key)) return this.memo.get(key);
    const pair: unknown = JSON.parse(key);
    const r = Array.isArray(pair) && pair.length === 2 ? this.lookup(String(pair[0]), String(pair[1])) : undefined;
    if (this.memo.size >= 1 << 16) this.memo.clear();
    this.memo.set(key, r);
    return r;
  }
  override has(key: string): boolean {
    return this.get(key) !== undefined;
  }
}

/** Byte-level / gemma4 BPE: the file's merge list, in order ("a b", split at the first space after the first character, as llama.cpp does). */
function listedMergeRanks(merges: readonly string[]): MergeRanks {
  const rank = new Map<string, number>();
  for (let i = 0; i < merges.length; i++) if (!rank.has(merges[i]!)) rank.set(merges[i]!, i);
  return new MergeRanks((a, b) => (a.length > 0 ? rank.get(a + " " + b) : undefined));
}

/**
 * SentencePiece as llama.cpp runs it: it merges any two adjacent symbols whose concatenation is a
 * vocabulary entry, highest score first, leftmost first among equal scores. Every symbol it can
 * meet is a single character or an earlier merge result, so "(a, b) is a merge" is simply
 * "a + b is in the vocabulary", and its rank is the position of a + b in score order. Equal
 * scores share a rank, and tokenizers.js then prefers the leftmost pair, like llama.cpp.
 */
function sentencePieceMergeRanks(
  idOf: ReadonlyMap<string, number>,
  n: number,
  scores: readonly number[] | undefined,
): MergeRanks {
  const rank = new Float64Array(n);
  if (scores) {
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => scores[b]! - scores[a]! || a - b);
    let r = 0;
    for (let k = 0; k < n; k++) {
      if (k > 0 && scores[order[k]!] !== scores[order[k - 1]!]) r = k;
      rank[order[k]!] = r;
    }
  }
  return new MergeRanks((a, b) => {
    const id = idOf.get(a + b);
    return id === undefined ? undefined : rank[id];
  });
}

interface SpecialEntry {
  text: string;
  id: number;
  rstrip: boolean;
}

const ASCII_SPACE = new Set([" ", "\t", "\n", "\v", "\f", "\r"]);

/**
 * llama.cpp's special-token partition (`tokenizer_st_partition`): for each special token, longest
 * text first (UTF-8 bytes), every occurrence in the remaining raw text becomes that token; a token
 * marked rstrip (Phi-3's) swallows the ASCII whitespace after it (C `isspace`, so not U+3000 or a
 * BOM, which JS's trimStart would also remove). A trie finds which special tokens occur at all, so
 * the ordered passes only run over those (Gemma has 6,400 special tokens).
 */
class SpecialTokenSplitter {
  private readonly trie = new Map<string, unknown>();
  private readonly rank = new Map<string, number>();
  private readonly byText = new Map<string, SpecialEntry>();

  constructor(entries: readonly SpecialEntry[]) {
    const bytes = (t: string) => utf8Bytes(t).length;
    const sorted = [...entries].sort((a, b) => bytes(b.text) - bytes(a.text) || a.id - b.id);
    sorted.forEach((e, k) => {
      if (e.text.length === 0 || this.byText.has(e.text)) return;
      this.byText.set(e.text, e);
      this.rank.set(e.text, k);
      let node = this.trie;
      for (const ch of e.text) {
        let next = node.get(ch) as Map<string, unknown> | undefined;
        if (next === undefined) node.set(ch, (next = new Map()));
        node = next;
      }
      node.set("", e.text);
    });
  }

  /** Special tokens whose text occurs in `text`, in llama.cpp's processing order. */
  private occurring(text: string): SpecialEntry[] {
    const found = new Set<string>();
    const chars = Array.from(text);
    for (let i = 0; i < chars.length; i++) {
      let node = this.trie;
      for (let j = i; j < chars.length; j++) {
        const next = node.get(chars[j]!) as Map<string, unknown> | undefined;
        if (next === undefined) break;
        node = next;
        const end = node.get("") as string | undefined;
        if (end !== undefined) found.add(end);
      }
    }
    return [...found].sort((a, b) => this.rank.get(a)! - this.rank.get(b)!).map((t) => this.byText.get(t)!);
  }

  /** Raw text pieces (strings) and special token ids, in order. */
  split(text: string): (string | number)[] {
    let parts: (string | number)[] = [text];
    for (const special of this.occurring(text)) {
      const next: (string | number)[] = [];
      for (const part of parts) {
        if (typeof part === "number" || !part.includes(special.text)) {
          next.push(part);
          continue;
        }
        let rest = part;
        for (;;) {
          const at = rest.indexOf(special.text);
          if (at < 0) break;
          if (at > 0) next.push(rest.slice(0, at));
          next.push(special.id);
          let from = at + special.text.length;
          if (special.rstrip) while (from < rest.length && ASCII_SPACE.has(rest[from]!)) from++;
          rest = rest.slice(from);
        }
        if (rest.length > 0) next.push(rest);
      }
      parts = next;
    }
    return parts;
  }
}

/**
 * Every BPE merge "a b" must join two vocabulary entries into a third (true of every real
 * vocabulary checked: GPT-2, Llama 3, Qwen 2, Falcon, Command-R, SmolLM2...). A token list cut
 * short would otherwise drop words silently: "The capital of France is" became "The of is".
 */
function checkMerges(merges: readonly string[], idOf: ReadonlyMap<string, number>): void {
  let bad = 0;
  let first: string | undefined;
  for (const m of merges) {
    const sp = m.indexOf(" ", 1);
    const ok = sp > 0 && idOf.has(m.slice(0, sp)) && idOf.has(m.slice(sp + 1)) && idOf.has(m.slice(0, sp) + m.slice(sp + 1));
    if (!ok) {
      bad++;
      first ??= m;
    }
  }
  if (bad > 0) {
    throw new UserError(
      `${bad} of the GGUF's ${merges.length} BPE merges name tokens missing from its ${idOf.size}-token vocabulary (first: ${JSON.stringify(first).slice(0, 60)}); the vocabulary is truncated or does not belong to these merges`,
    );
  }
}

/**
 * Builds the tokenizer of a GGUF file from its metadata (`readGguf(path).metadata`).
 * Throws UserError for tokenizer models other than gpt2 (byte-level BPE), llama (SentencePiece)
 * and gemma4, and for unknown pre-tokenizers.
 */
export function tokenizerFromGguf(metadata: GgufMetadata): LensTokenizer {
  const model = getString(metadata, "tokenizer.ggml.model");
  if (model === undefined) throw new UserError("this GGUF file has no tokenizer (tokenizer.ggml.model is missing)");
  if (model !== "gpt2" && model !== "llama" && model !== "gemma4") {
    throw new UserError(
      `unsupported tokenizer model '${model}' in GGUF (supported: gpt2 = byte-level BPE, llama = SentencePiece, gemma4)`,
    );
  }
  const tokens = getArray(metadata, "tokenizer.ggml.tokens", "string", 1);
  if (tokens === undefined) throw new UserError("this GGUF file has no vocabulary (tokenizer.ggml.tokens is missing)");
  const n = tokens.length;
  const types = getArray(metadata, "tokenizer.ggml.token_type", "number", n);
  const scores = getArray(metadata, "tokenizer.ggml.scores", "number", n);
  const merges = getArray(metadata, "tokenizer.ggml.merges", "string", 0);
  const arch = getString(metadata, "general.architecture");
  const name = (getString(metadata, "general.name") ?? "").toLowerCase();

  // Defaults per tokenizer model, then per pre-tokenizer, then the file's own keys (llama.cpp's order).
  let bosId: number | undefined;
  let eosId: number | undefined;
  let unkId: number | undefined;
  let addBos = false;
  let addSpacePrefix = false;
  let pre: PreTokenizerEntry | undefined;
  if (model === "llama") {
    bosId = 1;
    eosId = 2;
    unkId = 0;
    addBos = true;
    addSpacePrefix = true;
  } else {
    if (model === "gpt2") {
      bosId = 11;
      eosId = 11;
      if (merges === undefined) throw new UserError("this GGUF file's BPE tokenizer has no merges (tokenizer.ggml.merges)");
    } else if (merges === undefined) {
      throw new UserError("this GGUF file's gemma4 tokenizer has no merges (tokenizer.ggml.merges)");
    }
    const preName = model === "gemma4" ? "gemma4" : (getString(metadata, "tokenizer.ggml.pre") ?? "default");
    pre = PRE_TOKENIZER_NAMES[preName];
    if (pre === undefined || (pre.type !== "DEFAULT" && PRE_TOKENIZER_REGEXES[pre.type] === undefined)) {
      throw new UserError(`unsupported pre-tokenizer '${preName}' (tokenizer.ggml.pre) in GGUF`);
    }
    if (pre.addBos) addBos = true;
    if (pre.noBos) bosId = undefined;
  }
  const inRange = (id: number | undefined) => (id !== undefined && id >= 0 && id < n ? id : undefined);
  // Ids that decide how text is tokenized and where generation stops must name real tokens: a
  // silently dropped BOS or EOS changes every result.
  for (const key of ["bos", "eos", "unknown", "eot", "eom"]) {
    const id = getInt(metadata, `tokenizer.ggml.${key}_token_id`);
    if (id !== undefined && (id < 0 || id >= n)) {
      throw new UserError(`GGUF metadata tokenizer.ggml.${key}_token_id is ${id}, outside the vocabulary of ${n} tokens; the vocabulary is truncated or the file is corrupt`);
    }
  }
  bosId = inRange(getInt(metadata, "tokenizer.ggml.bos_token_id") ?? bosId);
  eosId = inRange(getInt(metadata, "tokenizer.ggml.eos_token_id") ?? eosId);
  unkId = inRange(getInt(metadata, "tokenizer.ggml.unknown_token_id") ?? unkId);
  const eotId = inRange(getInt(metadata, "tokenizer.ggml.eot_token_id"));
  const eomId = inRange(getInt(metadata, "tokenizer.ggml.eom_token_id"));
  addBos = getBool(metadata, "tokenizer.ggml.add_bos_token") ?? addBos;
  if (pre?.type === "GEMMA4") addBos = true;
  addSpacePrefix = getBool(metadata, "tokenizer.ggml.add_space_prefix") ?? addSpacePrefix;

  // Token attributes, with llama.cpp's fix-ups by token text (llama-vocab.cpp, `load`).
  const attr = new Uint8Array(n).fill(ATTR_NORMAL);
  if (types) for (let i = 0; i < n; i++) attr[i] = ATTR_OF_TYPE[types[i]!] ?? 0;
  const idOf = new Map<string, number>();
  for (let i = 0; i < n; i++) if (!idOf.has(tokens[i]!)) idOf.set(tokens[i]!, i);
  if (merges !== undefined && model !== "llama") checkMerges(merges, idOf);
  const forceControl = (id: number) => (attr[id] = attr[id]! | ATTR_CONTROL);
  let eot = eotId;
  if (eot === undefined) {
    eot = EOT_TEXTS.map((t) => idOf.get(t)).find((id) => id !== undefined);
    if (eot !== undefined) forceControl(eot);
  }
  let eom = eomId;
  if (eom === undefined) {
    eom = idOf.get("<|eom_id|>");
    if (eom !== undefined) forceControl(eom);
  }
  const eog = new Set<number>();
  for (const [, keys, texts, endsGeneration] of FIM_TEXTS) {
    let id = keys.map((k) => inRange(getInt(metadata, `tokenizer.ggml.${k}`))).find((x) => x !== undefined);
    if (id === undefined) {
      id = texts.map((t) => idOf.get(t)).find((x) => x !== undefined);
      if (id !== undefined) forceControl(id);
    }
    if (id !== undefined && endsGeneration) eog.add(id);
  }
  // End-of-generation texts are control tokens whatever type the file gives them: "</s>" in
  // Qwen's vocabulary is parsed as one special token.
  for (const t of END_OF_TURN_TEXTS) {
    const id = idOf.get(t);
    if (id === undefined) continue;
    eog.add(id);
    forceControl(id);
  }
  // gpt-oss: these always render as text.
  for (const t of ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]) {
    const id = idOf.get(t);
    if (id !== undefined) attr[id] = ATTR_USER_DEFINED;
  }
  for (const id of [eosId, eot, eom]) if (id !== undefined) eog.add(id);
  const has = (t: string) => idOf.has(t) && eog.has(idOf.get(t)!);
  // gpt-oss / solar-open: <|end|> ends a message, not the generation.
  if (has("<|end|>") && ((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>")))) {
    eog.delete(idOf.get("<|end|>")!);
    attr[idOf.get("<|end|>")!] = ATTR_USER_DEFINED;
  }
  // Gemma 4 / PaddleOCR: </s> is ordinary text there.
  if (has("<|tool_response>") && has("</s>")) {
    eog.delete(idOf.get("</s>")!);
    attr[idOf.get("</s>")!] = ATTR_NORMAL;
  }

  // Phi-3: llama.cpp strips whitespace after its special tokens (except <unk>, <s>, <|endoftext|>).
  const phi3 = name.includes("phi-3") || name.includes("phi3");
  const noRstrip = new Set(["<unk>", "<s>", "<|endoftext|>"]);

  // Control, user-defined and unknown tokens are split out of the raw text first (llama.cpp's
  // special-token cache); byte and normal tokens are the model's own encoding; unused and
  // undefined ones are shown as their text.
  const entryKinds = new Map<number, TokenEntryKind>();
  const addedTokens: Json[] = [];
  for (let i = 0; i < n; i++) {
    const a = attr[i]!;
    if (a & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)) {
      const special = (a & (ATTR_CONTROL | ATTR_UNKNOWN)) !== 0;
      entryKinds.set(i, special ? "special" : "added");
      if (idOf.get(tokens[i]!) !== i) continue;
      addedTokens.push({
        id: i,
        content: tokens[i],
        single_word: false,
        lstrip: false,
        rstrip: phi3 && !noRstrip.has(tokens[i]!),
        normalized: false,
        special,
      });
    } else if (!(a & (ATTR_NORMAL | ATTR_BYTE))) {
      entryKinds.set(i, "special");
    }
  }

  const splitter = new SpecialTokenSplitter(
    addedTokens.map((t) => ({ text: t.content as string, id: t.id as number, rstrip: t.rstrip as boolean })),
  );

  let tokenizerJson: Json;
  let ranks: MergeRanks;
  const byteLevel = model === "gpt2" && !NO_BYTE_ENCODE.has(pre!.type);
  if (model === "llama") {
    const normalizers: Json[] = [];
    if (addSpacePrefix) normalizers.push({ type: "Prepend", prepend: "\u2581" });
    normalizers.push({ type: "Replace", pattern: { String: " " }, content: "\u2581" });
    tokenizerJson = {
      version: "1.0",
      added_tokens: addedTokens,
      normalizer: normalizers.length === 1 ? normalizers[0] : { type: "Sequence", normalizers },
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      model: {
        type: "BPE",
        vocab: {}, // installed below
        merges: [], // installed below
        unk_token: unkId !== undefined ? tokens[unkId] : null,
        byte_fallback: true,
        fuse_unk: true,
        ignore_merges: false,
      },
    };
    ranks = sentencePieceMergeRanks(idOf, n, scores);
  } else {
    const regexes = PRE_TOKENIZER_REGEXES[pre!.type]!;
    const pretokenizers: Json[] = regexes.map((r) => ({
      type: "Split",
      pattern: { Regex: asLlamaCppRegex(r) },
      behavior: "Isolated",
      invert: false,
    }));
    if (byteLevel) pretokenizers.push({ type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false });
    const escape = pre!.escapeWhitespace === true;
    tokenizerJson = {
      version: "1.0",
      added_tokens: addedTokens,
      normalizer: escape ? { type: "Replace", pattern: { String: " " }, content: "\u2581" } : null,
      pre_tokenizer: { type: "Sequence", pretokenizers },
      post_processor: null,
      decoder: null,
      model: {
        type: "BPE",
        vocab: {}, // installed below
        merges: [], // installed below
        unk_token: null,
        byte_fallback: !byteLevel,
        fuse_unk: false,
        ignore_merges: pre!.ignoreMerges === true,
      },
    };
    ranks = listedMergeRanks(merges!);
  }
  const tokenizer = buildTokenizer(tokenizerJson);
  {
    // The public fields of tokenizers.js's BPE model (types/core/tokenizerModelImplementations/BPE.d.ts;
    // the package's type entry point does not re-export the class under NodeNext resolution).
    const bpe = tokenizer.model as unknown as BpeModelFields;
    if (!(bpe.tokens_to_ids instanceof Map) || !(bpe.bpe_ranks instanceof Map) || typeof bpe.clear_cache !== "function") {
      throw new Error("tokenizers.js changed: its BPE model no longer has tokens_to_ids / bpe_ranks maps");
    }
    // The Tokenizer constructor has already put the added tokens in; idOf has them with the same ids.
    bpe.tokens_to_ids = idOf;
    bpe.vocab = tokens;
    bpe.unk_token = unkId !== undefined && model === "llama" ? tokens[unkId] : undefined;
    bpe.unk_token_id = bpe.unk_token !== undefined ? unkId : undefined;
    bpe.bpe_ranks = ranks;
    bpe.clear_cache();
  }

  let chatTemplate = getString(metadata, "tokenizer.chat_template");
  if (chatTemplate === undefined && arch !== undefined) chatTemplate = FALLBACK_CHAT_TEMPLATES[arch];

  const text = (id: number | undefined) => (id === undefined ? undefined : tokens[id]);
  return new HfLensTokenizer({
    tokenizer,
    vocab: tokens,
    idOf,
    entryKinds,
    byteMode: byteLevel ? "byte-level" : "sentencepiece",
    bosId,
    addBos,
    eosIds: [...eog],
    chatTemplate,
    templateTokens: {
      bos_token: text(bosId),
      eos_token: text(eosId),
      unk_token: text(unkId),
      pad_token: text(inRange(getInt(metadata, "tokenizer.ggml.padding_token_id"))),
    },
    addSpacePrefix: model === "llama" && addSpacePrefix,
    splitSpecial: (text) => splitter.split(text),
  });
}
