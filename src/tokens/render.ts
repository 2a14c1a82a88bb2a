/**
 * Showing tokens to humans without lying about their bytes.
 *
 * A token is a byte string, not a string of characters: byte-level BPE splits an emoji such as
 * " 🐠" (20 F0 9F 90 A0) into `ĠðŁ` (20 F0 9F), `Ĳ` (90) and `ł` (A0), and no single one of them
 * is valid UTF-8. Decoding each on its own gives U+FFFD; we never do that. Instead:
 *
 * - `renderToken(bytes)` shows what one token is: its valid text, with whitespace made visible,
 *   and any piece of a multi-byte character as hex in angle brackets, with a note saying what
 *   the piece begins or continues: `ĠðŁ` renders as `␣⟨F0 9F⟩`, note "emoji…"; `Ĳ` as `⟨90⟩`,
 *   note "…continuation".
 * - `reassemble(tokenBytes)` concatenates the bytes of consecutive tokens and decodes once, so the
 *   three tokens above read " 🐠", and reports for each run of characters which tokens it came from.
 *
 * Whitespace convention (visibleWhitespace): space → `␣` (U+2423), newline → `↵` (U+21B5),
 * carriage return → `␍` (U+240D), tab → `→` (U+2192), other C0 controls → their Control Pictures
 * (U+2400 + code, DEL → `␡`), and every other invisible or unusual-width character (no-break
 * space, the U+2000..U+200A spaces, zero-width space/joiners, BOM, line/paragraph separators,
 * ideographic space, C1 controls, other format characters) → `⟨U+XXXX⟩`. Nothing is dropped.
 */

/** Lowercase hex without separators, for JSON: `[0x20, 0xF0]` -> "20f0". */
export function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Uppercase hex with spaces, for people: "F0 9F". */
export function hexSpaced(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" ");
}

/** Inverse of `hex`. Throws on malformed input (internal use: data we wrote ourselves). */
export function fromHex(h: string): Uint8Array {
  if (h.length % 2 !== 0 || /[^0-9a-fA-F]/.test(h)) throw new Error(`not a hex byte string: ${h}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const INVISIBLE = /[\p{White_Space}\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/** Makes whitespace and invisible characters visible (convention in the module comment). */
export function visibleWhitespace(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (ch === " ") out += "\u2423";
    else if (ch === "\n") out += "\u21B5";
    else if (ch === "\r") out += "\u240D";
    else if (ch === "\t") out += "\u2192";
    else if (cp < 0x20) out += String.fromCharCode(0x2400 + cp);
    else if (cp === 0x7f) out += "\u2421";
    else if (INVISIBLE.test(ch)) out += `⟨U+${cp.toString(16).toUpperCase().padStart(4, "0")}⟩`;
    else out += ch;
  }
  return out;
}

/** One piece of a byte string: a decoded character, or a run of bytes that is not valid UTF-8 here. */
export type Utf8Segment =
  | { kind: "char"; text: string; start: number; end: number }
  | { kind: "invalid"; start: number; end: number; reason: "truncated" | "continuation" | "invalid" };

/**
 * Splits bytes into valid UTF-8 characters and invalid byte runs (WHATWG "maximal subpart"
 * rule: a lead byte followed by some but not all of its continuation bytes is one run).
 * `truncated` marks a run that is the start of a character cut off by the end of the bytes;
 * `continuation` a run of stray continuation bytes (80-BF), the tail of a character begun
 * before these bytes; `invalid` anything else (bytes that never occur in UTF-8, bad sequences).
 */
export function utf8Segments(bytes: Uint8Array): Utf8Segment[] {
  const segs: Utf8Segment[] = [];
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      segs.push({ kind: "char", text: String.fromCharCode(b), start: i, end: i + 1 });
      i++;
      continue;
    }
    if (b >= 0x80 && b <= 0xbf) {
      let j = i + 1;
      while (j < n && bytes[j]! >= 0x80 && bytes[j]! <= 0xbf) j++;
      segs.push({ kind: "invalid", start: i, end: j, reason: "continuation" });
      i = j;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else {
      // C0, C1, F5..FF never occur in UTF-8.
      segs.push({ kind: "invalid", start: i, end: i + 1, reason: "invalid" });
      i++;
      continue;
    }
    let j = i + 1;
    let ok = true;
    for (let k = 0; k < need; k++, j++) {
      if (j >= n) {
        ok = false;
        break;
      }
      const c = bytes[j]!;
      const l = k === 0 ? lo : 0x80;
      const h = k === 0 ? hi : 0xbf;
      if (c < l || c > h) {
        ok = false;
        break;
      }
    }
    if (ok) {
      let cp = b & (need === 1 ? 0x1f : need === 2 ? 0x0f : 0x07);
      for (let k = i + 1; k < j; k++) cp = (cp << 6) | (bytes[k]! & 0x3f);
      segs.push({ kind: "char", text: String.fromCodePoint(cp), start: i, end: j });
    } else {
      segs.push({ kind: "invalid", start: i, end: j, reason: j >= n ? "truncated" : "invalid" });
    }
    i = j;
  }
  return segs;
}

/** What a character that starts with these bytes is likely to be ("emoji", "CJK", ...). */
export function describeLead(bytes: Uint8Array): string {
  const b0 = bytes[0]!;
  const b1 = bytes.length > 1 ? bytes[1]! : undefined;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    if (b0 <= 0xc3) return "Latin-1 letter";
    if (b0 <= 0xc9) return "Latin Extended letter";
    if (b0 <= 0xcb) return "IPA/modifier letter";
    if (b0 <= 0xcd) return "combining mark";
    if (b0 <= 0xcf) return "Greek letter";
    if (b0 <= 0xd4) return "Cyrillic letter";
    if (b0 <= 0xd7) return "Armenian/Hebrew letter";
    if (b0 <= 0xdb) return "Arabic letter";
    return "2-byte character";
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    if (b0 === 0xe0) return "Indic-script character";
    if (b0 === 0xe1) return "3-byte character (Myanmar/Georgian/Hangul Jamo/Latin Ext.)";
    if (b0 === 0xe2) {
      if (b1 === undefined) return "symbol or punctuation";
      if (b1 <= 0x81) return "punctuation";
      if (b1 <= 0x83) return "super/subscript or currency sign";
      if (b1 <= 0x8f) return "letterlike/number/arrow/math symbol";
      if (b1 <= 0x9b) return "technical/box/shape symbol";
      if (b1 <= 0x9e) return "emoji/dingbat";
      return "symbol";
    }
    if (b0 === 0xe3) return "CJK symbol/kana";
    if (b0 >= 0xe4 && b0 <= 0xe9) return "CJK";
    if (b0 === 0xea) return b1 !== undefined && b1 >= 0xb0 ? "Hangul" : "3-byte character";
    if (b0 >= 0xeb && b0 <= 0xed) return "Hangul";
    if (b0 === 0xef) {
      if (b1 !== undefined && b1 >= 0xbc) return "fullwidth form";
      if (b1 === 0xb8) return "variation selector";
      return "compatibility/private-use character";
    }
    return "private-use character";
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    if (b0 === 0xf0) {
      if (b1 === undefined) return "4-byte character (emoji?)";
      if (b1 === 0x9f) return "emoji";
      if (b1 >= 0xa0 && b1 <= 0xb3) return "CJK";
      return "4-byte character";
    }
    if (b0 === 0xf3 && b1 === 0xa0) return "tag/variation selector";
    return "4-byte character";
  }
  return "invalid byte";
}

function segmentNote(seg: Utf8Segment & { kind: "invalid" }, bytes: Uint8Array): string {
  const piece = bytes.subarray(seg.start, seg.end);
  switch (seg.reason) {
    case "continuation":
      return "…continuation";
    case "truncated":
      return `${describeLead(piece)}…`;
    case "invalid":
      return "invalid UTF-8";
  }
}

/** One token, shown. */
export interface RenderedToken {
  /** Valid text with whitespace made visible; bytes that are not a whole character as `⟨F0 9F⟩`. */
  text: string;
  /** True when the bytes are valid UTF-8 on their own. */
  complete: boolean;
  /** The bytes, lowercase hex without spaces ("20f09f"). */
  hex: string;
  /** What the partial bytes are ("emoji…", "…continuation", "CJK…"), joined by ", "; absent when complete. */
  note?: string;
}

/** Renders one token's bytes (see the module comment). */
export function renderToken(bytes: Uint8Array): RenderedToken {
  let text = "";
  const notes: string[] = [];
  for (const seg of utf8Segments(bytes)) {
    if (seg.kind === "char") text += visibleWhitespace(seg.text);
    else {
      text += `⟨${hexSpaced(bytes.subarray(seg.start, seg.end))}⟩`;
      notes.push(segmentNote(seg, bytes));
    }
  }
  const out: RenderedToken = { text, complete: notes.length === 0, hex: hex(bytes) };
  if (notes.length > 0) out.note = notes.join(", ");
  return out;
}

/** A run of characters that came from the same tokens. */
export interface ReassembledSpan {
  /** The characters, real whitespace (use visibleWhitespace to show it); invalid bytes as `⟨F0 9F⟩`. */
  text: string;
  /** Indices of the first and last token (inclusive) whose bytes make up this run. */
  tokens: [number, number];
  /** Byte range [start, end) in the concatenation of all tokens' bytes. */
  bytes: [number, number];
  /** False for bytes that do not form a whole character even after joining the tokens. */
  complete: boolean;
  /** For incomplete spans: what the bytes are ("emoji…", "…continuation"). */
  note?: string;
}

/**
 * Joins the bytes of consecutive tokens and decodes them once: `ĠðŁ`,`Ĳ`,`ł` -> " 🐠", with
 * spans [{text: " ", tokens: [0, 0]}, {text: "🐠", tokens: [0, 2]}]. Characters are grouped into
 * one span while they come from the same token range.
 */
export function reassemble(tokenBytes: readonly Uint8Array[]): { text: string; spans: ReassembledSpan[] } {
  let total = 0;
  for (const t of tokenBytes) total += t.length;
  const all = new Uint8Array(total);
  const tokenOfByte = new Int32Array(total);
  let o = 0;
  tokenBytes.forEach((t, i) => {
    all.set(t, o);
    tokenOfByte.fill(i, o, o + t.length);
    o += t.length;
  });
  const spans: ReassembledSpan[] = [];
  let text = "";
  for (const seg of utf8Segments(all)) {
    const first = tokenOfByte[seg.start]!;
    const last = tokenOfByte[seg.end - 1]!;
    if (seg.kind === "char") {
      text += seg.text;
      const prev = spans[spans.length - 1];
      if (prev && prev.complete && prev.tokens[0] === first && prev.tokens[1] === last && prev.bytes[1] === seg.start) {
        prev.text += seg.text;
        prev.bytes[1] = seg.end;
      } else {
        spans.push({ text: seg.text, tokens: [first, last], bytes: [seg.start, seg.end], complete: true });
      }
    } else {
      const shown = `⟨${hexSpaced(all.subarray(seg.start, seg.end))}⟩`;
      text += shown;
      spans.push({
        text: shown,
        tokens: [first, last],
        bytes: [seg.start, seg.end],
        complete: false,
        note: segmentNote(seg, all),
      });
    }
  }
  return { text, spans };
}
