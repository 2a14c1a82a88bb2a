/**
 * The `explain` command (issue 10): its options, checks and output. Kept out of cli/main.ts, which
 * only dispatches here with the helpers it owns (model loading, writing the output).
 */
import { UserError } from "../errors.js";
import type { LoadedModel } from "../engine/model.js";
import { parseFamily } from "../lens/targets.js";
import { explainCell, explainText, resolveToken } from "./explain.js";
import { attribute, attributionText } from "./attribution.js";
import { expandCandidate, expandTopCandidates, expansionText, type Expansion } from "./expand.js";
import { patchSweep, patchText } from "./patching.js";
import { renderToken } from "../tokens/render.js";
import { attributionSvg, attributionWhat, patchSvg } from "../outputs/explain-charts.js";
import { explainChartsHtml } from "../outputs/explain-html.js";
import { pngFigureOptions, svgToPng } from "../outputs/png.js";
import { writeFileAtomic } from "../outputs/write-file.js";
import type { FigureOptions } from "../outputs/svg.js";

export interface CommandDeps {
  loadModel(spec: string | undefined): Promise<LoadedModel>;
  emit(text: string, out: string | undefined): Promise<void>;
  /** Cancels a long run (a patching sweep) between its steps: the explorer's server sets it. */
  signal?: AbortSignal;
}

/** The options these commands read (a subset of the CLI's parsed options). */
export interface ExplainCliOptions {
  model?: string;
  prompt?: string;
  chat?: boolean;
  layer?: string;
  position?: string;
  concepts?: string;
  vector?: string;
  family?: string;
  "top-k"?: string;
  expand?: string;
  "expand-k"?: string;
  json?: boolean;
  format?: string;
  out?: string;
}

export function integer(value: string | undefined, name: string, fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) throw new UserError(`--${name} is required`);
    return fallback;
  }
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n)) throw new UserError(`--${name} must be an integer, got '${value}'`);
  return n;
}

/** The prompt's token ids, as `lens` makes them (chat template when asked). */
export function promptIds(model: LoadedModel, prompt: string | undefined, chat: boolean | undefined, what: string): number[] {
  if (prompt === undefined) throw new UserError(`${what} needs --prompt <text>`);
  if (prompt.trim().length === 0) throw new UserError("the prompt is empty");
  const tok = model.tokenizer;
  const ids = chat ? tok.encodeChat([{ role: "user", content: prompt }], { addGenerationPrompt: true }) : tok.encode(prompt);
  if (ids.length === 0) throw new UserError("the prompt tokenizes to nothing");
  if (ids.length > model.config.maxPositions) throw new UserError(`the prompt is ${ids.length} tokens, longer than the model's context of ${model.config.maxPositions}`);
  return ids;
}

type ChartFormat = "terminal" | "json" | "svg" | "png" | "html";
const CHART_FORMATS: readonly ChartFormat[] = ["terminal", "json", "svg", "png", "html"];

/** `--json`, `--format`, else the extension of `--out` (x.svg, x.png, x.html), else terminal text. */
function chartFormat(o: { json?: boolean; format?: string; out?: string }): ChartFormat {
  const ext = /\.(svg|png|html?)$/i.exec(o.out ?? "")?.[1]?.toLowerCase();
  const byExtension = ext === "htm" ? "html" : ext;
  const f = o.json ? "json" : o.format ?? byExtension ?? "terminal";
  if (!(CHART_FORMATS as readonly string[]).includes(f)) throw new UserError(`this command writes ${CHART_FORMATS.join(", ")}, not '${f}'`);
  if (f === "png" && !o.out) throw new UserError("--format png needs --out <file.png>");
  return f as ChartFormat;
}

/** Writes a result as terminal text, JSON, or its figure (SVG, PNG, or an HTML page around the SVG). */
async function emitChart(
  format: ChartFormat,
  o: { out?: string },
  deps: CommandDeps,
  r: { data: unknown; text: string; title: string; svg: (fig: FigureOptions) => string },
): Promise<void> {
  if (format === "json") return deps.emit(JSON.stringify(r.data), o.out);
  if (format === "terminal") return deps.emit(r.text, o.out);
  if (format === "svg") return deps.emit(r.svg({}), o.out);
  if (format === "html") return deps.emit(explainChartsHtml(r.title, r.svg({}), r.text, r.data), o.out);
  writeFileAtomic(o.out!, await svgToPng(r.svg(await pngFigureOptions())));
}

function wantsJson(o: { json?: boolean; format?: string }): boolean {
  const f = o.json ? "json" : o.format ?? "terminal";
  if (f !== "json" && f !== "terminal") throw new UserError(`this command writes terminal text or json, not '${f}'`);
  return f === "json";
}

/**
 * `explain --layer L`: the cell's snap; `explain --expand top|<token>`: candidates that start a
 * character at --position, expanded into the characters they become (expand.ts). Both may be given.
 */
export async function explainCommand(o: ExplainCliOptions, deps: CommandDeps): Promise<number> {
  if (o.layer === undefined && o.expand === undefined) throw new UserError("explain needs --layer L (the cell's snap) and/or --expand top|<token> (characters a candidate becomes)");
  const layer = o.layer !== undefined ? integer(o.layer, "layer") : undefined;
  const position = integer(o.position, "position", -1);
  const topK = integer(o["top-k"], "top-k", 10);
  if (topK < 1 || topK > 1000) throw new UserError(`--top-k must be from 1 to 1000, got ${topK}`);
  const expandK = integer(o["expand-k"], "expand-k", 5);
  if (o["expand-k"] !== undefined && o.expand === undefined) throw new UserError("--expand-k applies to --expand");
  const json = wantsJson(o);
  if (o.prompt === undefined) throw new UserError("explain needs --prompt <text>");
  const model = await deps.loadModel(o.model);
  const ids = promptIds(model, o.prompt, o.chat, "explain");
  const texts: string[] = [];
  const result: Record<string, unknown> = {};
  if (layer !== undefined) {
    const concepts = o.concepts !== undefined ? o.concepts.split(",").filter((c) => c.length > 0) : [];
    const family = o.family !== undefined ? parseFamily(model.tokenizer, o.family) : undefined;
    const r = await explainCell(model, ids, { layer, position, topK, concepts, vector: o.vector, family });
    if (o.expand === undefined) {
      await deps.emit(json ? JSON.stringify(r) : explainText(r), o.out);
      return 0;
    }
    Object.assign(result, r);
    texts.push(explainText(r));
  }
  let expansions: Expansion[];
  if (o.expand === "top") expansions = await expandTopCandidates(model, ids, position, topK, { k: expandK });
  else expansions = [await expandCandidate(model, ids, position, resolveToken(model, o.expand!), { k: expandK })];
  result["expansions"] = expansions;
  texts.push(expansionText(expansions));
  await deps.emit(json ? JSON.stringify(result) : texts.join("\n"), o.out);
  return 0;
}

export interface AttributeCliOptions extends ExplainCliOptions {
  target?: string;
  versus?: string;
}

/**
 * The target (and versus) as token ids at one position. Multi-token texts are teacher-forced up to
 * the first token where they differ (🐠 vs 🐴 share ` ðŁ`,`Ĳ` and part at the animal byte): their
 * common prefix is appended to the prompt, and the attribution is read where they part.
 */
export function splitAtDifference(model: LoadedModel, target: string, versus: string | undefined): { prefix: number[]; target: number; versus?: number } {
  const tok = model.tokenizer;
  const asIds = (s: string) => (/^#\d+$/.test(s.trim()) || tok.tokenId(s) !== undefined ? [resolveToken(model, s)] : tok.encode(s, { addSpecialTokens: false }));
  const t = asIds(target);
  if (t.length === 0) throw new UserError(`--target ${JSON.stringify(target)} tokenizes to nothing`);
  if (versus === undefined) return { prefix: [], target: t[0]! };
  const v = asIds(versus);
  if (v.length === 0) throw new UserError(`--versus ${JSON.stringify(versus)} tokenizes to nothing`);
  let k = 0;
  while (k < t.length && k < v.length && t[k] === v[k]) k++;
  if (k === t.length || k === v.length) throw new UserError(`--target ${JSON.stringify(target)} and --versus ${JSON.stringify(versus)} do not part at any token (one is a prefix of the other)`);
  return { prefix: t.slice(0, k), target: t[k]!, versus: v[k]! };
}

export async function attributeCommand(o: AttributeCliOptions, deps: CommandDeps): Promise<number> {
  if (o.target === undefined) throw new UserError("attribute needs --target <text> (and optionally --versus <text>)");
  const format = chartFormat(o);
  if (o.prompt === undefined) throw new UserError("attribute needs --prompt <text>");
  const model = await deps.loadModel(o.model);
  const ids = promptIds(model, o.prompt, o.chat, "attribute");
  const split = splitAtDifference(model, o.target, o.versus);
  if (split.prefix.length > 0 && o.position !== undefined) throw new UserError("--position cannot be combined with a --target/--versus pair that shares leading tokens (the attribution is read where they part)");
  const position = split.prefix.length > 0 ? ids.length + split.prefix.length - 1 : integer(o.position, "position", -1);
  const a = await attribute(model, [...ids, ...split.prefix], position, split.target, split.versus);
  const title = `direct logit attribution · ${attributionWhat(a)} · ${model.info.name}`;
  await emitChart(format, o, deps, { data: a, text: attributionText(a), title, svg: (fig) => attributionSvg(a, fig) });
  return 0;
}

export interface PatchCliOptions extends AttributeCliOptions {
  from?: string;
  map?: string;
  layers?: string;
  positions?: string;
}

function intList(spec: string, name: string): number[] {
  const out: number[] = [];
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new UserError(`--${name}: '${part}' is not an index or a range a-b`);
    for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) out.push(i);
  }
  if (out.length === 0) throw new UserError(`--${name} is empty`);
  return out;
}

/** `--map 5:4,6:5`: B position -> A position. */
function positionMap(spec: string): Map<number, number> {
  const map = new Map<number, number>();
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+):(\d+)$/.exec(part);
    if (!m) throw new UserError(`--map: '${part}' is not B:A (a position of prompt B, then the position of prompt A it reads from)`);
    map.set(Number(m[1]), Number(m[2]));
  }
  return map;
}

export async function patchCommand(o: PatchCliOptions, deps: CommandDeps): Promise<number> {
  if (o.from === undefined) throw new UserError("patch needs --from <prompt A> (the source of the residuals) and --prompt <prompt B>");
  if (o.target === undefined) throw new UserError("patch needs --target <text> (and optionally --versus <text>)");
  const format = chartFormat(o);
  const model = await deps.loadModel(o.model);
  const idsB = promptIds(model, o.prompt, o.chat, "patch");
  const idsA = promptIds(model, o.from, o.chat, "patch");
  const split = splitAtDifference(model, o.target, o.versus);
  const map = o.map !== undefined ? positionMap(o.map) : undefined;
  const s = await patchSweep(model, [...idsA, ...split.prefix], [...idsB, ...split.prefix], { target: split.target, versus: split.versus }, {
    layers: o.layers !== undefined ? intList(o.layers, "layers") : undefined,
    positions: o.positions !== undefined ? intList(o.positions, "positions") : undefined,
    positionMap: map,
    signal: deps.signal,
  });
  const tokenText = (p: number) => renderToken(model.tokenizer.tokenBytes([...idsB, ...split.prefix][p]!)).text;
  const what = split.versus !== undefined ? `logit(${JSON.stringify(o.target)}) - logit(${JSON.stringify(o.versus)})` : `log P(${JSON.stringify(o.target)})`;
  const title = `activation patching · ${what} · ${model.info.name}`;
  await emitChart(format, o, deps, { data: s, text: patchText(s, tokenText, what), title, svg: (fig) => patchSvg(s, fig) });
  return 0;
}
