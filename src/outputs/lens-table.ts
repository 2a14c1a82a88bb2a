/**
 * Plain-text lens table: one row per readout (last layer at the bottom, like reading the forward
 * pass top-down), one column per position, each cell the top-1 token and its probability.
 * Columns that do not fit the width are printed in further blocks rather than truncated.
 */
import type { LoadedModel } from "../engine/model.js";
import type { LensResult } from "../lens/logit-lens.js";
import { reassemble, renderToken } from "../tokens/render.js";

const CELL = 14;

/** Display width of a string, counting wide (CJK, emoji) characters as two columns. */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0x300 && cp < 0x370) continue; // combining marks
    w += cp >= 0x1100 && (cp <= 0x115f || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1faff) || (cp >= 0x20000 && cp <= 0x3fffd)) ? 2 : 1;
  }
  return w;
}

/** Fits `s` into exactly `width` columns: truncated with … or padded. */
export function fit(s: string, width: number): string {
  if (displayWidth(s) <= width) return s + " ".repeat(width - displayWidth(s));
  let out = "";
  for (const ch of s) {
    if (displayWidth(out + ch) > width - 1) break;
    out += ch;
  }
  return out + "…" + " ".repeat(Math.max(0, width - 1 - displayWidth(out)));
}

export function lensTable(model: LoadedModel, ids: number[], result: LensResult, width: number): string {
  const tok = (id: number) => renderToken(model.tokenizer.tokenBytes(id)).text;
  const lines: string[] = [];
  const prompt = reassemble(ids.map((id) => model.tokenizer.tokenBytes(id))).text;
  lines.push(`model: ${model.info.name} (${model.config.architecture}, ${model.config.nLayers} layers)   lens: ${result.variant === "logit" ? "logit lens" : "raw unembedding"}`);
  lines.push(`prompt: ${JSON.stringify(prompt)} (${ids.length} tokens)`);
  lines.push("");
  const label = 10;
  const perBlock = Math.max(1, Math.floor((width - label) / (CELL + 1)));
  const cols = result.positions;
  for (let start = 0; start < cols.length; start += perBlock) {
    const block = cols.map((p, i) => ({ p, i })).slice(start, start + perBlock);
    lines.push(fit("position", label) + block.map(({ p }) => " " + fit(String(p), CELL)).join(""));
    lines.push(fit("input", label) + block.map(({ p }) => " " + fit(tok(ids[p]!), CELL)).join(""));
    lines.push("-".repeat(label + block.length * (CELL + 1)));
    for (const r of result.readouts) {
      const name = r.layer >= 0 ? `L${r.layer}${r.hook.endsWith("hook_resid_post") ? "" : r.hook.replace(/^blocks\.\d+\.hook_/, " ")}` : r.hook;
      lines.push(fit(name, label) + block.map(({ i }) => {
        const c = r.cells[i]!;
        const prob = Math.exp(c.topLogprobs[0]!);
        return " " + fit(`${tok(c.topIds[0]!)} ${(prob * 100).toFixed(0)}%`, CELL);
      }).join(""));
    }
    lines.push("-".repeat(label + block.length * (CELL + 1)));
    lines.push(fit("output", label) + block.map(({ i }) => {
      const c = result.final[i]!;
      return " " + fit(`${tok(c.topIds[0]!)} ${(Math.exp(c.topLogprobs[0]!) * 100).toFixed(0)}%`, CELL);
    }).join(""));
    lines.push("");
  }
  const last = result.final[result.final.length - 1]!;
  const next = last.topIds.slice(0, 5).map((id, i) => `${JSON.stringify(tok(id))} ${(Math.exp(last.topLogprobs[i]!) * 100).toFixed(1)}%`).join(", ");
  lines.push(`next token after the prompt: ${next}`);
  return lines.join("\n");
}
