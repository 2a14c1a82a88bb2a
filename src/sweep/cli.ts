/**
 * Command-line entries of src/sweep: `sweep` (local, `--queue ... --enqueue`, `worker`, `merge`),
 * `query`, `linear fit`. main.ts parses the options
 * and hands them here with its model loader, so these commands load models exactly as `lens` does.
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import { DEFAULT_MODEL } from "../sources/resolve.js";
import type { LoadedModel } from "../engine/model.js";
import { number } from "../cli/options.js";
import { loadSweepData } from "./data.js";
import { runSweep, type SweepSettings, type SweepSummary } from "./sweep.js";
import { assertRedisReachable, DEFAULT_QUEUE_NAME, enqueueSweep, mergeCommandCore, runWorker } from "./queue.js";
import { METRICS, type Metric } from "./rows.js";
import { summaryTable } from "./table.js";
import { formatTable, querySweep } from "./query.js";
import { fitLinearLens, linearTranslate, readLinearLens, saveLinearLens, translatorOf } from "./linear.js";
import { readTunedLens } from "../tuned/storage.js";
import { statusLine } from "../progress.js";

export interface SweepCliOptions {
  model?: string;
  data?: string;
  metrics?: string;
  window?: string;
  lens?: string;
  positions?: string;
  "unit-size"?: string;
  bootstrap?: string;
  seed?: string;
  limit?: string;
  out?: string;
  json?: boolean;
  quiet?: boolean;
  ridge?: string;
  queue?: string;
  "queue-name"?: string;
  enqueue?: boolean;
  "no-wait"?: boolean;
  "lock-seconds"?: string;
}

export interface SweepCliDeps {
  loadModel: (spec: string | undefined) => Promise<LoadedModel>;
  emit: (text: string, out: string | undefined) => Promise<void>;
}


/** The sweep's options checked, the model loaded, the data read: shared by a local run, the enqueuer and every worker. */
async function prepareSweep(o: SweepCliOptions, deps: Pick<SweepCliDeps, "loadModel">): Promise<{ model: LoadedModel; settings: SweepSettings }> {
  if (!o.data) throw new UserError("sweep needs --data <prompts.jsonl | corpus.txt>");
  if (!o.out) throw new UserError("sweep needs --out <folder> (results are written there, and a rerun resumes there)");
  if (!fs.existsSync(o.data)) throw new UserError(`--data ${o.data} does not exist`);
  const metrics = (o.metrics ?? "kl,ce,top1,targets").split(",").map((m) => m.trim()).filter(Boolean);
  for (const m of metrics) if (!METRICS.includes(m as Metric)) throw new UserError(`unknown metric '${m}' in --metrics (${METRICS.join(", ")})`);
  const window = number(o.window, "window", 128, (n) => Number.isInteger(n) && n >= 2 && n <= 1 << 20, "an integer of at least 2");
  const unitSize = number(o["unit-size"], "unit-size", 8, (n) => Number.isInteger(n) && n >= 1 && n <= 100000, "an integer from 1 to 100000");
  const bootstrap = number(o.bootstrap, "bootstrap", 1000, (n) => Number.isInteger(n) && n >= 0 && n <= 1_000_000, "an integer from 0 to 1000000");
  const seed = number(o.seed, "seed", 0, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, "an integer from 0 to 2^32-1");
  const limit = o.limit === undefined ? undefined : number(o.limit, "limit", 0, (n) => Number.isInteger(n) && n >= 1, "a positive integer");
  const positions = (o.positions ?? "all") as "all" | "last";
  if (positions !== "all" && positions !== "last") throw new UserError("sweep --positions must be 'all' or 'last'");
  if (fs.existsSync(o.out) && !fs.statSync(o.out).isDirectory()) throw new UserError(`--out ${o.out} is a file; sweep writes a folder`);

  const model = await deps.loadModel(o.model);
  const lenses: SweepSettings["lenses"] = [];
  for (const spec of (o.lens ?? "logit").split(",").map((s) => s.trim()).filter(Boolean)) {
    if (spec === "logit") lenses.push({ name: "logit" });
    else if (spec.startsWith("linear:")) {
      const file = spec.slice(7);
      const lens = readLinearLens(file, model);
      lenses.push({ name: "linear", translator: translatorOf(lens, model.config.nLayers), file, sha256: lens.sha256 });
    } else if (spec.startsWith("tuned:")) {
      const file = spec.slice(6);
      const lens = readTunedLens(file, model);
      lenses.push({ name: "tuned", translator: translatorOf(lens, model.config.nLayers), file, sha256: lens.sha256 });
    } else throw new UserError(`unknown --lens '${spec}' (logit, linear:FILE, tuned:FILE)`);
  }
  const data = loadSweepData(o.data, model.tokenizer, { window, limit });
  return { model, settings: { data, dataFile: o.data, window, metrics: metrics as Metric[], lenses, positions, unitSize, bootstrap, seed, out: o.out, log: statusLine(o.quiet) } };
}

/**
 * The options a queue job carries: the user's sweep options with every path made absolute (a
 * worker elsewhere finds the same files through a shared volume). The model spec stays as given
 * (an alias or a path; each worker resolves it in its own cache).
 */
function jobOptions(o: SweepCliOptions): SweepCliOptions {
  const abs = (p: string) => path.resolve(p);
  const spec = o.model ?? DEFAULT_MODEL;
  const model = fs.existsSync(spec) ? abs(spec) : spec;
  const lens = o.lens?.split(",").map((s) => s.trim()).map((s) => (s.includes(":") ? `${s.slice(0, s.indexOf(":"))}:${abs(s.slice(s.indexOf(":") + 1))}` : s)).join(",");
  const keep: (keyof SweepCliOptions)[] = ["metrics", "window", "positions", "unit-size", "bootstrap", "seed", "limit"];
  const out: SweepCliOptions = { model, data: abs(o.data!), out: abs(o.out!), quiet: true, ...(lens ? { lens } : {}) };
  for (const k of keep) if (o[k] !== undefined) (out as Record<string, unknown>)[k] = o[k];
  return out;
}

function queueName(o: SweepCliOptions): string {
  const name = o["queue-name"] ?? DEFAULT_QUEUE_NAME;
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(name)) throw new UserError(`--queue-name '${name}': letters, digits, '.', '_' and '-' only`);
  return name;
}

function printOutcome(o: SweepCliOptions, L: number, outcome: { unitsComputed: number; unitsSkipped: number; tokensComputed: number; seconds: number }): void {
  if (o.quiet) return;
  const rate = outcome.seconds > 0 ? (outcome.tokensComputed * L) / outcome.seconds : 0;
  process.stderr.write(
    `sweep: ${outcome.unitsComputed} units computed, ${outcome.unitsSkipped} already done; ${outcome.tokensComputed} tokens x ${L} layers in ${outcome.seconds.toFixed(1)} s (${rate.toFixed(0)} tokens x layers/s)\n`,
  );
}

async function emitSummary(o: SweepCliOptions, summary: SweepSummary, deps: SweepCliDeps): Promise<void> {
  if (o.json) await deps.emit(JSON.stringify(summary, null, 2), undefined);
  else await deps.emit(`${summaryTable(summary)}\n\nwrote ${path.join(o.out!, "parts/")} (rows, Parquet), summary.json, summary.txt, figure.svg, figure.png, report.html in ${o.out}`, undefined);
}

/**
 * `sweep`: a local run (default); `sweep --queue URL --enqueue`: queue the units and follow them;
 * `sweep worker --queue URL`: compute queued units; `sweep merge --out DIR`: the summary of a
 * folder computed by workers.
 */
export async function sweepCommand(args: string[], o: SweepCliOptions, deps: SweepCliDeps): Promise<number> {
  const [sub, extra] = args;
  if (extra !== undefined || (sub !== undefined && sub !== "worker" && sub !== "merge")) throw new UserError(`unknown 'sweep' subcommand '${args.join(" ")}' (sweep, sweep worker, sweep merge)`);
  if (sub === "worker") {
    if (!o.queue) throw new UserError("sweep worker needs --queue redis://host:port");
    const lockSeconds = number(o["lock-seconds"], "lock-seconds", 30, (n) => n >= 1 && n <= 86400, "seconds from 1 to 86400");
    // The model stays loaded across sweeps that use it (the data and settings are re-read per
    // sweep); `--model` loads it before the first unit arrives.
    let loaded: { spec: string | undefined; model: Promise<LoadedModel> } | null = null;
    const loadModel = (spec: string | undefined) => {
      if (spec !== undefined && fs.existsSync(spec)) spec = path.resolve(spec);
      if (!loaded || loaded.spec !== spec) loaded = { spec, model: deps.loadModel(spec) };
      return loaded.model;
    };
    if (o.model) await assertRedisReachable(o.queue, queueName(o)).then(() => loadModel(o.model));
    await runWorker<SweepCliOptions>({
      url: o.queue,
      queueName: queueName(o),
      lockSeconds,
      prepare: (jobOpts) => prepareSweep(jobOpts, { loadModel }),
      log: o.quiet ? () => undefined : (line) => process.stderr.write(`${line}\n`),
    });
    return 0;
  }
  if (sub === "merge") {
    if (!o.out) throw new UserError("sweep merge needs --out <results folder>");
    const bootstrap = o.bootstrap === undefined ? undefined : number(o.bootstrap, "bootstrap", 1000, (n) => Number.isInteger(n) && n >= 0 && n <= 1_000_000, "an integer from 0 to 1000000");
    const seed = o.seed === undefined ? undefined : number(o.seed, "seed", 0, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, "an integer from 0 to 2^32-1");
    const merged = await mergeCommandCore(o.out, { bootstrap, seed });
    await emitSummary(o, merged.summary, deps);
    return 0;
  }
  if (o.enqueue && !o.queue) throw new UserError("--enqueue needs --queue redis://host:port");
  if (o.queue && !o.enqueue) throw new UserError("sweep --queue: add --enqueue to queue this sweep's units, or run 'sweep worker --queue ...' to compute queued units");
  if (o.queue) await assertRedisReachable(o.queue, queueName(o));
  const { model, settings } = await prepareSweep(o, deps);
  const L = model.config.nLayers;
  if (o.queue) {
    const r = await enqueueSweep({ url: o.queue, queueName: queueName(o), model, settings, options: jobOptions(o), wait: !o["no-wait"], log: settings.log });
    if (!r.merged) {
      await deps.emit(`queued ${r.jobsAdded} units of ${r.unitsTotal} (${r.unitsAlreadyDone} already done) on ${o.queue}; start workers with 'logit-lens sweep worker --queue ${o.queue}', then 'logit-lens sweep merge --out ${o.out}'`, undefined);
      return 0;
    }
    await emitSummary(o, r.merged.summary, deps);
    return 0;
  }
  const outcome = await runSweep(model, settings);
  printOutcome(o, L, outcome);
  await emitSummary(o, outcome.summary, deps);
  return 0;
}

export async function queryCommand(args: string[], o: SweepCliOptions, deps: SweepCliDeps): Promise<number> {
  const [dir, sql, extra] = args;
  if (!dir || !sql) throw new UserError(`query needs a results folder and SQL, e.g. logit-lens query results/ "SELECT layer, avg(kl) FROM rows GROUP BY layer ORDER BY layer"`);
  if (extra !== undefined) throw new UserError(`unexpected argument '${extra}' after the SQL (quote the whole query)`);
  const r = await querySweep(dir, sql);
  if (o.json) await deps.emit(JSON.stringify(r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])))), o.out);
  else await deps.emit(formatTable(r), o.out);
  return 0;
}

export async function linearCommand(args: string[], o: SweepCliOptions, deps: SweepCliDeps): Promise<number> {
  const [sub] = args;
  if (sub !== "fit") throw new UserError(`unknown 'linear' subcommand '${sub ?? ""}' (fit)`);
  if (!o.data) throw new UserError("linear fit needs --data <corpus.txt | prompts.jsonl>");
  if (!o.out) throw new UserError("linear fit needs --out <lens.safetensors>");
  const window = number(o.window, "window", 128, (n) => Number.isInteger(n) && n >= 2 && n <= 1 << 20, "an integer of at least 2");
  const limit = o.limit === undefined ? undefined : number(o.limit, "limit", 0, (n) => Number.isInteger(n) && n >= 1, "a positive integer");
  const ridge = number(o.ridge, "ridge", 1e-3, (n) => n >= 0 && n <= 1e6, "a number from 0 to 1e6");
  const model = await deps.loadModel(o.model);
  const data = loadSweepData(o.data, model.tokenizer, { window, limit });
  const lens = await fitLinearLens(model, data, { ridge, dataFile: o.data, window, log: statusLine(o.quiet) });
  await saveLinearLens(o.out, lens);
  await deps.emit(`wrote ${o.out}: linear lens for ${model.info.name}, ${lens.metadata["layers"]} layers fitted on ${lens.metadata["tokens"]} tokens (ridge ${ridge})`, undefined);
  return 0;
}

/** `lens --lens linear:FILE | tuned:FILE`: the translator and the words the report's lens description starts with. */
export function lensTranslator(spec: string, model: LoadedModel, variant: string, points: string[]): { fn: (hook: string, resid: Float32Array) => Float32Array; description: string } {
  const kind = spec.startsWith("linear:") ? "linear" : spec.startsWith("tuned:") ? "tuned" : undefined;
  if (!kind) throw new UserError(`unknown --lens '${spec}' (logit, linear:FILE, tuned:FILE)`);
  if (variant !== "logit") throw new UserError(`--lens ${kind}:FILE needs --variant logit (its maps end at the final residual, read through the final norm)`);
  if (points.some((p) => p !== "resid_post")) throw new UserError(`--lens ${kind}:FILE reads resid_post only (its maps are made per block output); drop --points`);
  const file = spec.slice(kind.length + 1);
  if (kind === "tuned") {
    const lens = readTunedLens(file, model);
    return { fn: linearTranslate(lens), description: `Tuned lens (Belrose et al. 2023; ${path.basename(file)}, trained ${lens.metadata["steps"]} steps on ${lens.metadata["tokens"]} tokens): each layer's residual mapped by its trained affine translator` };
  }
  const lens = readLinearLens(file, model);
  return { fn: linearTranslate(lens), description: `Linear shortcut lens (Din et al. 2024; ${path.basename(file)}, fitted on ${lens.metadata["tokens"]} tokens): each layer's residual mapped by least squares to the final residual` };
}
