/**
 * What the user asked to follow through the layers:
 * - targets given as text (`--track " 🐠"`), tokenized; a multi-token target is followed by its
 *   first token at every layer, and by its whole-sequence probability at the final layer;
 * - token families (`--track-family emoji`, `bytes:f09f`, `contains:horse`), reported as the summed
 *   probability of every token in the family.
 */
import { UserError } from "../errors.js";
import type { LensTokenizer } from "../tokens/tokenizer.js";

export interface TextTarget {
  label: string;
  ids: number[];
}

export interface TokenFamily {
  label: string;
  description: string;
  /** 1 for members, 0 elsewhere, over the whole vocabulary. */
  mask: Float32Array;
  size: number;
}

export function parseTextTarget(tokenizer: LensTokenizer, text: string): TextTarget {
  if (text.length === 0) throw new UserError("--track needs a non-empty text");
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  if (ids.length === 0) throw new UserError(`--track ${JSON.stringify(text)} tokenizes to nothing`);
  return { label: text, ids };
}

/** Leading ASCII whitespace does not decide what a token "begins": " 🐠" begins an emoji too. */
function stripLeadingSpace(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x09)) i++;
  return bytes.subarray(i);
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/**
 * Bytes that begin an emoji: F0 9F (U+1F000..U+1FFFF: pictographs, faces, animals, flags...) and
 * E2 98..E2 9E (U+2600..U+27BF: misc symbols and dingbats such as ☀ ✅ ❤).
 */
function beginsEmoji(b: Uint8Array): boolean {
  if (b.length >= 2 && b[0] === 0xf0 && b[1] === 0x9f) return true;
  if (b.length >= 2 && b[0] === 0xe2 && b[1]! >= 0x98 && b[1]! <= 0x9e) return true;
  // A lone F0 lead byte can only continue into an emoji plane in practice (U+10000.. with 9F next).
  return b.length === 1 && b[0] === 0xf0;
}

export function parseFamily(tokenizer: LensTokenizer, spec: string): TokenFamily {
  const V = tokenizer.vocabSize;
  let test: (bytes: Uint8Array, id: number) => boolean;
  let description: string;
  if (spec === "emoji") {
    description = "tokens whose bytes begin an emoji (F0 9F.., E2 98..E2 9E..)";
    test = (b) => beginsEmoji(stripLeadingSpace(b));
  } else if (spec.startsWith("bytes:")) {
    const h = spec.slice(6).replace(/[\s:]/g, "");
    if (!/^([0-9a-fA-F]{2})+$/.test(h)) throw new UserError(`--track-family ${spec}: expected hex bytes after 'bytes:', e.g. bytes:f09f`);
    const prefix = Uint8Array.from(h.match(/../g)!.map((x) => parseInt(x, 16)));
    description = `tokens whose bytes begin with ${h.toLowerCase()} (leading spaces ignored)`;
    test = (b) => startsWith(stripLeadingSpace(b), prefix);
  } else if (spec.startsWith("word:")) {
    // Wendler et al. 2024 ("Do Llamas Work in English?"): a word's probability is the mass of every
    // token that is a prefix of it, with or without the leading space; byte-fallback tokens count
    // through their byte, so the word's first UTF-8 byte (e.g. <0xF0> for an emoji) is in the set.
    const word = new TextEncoder().encode(spec.slice(5).trim());
    if (word.length === 0) throw new UserError(`--track-family ${spec}: expected a word after 'word:', e.g. word:horse`);
    description = `tokens that are a prefix of "${spec.slice(5).trim()}", with or without a leading space (Wendler et al. 2024)`;
    test = (b) => {
      const core = b.length > 0 && b[0] === 0x20 ? b.subarray(1) : b;
      return core.length > 0 && startsWith(word, core);
    };
  } else {
    const needle = (spec.startsWith("contains:") ? spec.slice(9) : spec).toLowerCase();
    if (needle.trim().length === 0) throw new UserError(`--track-family needs 'emoji', 'bytes:<hex>' or a text to look for`);
    description = `tokens whose text contains "${needle}" (any case)`;
    const decoder = new TextDecoder();
    test = (b) => decoder.decode(b).toLowerCase().includes(needle);
  }
  const mask = new Float32Array(V);
  let size = 0;
  for (let id = 0; id < V; id++) {
    if (tokenizer.isSpecial(id)) continue;
    if (test(tokenizer.tokenBytes(id), id)) {
      mask[id] = 1;
      size++;
    }
  }
  if (size === 0) throw new UserError(`--track-family ${spec}: no token of this vocabulary matches`);
  return { label: spec, description, mask, size };
}
