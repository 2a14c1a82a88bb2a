/**
 * The tokenizer seen by the rest of logit-lens, whatever the model's format.
 *
 * Encoding runs on Hugging Face's tokenizers.js: a Hugging Face folder's tokenizer.json directly,
 * a GGUF file's embedded vocabulary after conversion to the same JSON (gguf-tokenizer.ts). On top
 * of it this module adds what a lens needs and tokenizers do not offer: the raw bytes of every
 * token (so that pieces of one emoji can be joined again, see render.ts), which tokens are
 * special, the BOS / end-of-turn ids and the chat template.
 */
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { UserError } from "../errors.js";
import {
  type ChatMessage,
  type ChatTemplateOptions,
  type ChatTemplateTokens,
  renderChatTemplate,
} from "./chat-template.js";
import { type TokenByteMode, type TokenEntryKind, concatBytes, tokenStringToBytes, utf8Bytes } from "./token-bytes.js";

export type { ChatMessage, ChatTemplateOptions } from "./chat-template.js";

export interface EncodeOptions {
  /** Add the BOS token where the model expects one (default true). Special tokens written in the text are always parsed. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special (control) tokens such as `<|im_end|>` (default false). */
  skipSpecialTokens?: boolean;
}

export interface LensTokenizer {
  /** Number of token ids (vocabulary entries, special ones included). */
  readonly vocabSize: number;
  /** The beginning-of-sequence token, when the model has one. */
  readonly bosId?: number;
  /** Whether `encode` puts `bosId` in front (with addSpecialTokens, the default). */
  readonly addBos: boolean;
  /** Ids that end a generation: EOS and end-of-turn tokens (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`...). */
  readonly eosIds: number[];
  /** The Jinja chat template, when the model has one (or a known fallback for its family). */
  readonly chatTemplate?: string;
  /** How vocabulary strings encode bytes ("byte-level" GPT-2 style, "sentencepiece" ▁ and <0xNN>, "plain"). */
  readonly byteMode: TokenByteMode;

  /** Token ids of `text`. Special-token strings in the text (`<|im_start|>`) become their ids. */
  encode(text: string, options?: EncodeOptions): number[];
  /** Text of `ids`: their bytes joined, then decoded as UTF-8 (incomplete characters become U+FFFD). */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** The raw vocabulary entry: "ĠðŁ", "▁Paris", "<0xF0>", "<|im_end|>"; "<id N>" for ids without one (lm_head padding). */
  tokenString(id: number): string;
  /**
   * The bytes the token stands for (GPT-2 byte decoder; ▁ -> space; <0xNN> -> that byte; special
   * tokens -> their text). The array is cached and shared: do not modify it.
   */
  tokenBytes(id: number): Uint8Array;
  /** True for control tokens (BOS, EOS, `<|im_start|>`, `<start_of_turn>`...), false for text, bytes and user-added text tokens. */
  isSpecial(id: number): boolean;
  /** Id of a vocabulary entry, if present. */
  tokenId(tokenString: string): number | undefined;
  /** The prompt string for a chat (UserError if the model has no chat template). */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string;
  /**
   * Token ids for a chat: the template's string encoded without adding special tokens, then BOS
   * put in front only if the template did not write it already (Gemma's and Llama 3's do).
   */
  encodeChat(messages: readonly ChatMessage[], options?: ChatTemplateOptions): number[];
}

/** Everything needed to build a LensTokenizer around a tokenizers.js Tokenizer. */
export interface TokenizerParts {
  /** The tokenizers.js tokenizer that encodes (see buildTokenizer). */
  tokenizer: Tokenizer;
  /** Vocabulary entries by id (holes allowed, as undefined); defaults to the tokenizer model's. */
  vocab?: readonly (string | undefined)[];
  /** Entry -> id; defaults to the tokenizer model's map. */
  idOf?: ReadonlyMap<string, number>;
  /** Per id: how the entry maps to bytes; ids not listed are "normal". */
  entryKinds: Map<number, TokenEntryKind>;
  byteMode: TokenByteMode;
  bosId?: number;
  addBos: boolean;
  eosIds: number[];
  chatTemplate?: string;
  templateTokens: ChatTemplateTokens;
  /** SentencePiece models that prepend a space to the text: decode drops it again. */
  addSpacePrefix?: boolean;
  /**
   * Splits special tokens out of the text before tokenizers.js sees it (GGUF: llama.cpp's rules,
   * which differ from tokenizers.js's in order and whitespace stripping). Strings are raw text,
   * numbers token ids. Without it tokenizers.js's own added-token matching is used.
   */
  splitSpecial?: (text: string) => (string | number)[];
}

/** A tokenizers.js Tokenizer from tokenizer.json and tokenizer_config.json objects; failures are UserErrors. */
export function buildTokenizer(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown> = {}): Tokenizer {
  try {
    return new Tokenizer(tokenizerJson, tokenizerConfig);
  } catch (e) {
    throw new UserError(`could not build the tokenizer: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
  }
}

const decoder = new TextDecoder("utf-8");

/** LensTokenizer over tokenizers.js. Build one with tokenizerFromGguf or loadTokenizerFromHfFolder. */
export class HfLensTokenizer implements LensTokenizer {
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly addBos: boolean;
  readonly eosIds: number[];
  readonly chatTemplate?: string;
  readonly byteMode: TokenByteMode;

  private readonly tokenizer: Tokenizer;
  private readonly vocab: readonly (string | undefined)[];
  private readonly kinds: Map<number, TokenEntryKind>;
  private readonly idOf: ReadonlyMap<string, number>;
  private readonly bytesCache: (Uint8Array | undefined)[];
  private readonly templateTokens: ChatTemplateTokens;
  private readonly addSpacePrefix: boolean;
  private readonly splitSpecial?: (text: string) => (string | number)[];

  constructor(parts: TokenizerParts) {
    this.tokenizer = parts.tokenizer;
    const model = parts.tokenizer.model;
    this.vocab = parts.vocab ?? model?.vocab ?? [];
    this.idOf = parts.idOf ?? model?.tokens_to_ids ?? new Map();
    this.vocabSize = this.vocab.length;
    this.kinds = parts.entryKinds;
    this.byteMode = parts.byteMode;
    this.bosId = parts.bosId;
    this.addBos = parts.addBos && parts.bosId !== undefined;
    this.eosIds = [...new Set(parts.eosIds)].sort((a, b) => a - b);
    this.chatTemplate = parts.chatTemplate;
    this.templateTokens = parts.templateTokens;
    this.addSpacePrefix = parts.addSpacePrefix ?? false;
    this.splitSpecial = parts.splitSpecial;
    this.bytesCache = new Array(this.vocabSize);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if ((options.addSpecialTokens ?? true) && this.addBos) ids.push(this.bosId!);
    for (const part of this.splitSpecial ? this.splitSpecial(text) : [text]) {
      if (typeof part === "number") ids.push(part);
      else if (part.length > 0) for (const id of this.tokenizer.encode(part, { add_special_tokens: false }).ids) ids.push(id);
    }
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const parts: Uint8Array[] = [];
    let first = true;
    for (const id of ids) {
      if (this.isSpecial(id)) {
        if (!options.skipSpecialTokens) parts.push(this.tokenBytes(id));
        continue;
      }
      let b = this.tokenBytes(id);
      // SentencePiece prepends a space to the text it encodes; the first text token carries it.
      if (first && this.addSpacePrefix && b[0] === 0x20) b = b.subarray(1);
      first = false;
      parts.push(b);
    }
    return decoder.decode(concatBytes(parts));
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0) throw new RangeError(`token id ${id} is not a non-negative integer`);
  }

  tokenString(id: number): string {
    this.checkId(id);
    return this.vocab[id] ?? `<id ${id}>`;
  }

  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    const cached = this.bytesCache[id];
    if (cached !== undefined) return cached;
    const s = this.vocab[id];
    // Ids with no vocabulary entry (lm_head rows padded past the vocabulary) show as "<id N>".
    if (s === undefined) return utf8Bytes(`<id ${id}>`);
    const b = tokenStringToBytes(s, this.byteMode, this.kinds.get(id) ?? "normal");
    this.bytesCache[id] = b;
    return b;
  }

  isSpecial(id: number): boolean {
    this.checkId(id);
    if (id >= this.vocabSize || this.vocab[id] === undefined) return true;
    return this.kinds.get(id) === "special";
  }

  tokenId(tokenString: string): number | undefined {
    return this.idOf.get(tokenString);
  }

  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === undefined) {
      throw new UserError("this model has no chat template; pass a plain prompt instead of chat messages");
    }
    return renderChatTemplate(this.chatTemplate, messages, this.templateTokens, options);
  }

  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    const ids = this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
    if (this.addBos && ids[0] !== this.bosId) ids.unshift(this.bosId!);
    return ids;
  }
}

/**
 * Texts of end-of-generation tokens as llama.cpp recognises them (llama-vocab.cpp, `load`): EOS
 * and end-of-turn markers of the common chat formats. llama.cpp also makes them control tokens.
 */
export const END_OF_TURN_TEXTS: readonly string[] = [
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
  "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
  "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
];

// ---------------------------------------------------------------------------------------------
// Hugging Face folders

type Json = Record<string, unknown>;

function readJson(file: string, what: string): Json {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new UserError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const v: unknown = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Json;
  } catch (e) {
    throw new UserError(`${what} ${file} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** A special-token field of tokenizer_config.json: a string, or an AddedToken object {content}. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string") return (v as Json).content as string;
  return undefined;
}

function hasType(component: unknown, type: string): boolean {
  if (!component || typeof component !== "object") return false;
  const c = component as Json;
  if (c.type === type) return true;
  for (const key of ["decoders", "pretokenizers", "normalizers", "processors"]) {
    const list = c[key];
    if (Array.isArray(list) && list.some((x) => hasType(x, type))) return true;
  }
  return false;
}

/** How a tokenizer.json's vocabulary encodes bytes. */
export function detectByteMode(tokenizerJson: Json): TokenByteMode {
  const model = (tokenizerJson.model ?? {}) as Json;
  if (hasType(tokenizerJson.decoder, "ByteLevel") || hasType(tokenizerJson.pre_tokenizer, "ByteLevel")) return "byte-level";
  if (
    model.byte_fallback === true ||
    hasType(tokenizerJson.decoder, "ByteFallback") ||
    hasType(tokenizerJson.decoder, "Metaspace") ||
    hasType(tokenizerJson.pre_tokenizer, "Metaspace") ||
    JSON.stringify(tokenizerJson.normalizer ?? null).includes("\u2581")
  ) {
    return "sentencepiece";
  }
  return "plain";
}

/** Does the post-processor put `bos` first in a single sequence? (How HF tokenizers add BOS.) */
function postProcessorAddsBos(post: unknown, bos: string): boolean {
  if (!post || typeof post !== "object") return false;
  const p = post as Json;
  if (p.type === "Sequence" && Array.isArray(p.processors)) return p.processors.some((x) => postProcessorAddsBos(x, bos));
  if (p.type === "TemplateProcessing" && Array.isArray(p.single)) {
    const first = p.single[0] as Json | undefined;
    const special = first?.SpecialToken as Json | undefined;
    return special?.id === bos;
  }
  return false;
}

/**
 * Loads a Hugging Face tokenizer folder: tokenizer.json (required), tokenizer_config.json
 * (bos/eos, add_bos_token, chat_template), chat_template.jinja / chat_template.json and
 * generation_config.json (extra eos ids) when present.
 */
export function loadTokenizerFromHfFolder(dir: string): LensTokenizer {
  const tokPath = path.join(dir, "tokenizer.json");
  if (!fs.existsSync(tokPath)) throw new UserError(`no tokenizer.json in ${dir}`);
  const tokenizerJson = readJson(tokPath, "tokenizer file");
  const cfgPath = path.join(dir, "tokenizer_config.json");
  const config = fs.existsSync(cfgPath) ? readJson(cfgPath, "tokenizer config") : {};
  const model = tokenizerJson.model as Json | undefined;
  if (!model || typeof model !== "object") throw new UserError(`${tokPath} has no "model" section`);

  const tokenizer = buildTokenizer(tokenizerJson, config);
  // The vocabulary by id, added tokens included (tokenizers.js has put them in).
  const vocab = tokenizer.model?.vocab;
  const idOf = tokenizer.model?.tokens_to_ids;
  if (!Array.isArray(vocab) || !(idOf instanceof Map)) throw new UserError(`${tokPath}: unsupported tokenizer model`);
  const entryKinds = new Map<number, TokenEntryKind>();
  const added = Array.isArray(tokenizerJson.added_tokens) ? (tokenizerJson.added_tokens as Json[]) : [];
  for (const t of added) {
    if (typeof t.id !== "number" || typeof t.content !== "string") continue;
    entryKinds.set(t.id, t.special === true ? "special" : "added");
  }

  const bosText = tokenText(config.bos_token);
  const eosText = tokenText(config.eos_token);
  const bosId = bosText !== undefined ? idOf.get(bosText) : undefined;
  const addBos =
    bosId !== undefined &&
    (typeof config.add_bos_token === "boolean"
      ? config.add_bos_token
      : postProcessorAddsBos(tokenizerJson.post_processor, bosText!));

  const eosIds: number[] = [];
  if (eosText !== undefined && idOf.has(eosText)) eosIds.push(idOf.get(eosText)!);
  const genPath = path.join(dir, "generation_config.json");
  if (fs.existsSync(genPath)) {
    const gen = readJson(genPath, "generation config");
    const e = gen.eos_token_id;
    for (const id of Array.isArray(e) ? e : [e]) if (typeof id === "number") eosIds.push(id);
  }
  for (const t of END_OF_TURN_TEXTS) {
    const id = idOf.get(t);
    if (id !== undefined && entryKinds.get(id) === "special") eosIds.push(id);
  }

  let chatTemplate: string | undefined;
  const ct = config.chat_template;
  if (typeof ct === "string") chatTemplate = ct;
  else if (Array.isArray(ct)) {
    // [{name, template}]: use "default".
    const def = (ct as Json[]).find((x) => x.name === "default") ?? (ct as Json[])[0];
    if (def && typeof def.template === "string") chatTemplate = def.template;
  }
  const jinjaPath = path.join(dir, "chat_template.jinja");
  const ctJsonPath = path.join(dir, "chat_template.json");
  if (chatTemplate === undefined && fs.existsSync(jinjaPath)) chatTemplate = fs.readFileSync(jinjaPath, "utf8");
  if (chatTemplate === undefined && fs.existsSync(ctJsonPath)) {
    const j = readJson(ctJsonPath, "chat template file");
    if (typeof j.chat_template === "string") chatTemplate = j.chat_template;
  }

  const byteMode = detectByteMode(tokenizerJson);
  const addSpacePrefix =
    byteMode === "sentencepiece" &&
    (JSON.stringify(tokenizerJson.normalizer ?? null).includes('"Prepend"') ||
      (hasType(tokenizerJson.pre_tokenizer, "Metaspace") &&
        JSON.stringify(tokenizerJson.pre_tokenizer).match(/"prepend_scheme":"(always|first)"|"add_prefix_space":true/) !== null));

  return new HfLensTokenizer({
    tokenizer,
    vocab,
    idOf,
    entryKinds,
    byteMode,
    bosId,
    addBos,
    eosIds,
    chatTemplate,
    templateTokens: {
      bos_token: bosText,
      eos_token: eosText,
      pad_token: tokenText(config.pad_token),
      unk_token: tokenText(config.unk_token),
    },
    addSpacePrefix,
  });
}
