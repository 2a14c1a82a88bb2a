/**
 * Candidates read in context (issue 10, item 5). When the tokens up to a position stop in the middle
 * of a UTF-8 character (` ðŁ`,`Ĳ` = 20 F0 9F 90: three bytes of a four-byte emoji), the next
 * token's candidates are continuation bytes such as ⟨A0⟩ or ⟨B2⟩ that mean nothing alone. Joined
 * to the pending bytes they are characters: ⟨A0⟩ → 🐠, ⟨B2⟩ → 🐲. This module finds the pending
 * bytes of a context and reads a candidate through them.
 */
import { renderToken, utf8Segments } from "./render.js";

/**
 * The bytes of an unfinished character at the end of the context (the lead byte and the
 * continuation bytes seen so far), or an empty array when the context ends on a whole character.
 * Only the last few tokens matter: a character is at most 4 bytes.
 */
export function pendingBytes(contextTokenBytes: readonly Uint8Array[]): Uint8Array {
  const tail: Uint8Array[] = [];
  let n = 0;
  for (let i = contextTokenBytes.length - 1; i >= 0 && n < 4; i--) {
    tail.unshift(contextTokenBytes[i]!);
    n += contextTokenBytes[i]!.length;
  }
  const bytes = new Uint8Array(n);
  let o = 0;
  for (const t of tail) {
    bytes.set(t, o);
    o += t.length;
  }
  const last = utf8Segments(bytes).at(-1);
  // Only a real start cut off by the end ("truncated"); stray continuation bytes pend nothing.
  if (!last || last.kind !== "invalid" || last.reason !== "truncated") return new Uint8Array(0);
  return bytes.subarray(last.start);
}

/**
 * How a candidate reads after `pending`: the display text of pending + candidate bytes (same
 * rendering as a token's `text`) when the candidate finishes the pending character, else undefined
 * (nothing pending, the candidate does not continue it, or it continues without finishing it).
 */
export function readInContext(pending: Uint8Array, candidate: Uint8Array): string | undefined {
  if (pending.length === 0 || candidate.length === 0) return undefined;
  const joined = new Uint8Array(pending.length + candidate.length);
  joined.set(pending);
  joined.set(candidate, pending.length);
  const first = utf8Segments(joined)[0]!;
  if (first.kind !== "char" || first.end <= pending.length) return undefined;
  return renderToken(joined).text;
}
