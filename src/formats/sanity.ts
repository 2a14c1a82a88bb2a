/**
 * Sanity checks on the numbers a model file declares, before anything is sized by them.
 *
 * A header is untrusted input: `num_hidden_layers: 1e9` or a GGUF `block_count` of 2^32-1 would
 * have the config code build per-layer arrays until V8 aborts, and a negative norm epsilon or a
 * zero rotary base turns every activation into NaN. Each count is checked against plain limits no
 * real model comes near (and, where the tensors are at hand, against the tensors actually present);
 * each float that must be positive is checked to be. Every refusal is one UserError line naming
 * the file, the key and what would be acceptable.
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import type { ModelConfig } from "../architectures/config.js";
import { readSafetensorsFolder } from "./safetensors.js";

/** Upper bounds far above any released model (Llama 3.1 405B: 126 layers, hidden 16384, 128 heads, FFN 53248). */
export const CONFIG_LIMITS = {
  layers: 1024,
  hidden: 131_072,
  heads: 4096,
  headDim: 8192,
  intermediate: 1_048_576,
  vocab: 16_777_216,
  context: 1 << 30,
} as const;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** A count: a positive integer (or >= `min`) no larger than `max`. */
function checkCount(where: string, key: string, v: unknown, max: number, min = 1): void {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    if (v === 0 && min >= 1 && /layer|block/.test(key)) {
      throw new UserError(`${where}: "${key}" is 0: a model needs at least one layer`);
    }
    throw new UserError(`${where}: "${key}" is ${show(v)}, not a plausible value (an integer from ${min} to ${max}); the file is corrupt`);
  }
}

/** A float that must be finite and > 0 (norm epsilons, rotary bases, scaling factors). */
function checkPositive(where: string, key: string, v: unknown, what: string): void {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new UserError(`${where}: "${key}" is ${show(v)}, but ${what} must be a finite number above 0; every activation would come out NaN or meaningless`);
  }
}

/** Optional keys: checked only when present and not null (transformers writes null for "unset"). */
function present(obj: Json, key: string): boolean {
  return obj[key] !== undefined && obj[key] !== null;
}

function checkRopeObject(where: string, key: string, v: unknown): void {
  if (!isObject(v)) throw new UserError(`${where}: "${key}" is ${show(v)}, not an object of rotary settings`);
  if (present(v, "rope_type") && typeof v["rope_type"] !== "string") {
    throw new UserError(`${where}: "${key}.rope_type" is ${show(v["rope_type"])}, not a name`);
  }
  if (present(v, "type") && typeof v["type"] !== "string") throw new UserError(`${where}: "${key}.type" is ${show(v["type"])}, not a name`);
  if (present(v, "rope_theta")) checkPositive(where, `${key}.rope_theta`, v["rope_theta"], "the rotary base");
  for (const f of ["factor", "low_freq_factor", "high_freq_factor"]) {
    if (present(v, f)) checkPositive(where, `${key}.${f}`, v[f], "a rotary scaling factor");
  }
  if (present(v, "original_max_position_embeddings")) {
    checkCount(where, `${key}.original_max_position_embeddings`, v["original_max_position_embeddings"], CONFIG_LIMITS.context);
  }
}

/**
 * Checks a parsed transformers config.json (the text config of multimodal models) before any code
 * sizes anything by it. `where` names the file in errors.
 */
export function checkHfConfigJson(json: unknown, where: string): void {
  if (!isObject(json)) throw new UserError(`${where}: not a JSON object`);
  const text = json["text_config"];
  if (text !== undefined && text !== null && !isObject(text)) throw new UserError(`${where}: "text_config" is ${show(text)}, not an object`);
  const c: Json = isObject(text) ? text : json;
  const counts: [string, number, number][] = [
    ["num_hidden_layers", CONFIG_LIMITS.layers, 1],
    ["n_layer", CONFIG_LIMITS.layers, 1],
    ["hidden_size", CONFIG_LIMITS.hidden, 1],
    ["n_embd", CONFIG_LIMITS.hidden, 1],
    ["num_attention_heads", CONFIG_LIMITS.heads, 1],
    ["n_head", CONFIG_LIMITS.heads, 1],
    ["num_key_value_heads", CONFIG_LIMITS.heads, 1],
    ["head_dim", CONFIG_LIMITS.headDim, 1],
    ["intermediate_size", CONFIG_LIMITS.intermediate, 1],
    ["n_inner", CONFIG_LIMITS.intermediate, 1],
    ["vocab_size", CONFIG_LIMITS.vocab, 1],
    ["max_position_embeddings", CONFIG_LIMITS.context, 1],
    ["n_positions", CONFIG_LIMITS.context, 1],
    ["sliding_window", CONFIG_LIMITS.context, 0],
    ["sliding_window_pattern", CONFIG_LIMITS.layers, 1],
    ["max_window_layers", CONFIG_LIMITS.layers, 0],
  ];
  for (const [key, max, min] of counts) if (present(c, key)) checkCount(where, key, c[key], max, min);
  const heads = c["num_attention_heads"];
  const kv = c["num_key_value_heads"];
  if (typeof heads === "number" && typeof kv === "number" && heads % kv !== 0) {
    throw new UserError(`${where}: "num_attention_heads" (${heads}) is not a multiple of "num_key_value_heads" (${kv})`);
  }
  for (const key of ["rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps"]) {
    if (present(c, key)) checkPositive(where, key, c[key], "the norm epsilon");
  }
  for (const key of ["rope_theta", "rope_local_base_freq"]) if (present(c, key)) checkPositive(where, key, c[key], "the rotary base");
  for (const key of ["query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping"]) {
    if (present(c, key)) checkPositive(where, key, c[key], `"${key}"`);
  }
  if (present(c, "rope_scaling")) checkRopeObject(where, "rope_scaling", c["rope_scaling"]);
  if (present(c, "rope_parameters")) {
    const p = c["rope_parameters"];
    if (!isObject(p)) throw new UserError(`${where}: "rope_parameters" is ${show(p)}, not an object of rotary settings`);
    if ("full_attention" in p || "sliding_attention" in p) {
      // transformers 5, per layer type: { full_attention: {...}, sliding_attention: {...} }.
      if (!("full_attention" in p)) throw new UserError(`${where}: "rope_parameters" has sliding_attention settings but no full_attention ones`);
      checkRopeObject(where, "rope_parameters.full_attention", p["full_attention"]);
      if (present(p, "sliding_attention")) checkRopeObject(where, "rope_parameters.sliding_attention", p["sliding_attention"]);
    } else checkRopeObject(where, "rope_parameters", p);
  }
  const layers = c["num_hidden_layers"] ?? c["n_layer"];
  const types = c["layer_types"];
  if (types !== undefined && types !== null) {
    if (!Array.isArray(types) || types.length > CONFIG_LIMITS.layers || !types.every((t) => typeof t === "string")) {
      throw new UserError(`${where}: "layer_types" is not a list of layer type names`);
    }
    if (typeof layers === "number" && types.length !== layers) {
      throw new UserError(`${where}: "layer_types" lists ${types.length} layers but "num_hidden_layers" is ${layers}`);
    }
  }
}

/** Number of transformer blocks the tensor names hold (`model.layers.N.`, GPT-2's `h.N.`), 0 when none. */
export function blocksInTensorNames(names: Iterable<string>): number {
  let max = -1;
  const re = /^(?:model\.language_model\.|language_model\.model\.|model\.|transformer\.)?(?:layers|h)\.(\d+)\./;
  for (const n of names) {
    const m = re.exec(n);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max + 1;
}

/**
 * Checks a Hugging Face model folder before it is opened: config.json's numbers (above), and its
 * layer count against the layers the safetensors headers actually hold (headers only, no data).
 */
export function checkHfFolder(dir: string): void {
  const file = path.join(dir, "config.json");
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return; // a missing or invalid config.json gets its own error from the loader
  }
  checkHfConfigJson(json, file);
  const c = isObject(json) && isObject(json["text_config"]) ? json["text_config"] : (json as Json);
  const layers = c["num_hidden_layers"] ?? c["n_layer"];
  if (typeof layers !== "number") return;
  let names: string[];
  try {
    names = readSafetensorsFolder(dir).map((t) => t.name);
  } catch {
    return; // missing or broken weights get their own error from the loader
  }
  const held = blocksInTensorNames(names);
  if (held < layers) {
    throw new UserError(`${file}: "num_hidden_layers" is ${layers} but the safetensors weights hold ${held} layer${held === 1 ? "" : "s"}; the config does not belong to these weights`);
  }
}

/**
 * Checks a built ModelConfig, whatever file it came from: the last line before graphs are built.
 * (GGUF metadata is checked earlier, in gguf.ts; config.json by checkHfConfigJson.)
 */
export function checkModelConfig(cfg: ModelConfig, where: string): void {
  checkCount(where, "layers", cfg.nLayers, CONFIG_LIMITS.layers);
  checkCount(where, "hidden size", cfg.hidden, CONFIG_LIMITS.hidden);
  checkCount(where, "attention heads", cfg.nHeads, CONFIG_LIMITS.heads);
  checkCount(where, "key/value heads", cfg.nKvHeads, CONFIG_LIMITS.heads);
  checkCount(where, "head dimension", cfg.headDim, CONFIG_LIMITS.headDim);
  checkCount(where, "MLP size", cfg.intermediate, CONFIG_LIMITS.intermediate);
  checkCount(where, "vocabulary size", cfg.vocabSize, CONFIG_LIMITS.vocab);
  checkCount(where, "context length", cfg.maxPositions, CONFIG_LIMITS.context);
  checkPositive(where, "norm epsilon", cfg.normEps, "the norm epsilon");
  if (cfg.ropeTheta !== undefined) checkPositive(where, "rotary base", cfg.ropeTheta, "the rotary base");
  if (cfg.ropeLocalTheta !== undefined) checkPositive(where, "local rotary base", cfg.ropeLocalTheta, "the rotary base");
  if (cfg.ropeLinearFactor !== undefined) checkPositive(where, "rotary scaling factor", cfg.ropeLinearFactor, "a rotary scaling factor");
  if (cfg.queryPreAttnScalar !== undefined) checkPositive(where, "query scale", cfg.queryPreAttnScalar, "the query scale");
  if (cfg.attnSoftcap !== undefined) checkPositive(where, "attention soft-cap", cfg.attnSoftcap, "the attention soft-cap");
  if (cfg.finalSoftcap !== undefined) checkPositive(where, "final soft-cap", cfg.finalSoftcap, "the final soft-cap");
  if (cfg.nHeads % cfg.nKvHeads !== 0) {
    throw new UserError(`${where}: ${cfg.nHeads} attention heads are not a multiple of ${cfg.nKvHeads} key/value heads`);
  }
}

/** Token ids the tokenizer can produce must exist as rows of the model's embedding and unembedding. */
export function checkTokenizerFitsModel(tokenizer: { vocabSize: number; bosId?: number; eosIds: readonly number[] }, cfg: ModelConfig, where: string): void {
  if (tokenizer.vocabSize > cfg.vocabSize) {
    throw new UserError(`${where}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's embedding has only ${cfg.vocabSize} rows; the tokenizer does not belong to this model`);
  }
  for (const id of [tokenizer.bosId, ...tokenizer.eosIds]) {
    if (id !== undefined && (id < 0 || id >= cfg.vocabSize)) {
      throw new UserError(`${where}: the tokenizer's special token id ${id} is outside the model's ${cfg.vocabSize} embedding rows`);
    }
  }
}
