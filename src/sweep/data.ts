/**
 * Sweep inputs: JSONL (one prompt per line) or plain text cut into fixed token windows.
 *
 * JSONL lines: {"text": "..."} or {"messages": [{"role", "content"}, ...]} (rendered with the
 * model's chat template; a generation prompt is added when the last message is the user's), with
 * optional
 *   "targets":    ["text", ...] or {"label": "text" | ["text", ...]}: probability of the text's
 *                 first token at the last position (a label's texts: summed over distinct ids)
 *   "token_sets": {"label": "spec" | ["spec", ...]}: summed probability of the union of the token
 *                 families (specs as --track-family: word:<w>, bytes:<hex>, contains:<s>, emoji)
 *   "id":         any string, kept in the rows (default: the line number)
 * Statistics are aggregated by label across prompts (Wendler et al.'s "en" vs "zh" curves).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { UserError } from "../errors.js";
import { parseFamily, parseTextTarget } from "../lens/targets.js";
import type { LensTokenizer } from "../tokens/tokenizer.js";
import type { ChatMessage } from "../tokens/chat-template.js";

export interface SweepPrompt {
  /** Index in the data (line number for JSONL, window number for text). */
  index: number;
  id: string;
  ids: number[];
  /** Per target label: the distinct first-token ids whose probabilities are summed. */
  targets: { label: string; ids: number[] }[];
  /** Per token-set label: a 0/1 mask over the vocabulary (union of its specs). */
  tokenSets: { label: string; mask: Float32Array }[];
}

export interface SweepData {
  kind: "jsonl" | "text";
  /** sha256 of the data file's bytes (the manifest refuses to resume over other data). */
  sha256: string;
  /** Number of prompts (after --limit). */
  count: number;
  /** Builds prompt i (tokenized lazily: a resumed run tokenizes only what it still needs). */
  prompt(i: number): SweepPrompt;
  /** Total tokens over all prompts (known for text windows; summed lazily otherwise). */
  tokens?: number;
}

export interface DataOptions {
  /** Tokens per window for plain text (default 128). */
  window: number;
  /** At most this many prompts. */
  limit?: number;
}

export function loadSweepData(file: string, tok: LensTokenizer, opts: DataOptions): SweepData {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new UserError(`cannot read --data ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const sha256 = crypto.createHash("sha256").update(bytes).digest("hex");
  const text = bytes.toString("utf8");
  if (/\.jsonl$/i.test(file)) return jsonlData(file, text, sha256, tok, opts);
  return windowData(text, sha256, tok, opts);
}

function windowData(text: string, sha256: string, tok: LensTokenizer, opts: DataOptions): SweepData {
  if (!Number.isInteger(opts.window) || opts.window < 2) throw new UserError("--window must be an integer of at least 2");
  const all = tok.encode(text, { addSpecialTokens: false });
  const bos = tok.addBos && tok.bosId !== undefined ? [tok.bosId] : [];
  const body = opts.window - bos.length;
  const windows: number[][] = [];
  for (let s = 0; s + 1 < all.length; s += body) {
    const w = all.slice(s, s + body);
    if (w.length + bos.length >= 2) windows.push([...bos, ...w]);
  }
  if (windows.length === 0) throw new UserError("the --data text tokenizes to fewer than 2 tokens");
  const count = Math.min(windows.length, opts.limit ?? Infinity);
  return {
    kind: "text",
    sha256,
    count,
    tokens: windows.slice(0, count).reduce((a, w) => a + w.length, 0),
    prompt: (i) => ({ index: i, id: `w${i}`, ids: windows[i]!, targets: [], tokenSets: [] }),
  };
}

interface Line {
  text?: unknown;
  messages?: unknown;
  targets?: unknown;
  token_sets?: unknown;
  id?: unknown;
}

function jsonlData(file: string, text: string, sha256: string, tok: LensTokenizer, opts: DataOptions): SweepData {
  const lines: { n: number; value: Line }[] = [];
  text.split("\n").forEach((raw, n) => {
    if (raw.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      throw new UserError(`${file}:${n + 1}: not JSON (${(e as Error).message})`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw new UserError(`${file}:${n + 1}: expected an object with "text" or "messages"`);
    lines.push({ n: n + 1, value: value as Line });
  });
  if (lines.length === 0) throw new UserError(`${file} holds no prompts`);
  const count = Math.min(lines.length, opts.limit ?? Infinity);
  const familyCache = new Map<string, Float32Array>();
  const family = (spec: string, where: string): Float32Array => {
    let m = familyCache.get(spec);
    if (!m) {
      try {
        m = parseFamily(tok, spec).mask;
      } catch (e) {
        throw new UserError(`${where}: token set ${JSON.stringify(spec)}: ${(e as Error).message}`);
      }
      familyCache.set(spec, m);
    }
    return m;
  };
  return {
    kind: "jsonl",
    sha256,
    count,
    prompt(i) {
      const { n, value: v } = lines[i]!;
      const where = `${file}:${n}`;
      let ids: number[];
      if (typeof v.text === "string") {
        ids = tok.encode(v.text);
      } else if (Array.isArray(v.messages)) {
        const msgs = v.messages as ChatMessage[];
        for (const m of msgs) if (typeof m?.role !== "string" || typeof m?.content !== "string") throw new UserError(`${where}: each message needs string "role" and "content"`);
        ids = tok.encodeChat(msgs, { addGenerationPrompt: msgs[msgs.length - 1]?.role === "user" });
      } else throw new UserError(`${where}: expected "text" (a string) or "messages" (an array)`);
      if (ids.length === 0) throw new UserError(`${where}: the prompt tokenizes to nothing`);
      const targets: SweepPrompt["targets"] = [];
      if (v.targets !== undefined) {
        const entries: [string, unknown][] = Array.isArray(v.targets) ? v.targets.map((t, k) => [typeof t === "string" ? t : `target_${k}`, t]) : typeof v.targets === "object" && v.targets !== null ? Object.entries(v.targets) : [];
        if (entries.length === 0 && !(Array.isArray(v.targets) && v.targets.length === 0)) throw new UserError(`${where}: "targets" must be an array of strings or an object of label: text`);
        for (const [label, t] of entries) {
          const texts = Array.isArray(t) ? t : [t];
          const set = new Set<number>();
          for (const s of texts) {
            if (typeof s !== "string" || s.length === 0) throw new UserError(`${where}: target ${JSON.stringify(label)} must be a non-empty string`);
            set.add(parseTextTarget(tok, s).ids[0]!);
          }
          targets.push({ label, ids: [...set] });
        }
      }
      const tokenSets: SweepPrompt["tokenSets"] = [];
      if (v.token_sets !== undefined) {
        if (typeof v.token_sets !== "object" || v.token_sets === null || Array.isArray(v.token_sets)) throw new UserError(`${where}: "token_sets" must be an object of label: spec or [specs]`);
        for (const [label, s] of Object.entries(v.token_sets)) {
          const specs = Array.isArray(s) ? s : [s];
          const mask = new Float32Array(tok.vocabSize);
          for (const spec of specs) {
            if (typeof spec !== "string") throw new UserError(`${where}: token set ${JSON.stringify(label)} must be a string or strings`);
            const m = family(spec, where);
            for (let k = 0; k < m.length; k++) if (m[k]) mask[k] = 1;
          }
          tokenSets.push({ label, mask });
        }
      }
      return { index: i, id: typeof v.id === "string" ? v.id : String(n), ids, targets, tokenSets };
    },
  };
}
