/**
 * A Hugging Face model folder: config.json plus one or sharded safetensors files. Tensor names are
 * normalised to the ones the architecture modules ask for (some checkpoints drop GPT-2's
 * `transformer.` prefix; multimodal Gemma 3 nests the text model under `language_model`).
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import { configFromHf, type ModelConfig } from "../architectures/config.js";
import { readSafetensorsFolder } from "./safetensors.js";
import type { WeightEntry } from "./weight-store.js";

export function readHfConfig(dir: string): ModelConfig {
  const file = path.join(dir, "config.json");
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new UserError(`${dir}: no config.json (not a Hugging Face model folder)`);
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (!json || typeof json !== "object") throw new UserError(`${file}: not a JSON object`);
  return configFromHf(json, file);
}

function normaliseName(name: string, cfg: ModelConfig): string {
  if (name.startsWith("model.language_model.")) return `model.${name.slice("model.language_model.".length)}`;
  if (name.startsWith("language_model.model.")) return `model.${name.slice("language_model.model.".length)}`;
  if (name.startsWith("language_model.lm_head.")) return name.slice("language_model.".length);
  if (cfg.architecture === "gpt2" && !name.startsWith("transformer.") && !name.startsWith("lm_head.")) return `transformer.${name}`;
  return name;
}

export function weightsFromHfFolder(dir: string, cfg: ModelConfig): { entries: Map<string, WeightEntry>; files: string[] } {
  const refs = readSafetensorsFolder(dir);
  const entries = new Map<string, WeightEntry>();
  for (const ref of refs) {
    // GPT-2 checkpoints carry attention-mask buffers (`attn.bias`, `attn.masked_bias`): not weights.
    if (/\.attn\.(masked_)?bias$/.test(ref.name)) continue;
    // Integer buffers (position ids and the like) are not weights.
    if (!["F32", "F16", "BF16"].includes(ref.dtype)) continue;
    entries.set(normaliseName(ref.name, cfg), { ref });
  }
  return { entries, files: [...new Set(refs.map((r) => r.file))] };
}
