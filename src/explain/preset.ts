/**
 * `--preset seahorse` (issue 10, item 6): the seed's experiment in one flag. The question "Is there
 * a seahorse emoji?" in the chat template, the targets the seed talks about (" 🐠", " 🐴", " sea",
 * " horse", the emoji family, tokens containing "horse"), the sub-block readouts, and after the
 * report a short story: at the positions where the model starts an emoji and picks the animal,
 * which layers read sea/horse, where the emoji mass rises, and what the last layer snaps to.
 * The story only reports what the lens shows; a model that shows no seahorse + emoji mixture is
 * told so (small models often do not: docs/seahorse.md).
 */
import { UserError } from "../errors.js";
import type { LensReport, ReportCell } from "../outputs/report.js";

export const SEAHORSE = {
  question: "Is there a seahorse emoji?",
  track: [" 🐠", " 🐴", " sea", " horse"],
  families: ["emoji", "contains:horse"],
  points: "resid_post,attn_out,mlp_out",
};

/** The options a preset fills in where the user gave none (tracks and families are added to theirs). */
export interface PresetOptions {
  preset?: string;
  prompt?: string;
  chat?: boolean;
  points?: string;
  track?: string[];
  "track-family"?: string[];
}

export function applyPreset(o: PresetOptions): void {
  if (o.preset === undefined) return;
  if (o.preset !== "seahorse") throw new UserError(`unknown --preset '${o.preset}' (presets: seahorse)`);
  // The seed's question goes through the chat template; a prompt of the user's own is taken as
  // written (the completion prompts of docs/seahorse.md) unless --chat is given.
  if (o.prompt === undefined) {
    o.prompt = SEAHORSE.question;
    o.chat = true;
  }
  o.points ??= SEAHORSE.points;
  o.track = [...(o.track ?? []), ...SEAHORSE.track.filter((t) => !(o.track ?? []).includes(t))];
  o["track-family"] = [...(o["track-family"] ?? []), ...SEAHORSE.families.filter((f) => !(o["track-family"] ?? []).includes(f))];
}

const pct = (p: number) => `${(100 * p).toFixed(p < 0.01 ? 2 : 1)}%`;

/**
 * The positions the story looks at: the last prompt position (the answer's first token), and for
 * every emoji in the generated text, the position that predicts its first token (the emoji prefix
 * byte pair) and the one that predicts its last token (the byte that picks the animal).
 */
function keyPositions(r: LensReport): { position: number; why: string; animal: boolean }[] {
  const read = new Set(r.positions);
  const out: { position: number; why: string; animal: boolean }[] = [];
  const add = (position: number, why: string, animal = false) => {
    if (read.has(position) && !out.some((k) => k.position === position)) out.push({ position, why, animal });
  };
  add(r.prompt_length - 1, "the answer's first token");
  for (const s of r.spans) {
    const [first, last] = s.tokens;
    if (first < r.prompt_length || !s.complete || !/\p{Extended_Pictographic}/u.test(s.text)) continue;
    add(first - 1, `the start of ${JSON.stringify(s.text)}`);
    if (last > first) add(last - 1, `the byte that makes it ${JSON.stringify(s.text)}`, true);
    if (out.length >= 7) break; // the first few emoji tell the story; the rest repeat it
  }
  return out;
}

/** The story of one run, in a few lines per key position. */
export function seahorseStory(r: LensReport): string {
  const lines: string[] = [];
  const answer = r.generated_text ?? r.final.positions.at(-1)?.top[0]?.text ?? "";
  lines.push(`seahorse preset on ${r.model.name} (${r.model.n_layers} layers): ${r.chat ? "asked" : "prompt"} ${JSON.stringify(r.prompt)}`);
  lines.push(r.generated_text !== undefined ? `answer: ${JSON.stringify(answer.slice(0, 200))}` : `next token: ${JSON.stringify(answer)}`);
  const ti = (label: string) => r.targets.findIndex((t) => t.label === label);
  const sea = ti(" sea");
  const horse = ti(" horse");
  const emoji = r.families.findIndex((f) => f.label === "emoji");
  const horsey = r.families.findIndex((f) => f.label === "contains:horse");
  const topK = r.lens.top_k;
  let seahorseSeen = false;
  for (const k of keyPositions(r)) {
    const next = r.tokens[k.position + 1];
    lines.push("");
    lines.push(`position ${k.position} (predicts ${next ? JSON.stringify(next.text) : "the next token"}: ${k.why})`);
    const cells = r.layers.map((layer) => ({ layer, cell: layer.positions.find((c) => c.position === k.position) })).filter((x): x is { layer: LensReport["layers"][number]; cell: ReportCell } => x.cell !== undefined);
    // Where sea / horse reach the lens's top-k, per readout point.
    for (const point of r.lens.points) {
      const hits: string[] = [];
      for (const { layer, cell } of cells) {
        if (layer.point !== point) continue;
        const words = [sea, horse].filter((i) => i >= 0 && cell.targets![i]!.rank < topK).map((i) => r.targets[i]!.label.trim());
        const horseMass = horsey >= 0 ? cell.families![horsey]! : 0;
        if (words.length > 0 || horseMass > 0.05) hits.push(`${layer.layer}${words.length ? `:${words.join("+")}` : ""}${horseMass > 0.05 ? `(horse* ${pct(horseMass)})` : ""}`);
      }
      if (hits.length > 0) seahorseSeen = true;
      lines.push(`  ${point.padEnd(9)} sea/horse in the top-${topK} at layers: ${hits.length ? hits.join(" ") : "none"}`);
    }
    const resid = cells.filter((c) => c.layer.point === "resid_post");
    // The emoji family is the tokens that start an emoji: meaningless where the animal byte is picked.
    if (emoji >= 0 && resid.length > 0 && !k.animal) {
      const best = resid.reduce((a, b) => (b.cell.families![emoji]! > a.cell.families![emoji]! ? b : a));
      const firstHalf = resid.find((c) => c.cell.families![emoji]! > 0.5);
      lines.push(`  emoji-start mass: peaks at layer ${best.layer.layer} (${pct(best.cell.families![emoji]!)})${firstHalf ? `, first above 50% at layer ${firstHalf.layer.layer}` : ", never above 50%"}`);
    }
    const fin = r.final.positions.find((c) => c.position === k.position);
    if (fin) {
      lines.push(`  final: ${fin.top.slice(0, 5).map((t) => `${t.in_context ?? t.text} ${pct(t.prob)}`).join(", ")}`);
    }
  }
  lines.push("");
  lines.push(
    seahorseSeen
      ? "sea or horse reach the top tokens at these positions: read the layers above against the emoji mass (docs/seahorse.md explains how)."
      : "no layer reads sea or horse at these positions: this model does not show the seed's seahorse + emoji mixture here (docs/seahorse.md has prompts where small models do).",
  );
  return lines.join("\n");
}
