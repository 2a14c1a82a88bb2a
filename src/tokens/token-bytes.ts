/**
 * From a vocabulary entry to the raw bytes it stands for.
 *
 * Tokenizers store their vocabulary as strings, but what a token *means* is a byte string:
 * - byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM): every byte is written as one printable
 *   character through GPT-2's `bytes_to_unicode` table (space 0x20 is `Ġ`, 0xF0 is `ð`), so the
 *   entry `ĠðŁ` is the three bytes `20 F0 9F`: a space and the first half of an emoji;
 * - SentencePiece (Llama 2, Gemma, Phi-3): `▁` (U+2581) stands for a space, byte-fallback entries
 *   `<0xF0>` stand for that single byte, everything else is UTF-8 text;
 * - special / control tokens (`<|im_end|>`, `<start_of_turn>`): their text, as UTF-8.
 *
 * Concatenating the bytes of consecutive tokens and decoding once is what turns `ĠðŁ`,`Ĳ`,`ł`
 * back into " 🐠" (see render.ts); decoding token by token is what turns it into U+FFFD.
 */

/** How a tokenizer's vocabulary strings encode bytes. */
export type TokenByteMode = "byte-level" | "sentencepiece" | "plain";

/** GPT-2's bytes_to_unicode: byte -> the character that represents it in byte-level vocabularies. */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array<string>(256);
  for (const b of printable) table[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  }
  return table;
})();

/** The inverse table: character code (as in the vocabulary string) -> byte. */
export const UNICODE_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_UNICODE.map((ch, byte) => [ch, byte] as const),
);

const encoder = new TextEncoder();

/** UTF-8 bytes of a JS string. */
export function utf8Bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Writes bytes the GPT-2 way: `[0x20, 0xF0, 0x9F]` -> "ĠðŁ". */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += BYTE_TO_UNICODE[b];
  return out;
}

/**
 * Reads a byte-level vocabulary string back into bytes: "ĠðŁ" -> `20 F0 9F`. Returns null when a
 * character is outside the 256-character alphabet (then the entry is not byte-level text, e.g.
 * an added token such as `<|im_end|>` typed in plain characters; callers fall back to UTF-8).
 */
export function byteLevelToBytes(token: string): Uint8Array | null {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = UNICODE_TO_BYTE.get(token[i]!);
    if (b === undefined) return null;
    out[i] = b;
  }
  return out;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** The byte a SentencePiece byte-fallback entry stands for (`<0xF0>` -> 0xF0), or undefined. */
export function byteFallbackValue(token: string): number | undefined {
  const m = BYTE_PIECE.exec(token);
  return m ? parseInt(m[1]!, 16) : undefined;
}

/** SentencePiece entry -> bytes: `<0xNN>` is that byte, `▁` is a space, the rest is UTF-8. */
export function sentencePieceToBytes(token: string): Uint8Array {
  const b = byteFallbackValue(token);
  if (b !== undefined) return Uint8Array.of(b);
  return utf8Bytes(token.replaceAll("\u2581", " "));
}

/**
 * What kind of vocabulary entry a token is, for byte purposes: `normal` entries are in the model's
 * byte encoding; `special` entries (control tokens such as `<|im_end|>`, `<start_of_turn>`) are
 * their text as UTF-8, verbatim; `added` entries (user-defined, non-special: Gemma's runs of
 * spaces or newlines) are text too, except that SentencePiece vocabularies may still write their
 * spaces as `▁`.
 */
export type TokenEntryKind = "normal" | "special" | "added";

/** Bytes of one vocabulary entry. */
export function tokenStringToBytes(token: string, mode: TokenByteMode, kind: TokenEntryKind): Uint8Array {
  if (kind === "special") return utf8Bytes(token);
  if (kind === "added") {
    return mode === "sentencepiece" ? utf8Bytes(token.replaceAll("\u2581", " ")) : utf8Bytes(token);
  }
  switch (mode) {
    case "byte-level":
      return byteLevelToBytes(token) ?? utf8Bytes(token);
    case "sentencepiece":
      return sentencePieceToBytes(token);
    case "plain":
      return utf8Bytes(token);
  }
}

/** Concatenates byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
