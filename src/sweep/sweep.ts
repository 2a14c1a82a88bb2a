/**
 * `logit-lens sweep`: lens statistics over a dataset, resumable.
 *
 * The prompts are cut into units of `unitSize` consecutive prompts. A unit's rows are written as
 * `parts/unit-NNNNNN.parquet`, then its per-prompt statistics as `parts/unit-NNNNNN.json`, each
 * written whole and renamed into place; the JSON is the commit mark. A rerun over the same folder
 * (same model, data and settings: `manifest.json` says which) skips every unit whose JSON exists,
 * redoes the others, and computes the summary from all units' JSON: the same numbers as a run that
 * was never interrupted. At the end: `summary.json`, `summary.txt` (the terminal table) and
 * `figure.svg` (metric vs layer with bootstrap interval bands).
 */
import fs from "node:fs";
import path from "node:path";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { writeFileAtomic } from "../outputs/write-file.js";
import type { SweepData } from "./data.js";
import { SweepEvaluator, type LensSpec } from "./evaluate.js";
import { sweepFigure } from "./figure.js";
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

function unitName(u: number): string {
  return `unit-${String(u).padStart(6, "0")}`;
}

function manifestOf(model: LoadedModel, s: SweepSettings): Record<string, unknown> {
  return {
    schema: SWEEP_SCHEMA,
    model: { name: model.info.name, architecture: model.config.architecture, n_layers: model.config.nLayers, hidden_size: model.config.hidden, vocab_size: model.config.vocabSize, source_bytes: model.info.fileSize },
    data: { sha256: s.data.sha256, kind: s.data.kind, prompts: s.data.count, window: s.data.kind === "text" ? s.window : null },
    metrics: [...s.metrics].sort(),
    lenses: s.lenses.map((l) => ({ name: l.name, sha256: l.sha256 ?? null })),
    positions: s.positions,
    unit_size: s.unitSize,
  };
}

interface UnitFile {
  unit: number;
  tokens: number;
  prompts: { index: number; id: string; stats: PromptStats }[];
}

export async function runSweep(model: LoadedModel, s: SweepSettings): Promise<SweepOutcome> {
  const partsDir = path.join(s.out, "parts");
  fs.mkdirSync(partsDir, { recursive: true });
  // Leftovers of a killed writer (writeFileAtomic's temporary files) are never results.
  for (const f of fs.readdirSync(partsDir)) if (f.startsWith(".") && f.endsWith(".tmp")) fs.rmSync(path.join(partsDir, f), { force: true });
  const manifest = manifestOf(model, s);
  const manifestFile = path.join(s.out, "manifest.json");
  if (fs.existsSync(manifestFile)) {
    const old = JSON.parse(fs.readFileSync(manifestFile, "utf8")) as unknown;
    if (JSON.stringify(old) !== JSON.stringify(manifest)) {
      throw new UserError(`${s.out} holds a different sweep (model, data or settings differ from its manifest.json); give another --out, or remove that folder`);
    }
  } else writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 2) + "\n");

  const metrics = new Set(s.metrics);
  const evaluator = new SweepEvaluator(model);
  const L = model.config.nLayers;
  const unitsTotal = Math.ceil(s.data.count / s.unitSize);
  const units: UnitFile[] = [];
  const todo: number[] = [];
  for (let u = 0; u < unitsTotal; u++) {
    const f = path.join(partsDir, `${unitName(u)}.json`);
    if (fs.existsSync(f)) units[u] = JSON.parse(fs.readFileSync(f, "utf8")) as UnitFile;
    else todo.push(u);
  }
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
    const secs = (now - started) / 1000;
    const rate = secs > 0 ? (tokens * L) / secs : 0;
    const left = todo.length - computed;
    const eta = computed > 0 ? ((now - started) / 1000 / computed) * left : NaN;
    const done = skipped + computed;
    s.log(
      `sweep: ${done}/${unitsTotal} units (${((100 * done) / unitsTotal).toFixed(0)}%${skipped ? `, ${skipped} done before` : ""}), ${tokens} tokens in ${secs.toFixed(1)} s, ${rate.toFixed(0)} tokens x layers/s${left > 0 ? `, ETA ${Number.isFinite(eta) ? formatSeconds(eta) : "…"}` : ""}`,
      final,
    );
  };
  log(false);
  for (const u of todo) {
    if (s.stopAfterUnits !== undefined && computed >= s.stopAfterUnits) break;
    const rows = new RowBuffer(metrics);
    const file: UnitFile = { unit: u, tokens: 0, prompts: [] };
    for (let i = u * s.unitSize; i < Math.min(s.data.count, (u + 1) * s.unitSize); i++) {
      const p = s.data.prompt(i);
      if (p.ids.length > model.config.maxPositions) throw new UserError(`prompt ${p.id} is ${p.ids.length} tokens, longer than the model's context of ${model.config.maxPositions}`);
      const positions = s.positions === "last" ? [p.ids.length - 1] : p.ids.map((_, k) => k);
      const tracked = p.targets.flatMap((t) => t.ids);
      const evals = await evaluator.evaluate({ ids: p.ids, positions, tracked, families: p.tokenSets.map((t) => t.mask) }, s.lenses);
      file.prompts.push({ index: p.index, id: p.id, stats: rows.add(u, p, evals, model.tokenizer) });
      file.tokens += p.ids.length;
      tokens += p.ids.length;
    }
    writeFileAtomic(path.join(partsDir, `${unitName(u)}.parquet`), rows.toParquet());
    writeFileAtomic(path.join(partsDir, `${unitName(u)}.json`), JSON.stringify(file) + "\n");
    units[u] = file;
    computed++;
    log(false);
  }
  log(true);
  const complete = units.filter(Boolean).length === unitsTotal;
  const prompts = units.filter(Boolean).flatMap((f) => f.prompts.map((p) => p.stats));
  const summary: SweepSummary = {
    schema: "logit-lens/sweep-summary@1",
    model: { name: model.info.name, architecture: model.config.architecture, n_layers: L, hidden_size: model.config.hidden, vocab_size: model.config.vocabSize },
    data: { file: path.basename(s.dataFile), sha256: s.data.sha256, kind: s.data.kind, prompts: s.data.count, window: s.data.kind === "text" ? s.window : null },
    lenses: s.lenses.map((l) => ({ name: l.name, ...(l.file ? { file: path.basename(l.file) } : {}), ...(l.sha256 ? { sha256: l.sha256 } : {}) })),
    bootstrap: { resamples: s.bootstrap, seed: s.seed, unit: "prompt", interval: "percentile 95%" },
    series: summarize(prompts, L, s.bootstrap, s.seed),
  };
  if (complete) {
    writeFileAtomic(path.join(s.out, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
    writeFileAtomic(path.join(s.out, "summary.txt"), summaryTable(summary) + "\n");
    writeFileAtomic(path.join(s.out, "figure.svg"), sweepFigure(summary));
  }
  return { summary, unitsTotal, unitsSkipped: skipped, unitsComputed: computed, tokensComputed: tokens, seconds: (Date.now() - started) / 1000, complete };
}

function formatSeconds(s: number): string {
  if (s < 90) return `${s.toFixed(0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
