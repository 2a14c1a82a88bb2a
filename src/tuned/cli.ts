/**
 * `logit-lens tuned train` and `logit-lens tuned eval`. main.ts parses the options and hands them
 * here with its model loader (as the sweep commands do).
 *
 *   tuned train --data corpus.txt --out lens.safetensors [--steps 250] [--windows-per-step 2]
 *               [--window 128] [--optimizer sgd|adam] [--lr-scale 1] [--seed 0]
 *   tuned eval  --data heldout.txt --lens tuned:FILE[,linear:FILE] --out folder/
 *               (a sweep of kl and ce over logit and the given lenses, plus table.md)
 */
import fs from "node:fs";
import path from "node:path";
import { number } from "../cli/options.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { loadSweepData } from "../sweep/data.js";
import { readLinearLens, translatorOf } from "../sweep/linear.js";
import { runSweep, type SweepSettings, type SweepSummary } from "../sweep/sweep.js";
import { svgToPng } from "../outputs/png.js";
import { writeFileAtomic } from "../outputs/write-file.js";
import { DEFAULT_OPTIMIZER, type OptimizerKind } from "./optimizer.js";
import { readTunedLens, saveTunedLens, tunedLensOf } from "./storage.js";
import { trainTunedLens } from "./train.js";
import { statusLine } from "../progress.js";

export interface TunedCliOptions {
  model?: string;
  data?: string;
  out?: string;
  window?: string;
  limit?: string;
  steps?: string;
  "windows-per-step"?: string;
  optimizer?: string;
  "lr-scale"?: string;
  seed?: string;
  lens?: string;
  bootstrap?: string;
  quiet?: boolean;
}

export interface TunedCliDeps {
  loadModel: (spec: string | undefined) => Promise<LoadedModel>;
  emit: (text: string, out: string | undefined) => Promise<void>;
}


export async function tunedCommand(args: string[], o: TunedCliOptions, deps: TunedCliDeps): Promise<number> {
  const [sub, extra] = args;
  if (extra !== undefined) throw new UserError(`unexpected argument '${extra}' after 'tuned ${sub}'`);
  if (sub === "train") return trainCommand(o, deps);
  if (sub === "eval") return evalCommand(o, deps);
  throw new UserError(`unknown 'tuned' subcommand '${sub ?? ""}' (train, eval)`);
}

const windowOption = (o: TunedCliOptions) => number(o.window, "window", 128, (n) => Number.isInteger(n) && n >= 2 && n <= 1 << 20, "an integer of at least 2");
const limitOption = (o: TunedCliOptions) => (o.limit === undefined ? undefined : number(o.limit, "limit", 0, (n) => Number.isInteger(n) && n >= 1, "a positive integer"));

async function trainCommand(o: TunedCliOptions, deps: TunedCliDeps): Promise<number> {
  if (!o.data) throw new UserError("tuned train needs --data <corpus.txt | prompts.jsonl>");
  if (!o.out) throw new UserError("tuned train needs --out <lens.safetensors>");
  if (!fs.existsSync(o.data)) throw new UserError(`--data ${o.data} does not exist`);
  const window = windowOption(o);
  const limit = limitOption(o);
  const steps = number(o.steps, "steps", 250, (n) => Number.isInteger(n) && n >= 1 && n <= 1_000_000, "an integer from 1 to 1000000");
  const windowsPerStep = number(o["windows-per-step"], "windows-per-step", 2, (n) => Number.isInteger(n) && n >= 1 && n <= 100_000, "an integer from 1 to 100000");
  const kind = (o.optimizer ?? DEFAULT_OPTIMIZER.kind) as OptimizerKind;
  if (kind !== "sgd" && kind !== "adam") throw new UserError("--optimizer must be 'sgd' (Nesterov, tuned-lens's default) or 'adam'");
  const lrScale = number(o["lr-scale"], "lr-scale", DEFAULT_OPTIMIZER.lrScale, (n) => n > 0 && n <= 1e4, "a number above 0 (at most 1e4)");
  const seed = number(o.seed, "seed", 0, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, "an integer from 0 to 2^32-1");
  const model = await deps.loadModel(o.model);
  const data = loadSweepData(o.data, model.tokenizer, { window, limit });
  const settings = { optimizer: { ...DEFAULT_OPTIMIZER, kind, lrScale, steps }, windowsPerStep, seed, log: statusLine(o.quiet) };
  const trained = await trainTunedLens(model, data, settings);
  const lens = tunedLensOf(model, trained, settings, o.data, data, window);
  await saveTunedLens(o.out, lens);
  const first = trained.lossHistory[0]!;
  const last = trained.lossHistory.at(-1)!;
  await deps.emit(
    `wrote ${o.out}: tuned lens for ${model.info.name}, ${model.config.nLayers - 1} translators, ${steps} steps on ${trained.tokens} tokens in ${trained.seconds.toFixed(0)} s; training KL (mean over layers) ${first.toFixed(3)} -> ${last.toFixed(3)} nats`,
    undefined,
  );
  return 0;
}

/** `lens --lens tuned:FILE` / sweep `--lens tuned:FILE`: the file read and checked against the model. */
export function tunedLensSpec(file: string, model: LoadedModel): { name: string; translator: ReturnType<typeof translatorOf>; file: string; sha256?: string } {
  const lens = readTunedLens(file, model);
  return { name: "tuned", translator: translatorOf(lens, model.config.nLayers), file, sha256: lens.sha256 };
}

/** Markdown: per layer, KL and CE of each lens (mean [95 % interval]). */
export function evalTable(summary: SweepSummary): string {
  const lenses = summary.lenses.map((l) => l.name);
  const metrics = ["kl", "ce"].filter((m) => summary.series.some((s) => s.metric === m));
  const find = (lens: string, metric: string) => summary.series.find((s) => s.lens === lens && s.metric === metric)!;
  const header = ["layer", ...metrics.flatMap((m) => lenses.map((l) => `${m.toUpperCase()} ${l}`))];
  const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "—");
  const rows = Array.from({ length: summary.model.n_layers }, (_, l) => [
    String(l),
    ...metrics.flatMap((m) =>
      lenses.map((lens) => {
        const s = find(lens, m);
        return `${fmt(s.mean[l]!)} [${fmt(s.lo[l]!)}, ${fmt(s.hi[l]!)}]`;
      }),
    ),
  ]);
  const kl = metrics.includes("kl") ? lenses.filter((l) => l !== "logit").map((l) => {
    const t = find(l, "kl");
    const g = find("logit", "kl");
    const below = t.mean.slice(0, -1).filter((v, i) => v < g.mean[i]!).length;
    return `${l} below the logit lens in KL at ${below}/${summary.model.n_layers - 1} layers (the last layer is the output itself for every lens)`;
  }) : [];
  return [
    `${summary.model.name}, ${summary.data.prompts} windows of ${summary.data.window ?? "?"} tokens from ${summary.data.file} (held out). KL(final ‖ lens) and cross-entropy against the next token, nats; mean [95 % bootstrap interval over windows].`,
    "",
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    "",
    ...kl.map((k) => `- ${k}`),
  ].join("\n");
}

async function evalCommand(o: TunedCliOptions, deps: TunedCliDeps): Promise<number> {
  if (!o.data) throw new UserError("tuned eval needs --data <heldout.txt> (text the lenses were not trained on)");
  if (!o.out) throw new UserError("tuned eval needs --out <folder>");
  if (!o.lens) throw new UserError("tuned eval needs --lens tuned:FILE (and optionally linear:FILE), compared with the logit lens");
  if (!fs.existsSync(o.data)) throw new UserError(`--data ${o.data} does not exist`);
  const window = windowOption(o);
  const limit = limitOption(o);
  const bootstrap = number(o.bootstrap, "bootstrap", 1000, (n) => Number.isInteger(n) && n >= 0 && n <= 1_000_000, "an integer from 0 to 1000000");
  const seed = number(o.seed, "seed", 0, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, "an integer from 0 to 2^32-1");
  const model = await deps.loadModel(o.model);
  const lenses: SweepSettings["lenses"] = [{ name: "logit" }];
  for (const spec of o.lens.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (spec === "logit") continue;
    if (spec.startsWith("tuned:")) lenses.push(tunedLensSpec(spec.slice(6), model));
    else if (spec.startsWith("linear:")) {
      const file = spec.slice(7);
      const lens = readLinearLens(file, model);
      lenses.push({ name: "linear", translator: translatorOf(lens, model.config.nLayers), file, sha256: lens.sha256 });
    } else throw new UserError(`unknown --lens '${spec}' (tuned:FILE, linear:FILE)`);
  }
  if (fs.existsSync(o.out) && !fs.statSync(o.out).isDirectory()) throw new UserError(`--out ${o.out} is a file; tuned eval writes a folder`);
  const data = loadSweepData(o.data, model.tokenizer, { window, limit });
  const outcome = await runSweep(model, { data, dataFile: o.data, window, metrics: ["kl", "ce"], lenses, positions: "all", unitSize: 8, bootstrap, seed, out: o.out, log: statusLine(o.quiet) });
  if (!outcome.complete) throw new UserError(`tuned eval stopped before every window was evaluated; rerun the same command to finish`);
  const table = evalTable(outcome.summary);
  writeFileAtomic(path.join(o.out, "table.md"), `${table}\n`);
  writeFileAtomic(path.join(o.out, "figure.png"), await svgToPng(fs.readFileSync(path.join(o.out, "figure.svg"), "utf8")));
  await deps.emit(`${table}\n\nwrote table.md, figure.svg, figure.png, summary.json and the Parquet rows (parts/) in ${o.out}`, undefined);
  return 0;
}
