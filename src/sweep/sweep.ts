/**
 * `logit-lens sweep`: lens statistics over a dataset, resumable, on one machine or through a queue.
 *
 * The prompts are cut into units of `unitSize` consecutive prompts. A unit's rows are written as
 * `parts/unit-NNNNNN.parquet`, then its per-prompt statistics as `parts/unit-NNNNNN.json`, each
 * written whole and renamed into place; the JSON is the commit mark. A rerun over the same folder
 * (same model, data and settings: `manifest.json` says which) skips every unit whose JSON exists,
 * redoes the others, and computes the summary from all units' JSON: the same numbers as a run that
 * was never interrupted. The same units are what queue workers compute (queue.ts), and the same
 * merge (`mergeSweep`, no model needed) ends both: `summary.json`, `summary.txt` (the terminal
 * table), `figure.svg` / `figure.png` (metric vs layer with bootstrap interval bands) and
 * `report.html`.
 */
import fs from "node:fs";
import path from "node:path";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { writeFileAtomic } from "../outputs/write-file.js";
import type { SweepData } from "./data.js";
import { coveredText, pngFontCoverage, svgToPng } from "../outputs/png.js";
import { SweepEvaluator, type LensSpec } from "./evaluate.js";
import { sweepFigure } from "./figure.js";
import { sweepHtml } from "./html.js";
import { RowBuffer, type Metric } from "./rows.js";
import { summarize, type PromptStats, type SummarySeries } from "./stats.js";
import { summaryTable } from "./table.js";

export const SWEEP_SCHEMA = "logit-lens/sweep@1";

export interface SweepSettings {
  data: SweepData;
  /** The --data path as given (recorded; the sha256 decides identity). */
  dataFile: string;
  window: number;
  metrics: Metric[];
  lenses: (LensSpec & { file?: string; sha256?: string })[];
  /** "all" positions of each prompt, or only its "last". */
  positions: "all" | "last";
  unitSize: number;
  bootstrap: number;
  seed: number;
  out: string;
  /** Progress lines on stderr; null = quiet. */
  log: ((line: string, final: boolean) => void) | null;
  /** Stop after this many units computed in this run (tests of resumption). */
  stopAfterUnits?: number;
}

export interface SweepSummary {
  schema: string;
  model: { name: string; architecture: string; n_layers: number; hidden_size: number; vocab_size: number };
  data: { file: string; sha256: string; kind: string; prompts: number; window: number | null };
  lenses: { name: string; file?: string; sha256?: string }[];
  bootstrap: { resamples: number; seed: number; unit: "prompt"; interval: "percentile 95%" };
  series: SummarySeries[];
}

export interface SweepOutcome {
  summary: SweepSummary;
  unitsTotal: number;
  unitsSkipped: number;
  unitsComputed: number;
  /** Tokens and seconds of what this run computed (throughput = tokens x layers / seconds). */
  tokensComputed: number;
  seconds: number;
  complete: boolean;
}

export function unitName(u: number): string {
  return `unit-${String(u).padStart(6, "0")}`;
}

/**
 * What identifies a sweep (compared on every rerun and by every worker), plus `about`: how to
 * describe it (file names, bootstrap settings), which may change between runs over the same folder.
 */
function manifestOf(model: LoadedModel, s: SweepSettings): SweepManifest {
  return {
    schema: SWEEP_SCHEMA,
    model: { name: model.info.name, architecture: model.config.architecture, n_layers: model.config.nLayers, hidden_size: model.config.hidden, vocab_size: model.config.vocabSize, source_bytes: model.info.fileSize },
    data: { sha256: s.data.sha256, kind: s.data.kind, prompts: s.data.count, window: s.data.kind === "text" ? s.window : null },
    metrics: [...s.metrics].sort(),
    lenses: s.lenses.map((l) => ({ name: l.name, sha256: l.sha256 ?? null })),
    positions: s.positions,
    unit_size: s.unitSize,
    about: {
      data_file: path.basename(s.dataFile),
      lenses: s.lenses.map((l) => ({ name: l.name, ...(l.file ? { file: path.basename(l.file) } : {}), ...(l.sha256 ? { sha256: l.sha256 } : {}) })),
      bootstrap: s.bootstrap,
      seed: s.seed,
    },
  };
}

export interface SweepManifest {
  schema: string;
  model: SweepSummary["model"] & { source_bytes: number };
  data: { sha256: string; kind: string; prompts: number; window: number | null };
  metrics: string[];
  lenses: { name: string; sha256: string | null }[];
  positions: "all" | "last";
  unit_size: number;
  about: { data_file: string; lenses: SweepSummary["lenses"]; bootstrap: number; seed: number };
}

const identity = (m: SweepManifest): string => JSON.stringify({ ...m, about: undefined });

export function readManifest(out: string): SweepManifest {
  const file = path.join(out, "manifest.json");
  if (!fs.existsSync(file)) throw new UserError(`${out} holds no sweep (no manifest.json)`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as SweepManifest;
  } catch (e) {
    throw new UserError(`${file} is not valid JSON (${(e as Error).message.split("\n")[0]})`);
  }
}

export const unitsOf = (m: Pick<SweepManifest, "data" | "unit_size">): number => Math.ceil(m.data.prompts / m.unit_size);

/**
 * Creates the results folder and its manifest, or checks that the folder holds this same sweep
 * (a different one is refused). `about` is rewritten when it changed (say a new --bootstrap).
 * Returns the manifest and the number of units.
 */
export function openSweep(model: LoadedModel, s: SweepSettings, opts: { updateAbout: boolean } = { updateAbout: true }): { manifest: SweepManifest; unitsTotal: number } {
  fs.mkdirSync(path.join(s.out, "parts"), { recursive: true });
  const manifest = manifestOf(model, s);
  const manifestFile = path.join(s.out, "manifest.json");
  if (fs.existsSync(manifestFile)) {
    const old = readManifest(s.out);
    if (identity(old) !== identity(manifest)) {
      throw new UserError(`${s.out} holds a different sweep (model, data or settings differ from its manifest.json); give another --out, or remove that folder`);
    }
    if (opts.updateAbout && JSON.stringify(old.about) !== JSON.stringify(manifest.about)) writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 2) + "\n");
  } else writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 2) + "\n");
  return { manifest, unitsTotal: unitsOf(manifest) };
}

/** Units whose commit mark (`parts/unit-NNNNNN.json`) exists. */
export function finishedUnits(out: string, unitsTotal: number): Set<number> {
  const done = new Set<number>();
  const dir = path.join(out, "parts");
  if (!fs.existsSync(dir)) return done;
  for (const f of fs.readdirSync(dir)) {
    const m = /^unit-(\d{6,})\.json$/.exec(f);
    if (m && Number(m[1]) < unitsTotal) done.add(Number(m[1]));
  }
  return done;
}

interface UnitFile {
  unit: number;
  tokens: number;
  prompts: { index: number; id: string; stats: PromptStats }[];
}

/**
 * Computes units and writes their files. A unit is a pure function of (model, data, settings, unit
 * number), and its files have fixed names written whole then renamed: computing a unit twice (a
 * worker killed after writing, a queue that redelivers) overwrites it with the same bytes.
 */
export class UnitRunner {
  private evaluator: SweepEvaluator;
  private metrics: Set<Metric>;

  constructor(
    readonly model: LoadedModel,
    readonly s: Pick<SweepSettings, "data" | "metrics" | "lenses" | "positions" | "unitSize" | "out">,
  ) {
    this.evaluator = new SweepEvaluator(model);
    this.metrics = new Set(s.metrics);
  }

  /** Computes unit u and writes parts/unit-u.parquet then parts/unit-u.json; returns its tokens. */
  async run(u: number): Promise<number> {
    const { model, s } = this;
    const partsDir = path.join(s.out, "parts");
    const rows = new RowBuffer(this.metrics);
    const file: UnitFile = { unit: u, tokens: 0, prompts: [] };
    for (let i = u * s.unitSize; i < Math.min(s.data.count, (u + 1) * s.unitSize); i++) {
      const p = s.data.prompt(i);
      if (p.ids.length > model.config.maxPositions) throw new UserError(`prompt ${p.id} is ${p.ids.length} tokens, longer than the model's context of ${model.config.maxPositions}`);
      const positions = s.positions === "last" ? [p.ids.length - 1] : p.ids.map((_, k) => k);
      const tracked = p.targets.flatMap((t) => t.ids);
      const evals = await this.evaluator.evaluate({ ids: p.ids, positions, tracked, families: p.tokenSets.map((t) => t.mask) }, s.lenses);
      file.prompts.push({ index: p.index, id: p.id, stats: rows.add(u, p, evals, model.tokenizer) });
      file.tokens += p.ids.length;
    }
    writeFileAtomic(path.join(partsDir, `${unitName(u)}.parquet`), rows.toParquet());
    writeFileAtomic(path.join(partsDir, `${unitName(u)}.json`), JSON.stringify(file) + "\n");
    return file.tokens;
  }
}

/** A progress line with the rate and an ETA, shared by the local run and the queue's follower. */
export function progressLine(p: { done: number; total: number; before: number; tokens: number; layers: number; seconds: number; computed: number; extra?: string }): string {
  const rate = p.seconds > 0 ? (p.tokens * p.layers) / p.seconds : 0;
  const left = p.total - p.done;
  const eta = p.computed > 0 ? (p.seconds / p.computed) * left : NaN;
  return `sweep: ${p.done}/${p.total} units (${((100 * p.done) / Math.max(1, p.total)).toFixed(0)}%${p.before ? `, ${p.before} done before` : ""})${p.extra ?? ""}, ${p.tokens} tokens in ${p.seconds.toFixed(1)} s, ${rate.toFixed(0)} tokens x layers/s${left > 0 ? `, ETA ${Number.isFinite(eta) ? formatSeconds(eta) : "…"}` : ""}`;
}

export async function runSweep(model: LoadedModel, s: SweepSettings): Promise<SweepOutcome> {
  const partsDir = path.join(s.out, "parts");
  fs.mkdirSync(partsDir, { recursive: true });
  // Leftovers of a killed writer (writeFileAtomic's temporary files) are never results. (Only a
  // local run, which owns its folder, removes them: queue workers may be writing theirs.)
  for (const f of fs.readdirSync(partsDir)) if (f.startsWith(".") && f.endsWith(".tmp")) fs.rmSync(path.join(partsDir, f), { force: true });
  const { unitsTotal } = openSweep(model, s);
  const runner = new UnitRunner(model, s);
  const L = model.config.nLayers;
  const finished = finishedUnits(s.out, unitsTotal);
  const todo: number[] = [];
  for (let u = 0; u < unitsTotal; u++) if (!finished.has(u)) todo.push(u);
  const skipped = unitsTotal - todo.length;
  const started = Date.now();
  let tokens = 0;
  let computed = 0;
  let lastLog = 0;
  const log = (final: boolean) => {
    if (!s.log) return;
    const now = Date.now();
    if (!final && now - lastLog < 1000) return;
    lastLog = now;
    s.log(progressLine({ done: skipped + computed, total: unitsTotal, before: skipped, tokens, layers: L, seconds: (now - started) / 1000, computed }), final);
  };
  log(false);
  for (const u of todo) {
    if (s.stopAfterUnits !== undefined && computed >= s.stopAfterUnits) break;
    tokens += await runner.run(u);
    computed++;
    log(false);
  }
  log(true);
  const merged = await mergeSweep(s.out);
  return { summary: merged.summary, unitsTotal, unitsSkipped: skipped, unitsComputed: computed, tokensComputed: tokens, seconds: (Date.now() - started) / 1000, complete: merged.missing.length === 0 };
}

export interface MergeOutcome {
  summary: SweepSummary;
  /** Units without results yet (then no summary files are written). */
  missing: number[];
  /** Files written. */
  files: string[];
}

/**
 * The summary of a results folder from its manifest and its units' files alone (no model needed):
 * the end of a local run, and `sweep merge` after a queue's workers. Writes summary.json,
 * summary.txt, figure.svg, figure.png and report.html when every unit is there.
 */
export async function mergeSweep(out: string, opts: { bootstrap?: number; seed?: number; write?: boolean } = {}): Promise<MergeOutcome> {
  const m = readManifest(out);
  const unitsTotal = unitsOf(m);
  const units: UnitFile[] = [];
  const missing: number[] = [];
  for (let u = 0; u < unitsTotal; u++) {
    const f = path.join(out, "parts", `${unitName(u)}.json`);
    if (fs.existsSync(f)) units.push(JSON.parse(fs.readFileSync(f, "utf8")) as UnitFile);
    else missing.push(u);
  }
  const bootstrap = opts.bootstrap ?? m.about.bootstrap;
  const seed = opts.seed ?? m.about.seed;
  const prompts = units.flatMap((f) => f.prompts.map((p) => p.stats));
  const { source_bytes: _bytes, ...model } = m.model;
  void _bytes;
  const summary: SweepSummary = {
    schema: "logit-lens/sweep-summary@1",
    model,
    data: { file: m.about.data_file, sha256: m.data.sha256, kind: m.data.kind, prompts: m.data.prompts, window: m.data.window },
    lenses: m.about.lenses,
    bootstrap: { resamples: bootstrap, seed, unit: "prompt", interval: "percentile 95%" },
    series: summarize(prompts, m.model.n_layers, bootstrap, seed),
  };
  const files: string[] = [];
  if (missing.length === 0 && opts.write !== false) {
    const svg = sweepFigure(summary);
    const outputs: [string, string | Uint8Array][] = [
      ["summary.json", JSON.stringify(summary, null, 2) + "\n"],
      ["summary.txt", summaryTable(summary) + "\n"],
      ["figure.svg", svg],
      ["figure.png", await svgToPng(sweepFigure(summary, { mapText: coveredText(await pngFontCoverage()) }))],
      ["report.html", sweepHtml(summary, svg)],
    ];
    for (const [name, content] of outputs) {
      writeFileAtomic(path.join(out, name), content);
      files.push(name);
    }
  }
  return { summary, missing, files };
}

function formatSeconds(s: number): string {
  if (s < 90) return `${s.toFixed(0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
