/**
 * Command-line entries of src/sweep: `sweep`, `query`, `linear fit`. main.ts parses the options
 * and hands them here with its model loader, so these commands load models exactly as `lens` does.
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import type { LoadedModel } from "../engine/model.js";
import { number } from "../cli/options.js";
import { loadSweepData } from "./data.js";
import { runSweep, type SweepSettings } from "./sweep.js";
import { METRICS, type Metric } from "./rows.js";
import { summaryTable } from "./table.js";
import { formatTable, querySweep } from "./query.js";
import { fitLinearLens, linearTranslate, readLinearLens, saveLinearLens, translatorOf } from "./linear.js";

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
}

export interface SweepCliDeps {
  loadModel: (spec: string | undefined) => Promise<LoadedModel>;
  emit: (text: string, out: string | undefined) => Promise<void>;
}

function stderrLog(quiet: boolean | undefined): SweepSettings["log"] {
  if (quiet) return null;
  const tty = Boolean(process.stderr.isTTY);
  let last = 0;
  return (line, final) => {
    if (tty) process.stderr.write(`\r\x1b[K${line}${final ? "\n" : ""}`);
    else if (final || Date.now() - last > 10_000) {
      last = Date.now();
      process.stderr.write(`${line}\n`);
    }
  };
}

export async function sweepCommand(o: SweepCliOptions, deps: SweepCliDeps): Promise<number> {
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
    } else throw new UserError(`unknown --lens '${spec}' (logit, linear:FILE)`);
  }
  const data = loadSweepData(o.data, model.tokenizer, { window, limit });
  const outcome = await runSweep(model, { data, dataFile: o.data, window, metrics: metrics as Metric[], lenses, positions, unitSize, bootstrap, seed, out: o.out, log: stderrLog(o.quiet) });
  const L = model.config.nLayers;
  if (!o.quiet) {
    const rate = outcome.seconds > 0 ? (outcome.tokensComputed * L) / outcome.seconds : 0;
    process.stderr.write(
      `sweep: ${outcome.unitsComputed} units computed, ${outcome.unitsSkipped} already done; ${outcome.tokensComputed} tokens x ${L} layers in ${outcome.seconds.toFixed(1)} s (${rate.toFixed(0)} tokens x layers/s)\n`,
    );
  }
  if (o.json) await deps.emit(JSON.stringify(outcome.summary, null, 2), undefined);
  else await deps.emit(`${summaryTable(outcome.summary)}\n\nwrote ${path.join(o.out, "parts/")} (rows, Parquet), summary.json, summary.txt, figure.svg in ${o.out}`, undefined);
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
  const lens = await fitLinearLens(model, data, { ridge, dataFile: o.data, window, log: stderrLog(o.quiet) });
  await saveLinearLens(o.out, lens);
  await deps.emit(`wrote ${o.out}: linear lens for ${model.info.name}, ${lens.metadata["layers"]} layers fitted on ${lens.metadata["tokens"]} tokens (ridge ${ridge})`, undefined);
  return 0;
}

/** `lens --lens linear:FILE`: the translator and the words the report's lens description starts with. */
export function lensTranslator(spec: string, model: LoadedModel, variant: string, points: string[]): { fn: (hook: string, resid: Float32Array) => Float32Array; description: string } {
  if (!spec.startsWith("linear:")) throw new UserError(`unknown --lens '${spec}' (logit, linear:FILE)`);
  if (variant !== "logit") throw new UserError("--lens linear:FILE needs --variant logit (its maps end at the final residual, read through the final norm)");
  if (points.some((p) => p !== "resid_post")) throw new UserError("--lens linear:FILE reads resid_post only (its maps are fitted per block output); drop --points");
  const file = spec.slice(7);
  const lens = readLinearLens(file, model);
  return { fn: linearTranslate(lens), description: `Linear shortcut lens (Din et al. 2024; ${path.basename(file)}, fitted on ${lens.metadata["tokens"]} tokens): each layer's residual mapped by least squares to the final residual` };
}
