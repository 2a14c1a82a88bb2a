/**
 * logit-lens as a library: load a model (alias, .gguf file, Hugging Face folder or hub id), run the
 * lens over a prompt or over a generation, and get the report object that every output format is
 * drawn from, with its renderers. The CLI is a thin layer over the same calls.
 *
 *   import { loadModel, lens, toTerminal } from "logit-lens";
 *   const model = await loadModel("smollm2-135m-instruct");
 *   const report = await lens(model, "The capital of France is", { topK: 5 });
 *   console.log(toTerminal(report));
 */
import { readoutHooks, parsePositions } from "./cli/options.js";
import { LoadedModel } from "./engine/model.js";
import { UserError } from "./errors.js";
import type { LensVariant } from "./lens/lens-graph.js";
import { executeLensJob, type GenerateOptions } from "./lens/job.js";
import { parseFamily, parseTextTarget } from "./lens/targets.js";
import { resolveModelSource, type ResolveOptions } from "./sources/resolve.js";
import { buildReport, type LensReport } from "./outputs/report.js";
import { terminalView } from "./outputs/terminal.js";
import { createProgress, type Progress } from "./progress.js";

export { LoadedModel, type ForwardResult, type ForwardSession, type KvCache } from "./engine/model.js";
export { LogitLens, type LensCell, type LensOptions, type LensReadout, type LensResult } from "./lens/logit-lens.js";
export { executeLensJob, type LensJob, type LensJobResult } from "./lens/job.js";
export { buildReport, REPORT_SCHEMA, type LensReport } from "./outputs/report.js";
export { compactReport, expandReport, type CompactReport } from "./outputs/compact.js";
export { toCsv } from "./outputs/csv.js";
export { toHtml } from "./outputs/html.js";
export { toSvg } from "./outputs/svg.js";
export { toPng } from "./outputs/png.js";
export { allHookNames } from "./architectures/forward.js";
// Why the fish (issue 10, docs/seahorse.md): the snap at one cell, attribution per layer and head,
// activation patching, character-starting candidates expanded, and their figures.
export { explainCell, type ExplainResult } from "./explain/explain.js";
export { attribute, type Attribution } from "./explain/attribution.js";
export { patchSweep, type PatchSweep } from "./explain/patching.js";
export { expandCandidate, expandTopCandidates, type Expansion } from "./explain/expand.js";
export { attributionSvg, patchSvg } from "./outputs/explain-charts.js";
export { FAMILIES, SUPPORTED_ARCHITECTURES, type Architecture } from "./architectures/index.js";
export type { ModelConfig } from "./architectures/config.js";
export { UserError } from "./errors.js";
export { createProgress, type Progress } from "./progress.js";

export interface LoadOptions extends Partial<ResolveOptions> {
  /** Print progress (downloads, conversion) to stderr; default quiet. */
  verbose?: boolean;
}

/** Loads a model by alias, .gguf path, Hugging Face folder or hub id (fetched and converted once). */
export async function loadModel(spec: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const progress = options.progress ?? createProgress({ quiet: !options.verbose });
  return LoadedModel.load(await resolveModelSource(spec, { ...options, progress }), progress);
}

export interface LensRequest {
  /** Top tokens per cell (default 10). */
  topK?: number;
  /** Hook points to read, as the CLI's --points: "resid_post" (default), "resid_pre,attn_out,mlp_out,embed" ... */
  points?: string;
  variant?: LensVariant;
  /** Prompt positions to read, as the CLI's --positions ("0,3,5-7,-1"); default all. */
  positions?: string;
  /** Texts to follow through the layers (--track). */
  track?: string[];
  /** Token families to sum (--track-family): "emoji", "bytes:f09f", "contains:horse". */
  trackFamily?: string[];
  /** Render the prompt with the model's chat template as one user message. */
  chat?: boolean;
  progress?: Progress;
}

export interface GenerateRequest extends LensRequest {
  maxNewTokens?: number;
  /** 0 = greedy (default). */
  temperature?: number;
  topP?: number;
  seed?: number;
}

/** The lens over a prompt: every readout x position, as the JSON report. */
export function lens(model: LoadedModel, prompt: string, request: LensRequest = {}): Promise<LensReport> {
  return lensReport(model, prompt, request, undefined);
}

/** Generates from the prompt and reads the lens at every prompt and generated position. */
export function generate(model: LoadedModel, prompt: string, request: GenerateRequest = {}): Promise<LensReport> {
  const gen: GenerateOptions = {
    maxNewTokens: request.maxNewTokens ?? 40,
    sampling: { temperature: request.temperature ?? 0, topP: request.topP ?? 1, seed: request.seed ?? 0 },
    stopIds: model.tokenizer.eosIds,
  };
  return lensReport(model, prompt, request, gen);
}

async function lensReport(model: LoadedModel, prompt: string, r: LensRequest, gen: GenerateOptions | undefined): Promise<LensReport> {
  const progress = r.progress ?? createProgress({ quiet: true });
  const tok = model.tokenizer;
  const topK = r.topK ?? 10;
  const { hooks, points } = readoutHooks(r.points, model.config);
  const ids = r.chat ? tok.encodeChat([{ role: "user", content: prompt }], { addGenerationPrompt: true }) : tok.encode(prompt);
  if (ids.length === 0) throw new UserError("the prompt tokenizes to nothing");
  const targets = (r.track ?? []).map((t) => parseTextTarget(tok, t));
  const families = (r.trackFamily ?? []).map((f) => parseFamily(tok, f));
  const positions = parsePositions(r.positions, ids.length);
  const variant = r.variant ?? "logit";
  const job = await executeLensJob(model, { promptIds: ids, readouts: hooks, topK, variant, positions, targets, families, generate: gen }, progress);
  const generation = gen && { maxNewTokens: gen.maxNewTokens, temperature: gen.sampling.temperature, topP: gen.sampling.topP, seed: gen.sampling.seed };
  return buildReport(model, { prompt, chat: Boolean(r.chat), job, targets, families, topK, points, generation });
}

/** The report as the terminal view (the CLI's default output). */
export function toTerminal(report: LensReport, options: { width?: number; color?: boolean } = {}): string {
  return terminalView(report, { width: options.width ?? 120, color: options.color ?? false });
}
