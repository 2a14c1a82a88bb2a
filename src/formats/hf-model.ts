/**
 * A Hugging Face model folder: config.json plus one or sharded safetensors files, read through the
 * model's family (src/architectures/<family>.ts), which knows its config keys and tensor names.
 * Multimodal checkpoints are unwrapped here for every family: their text model's config sits under
 * `text_config` and its tensors under `language_model`.
 */
import { checkHfConfigJson } from "./sanity.js";
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import { HfConfig, type ModelConfig } from "../architectures/config.js";
import { familyOf, findFamily } from "../architectures/index.js";
import { readSafetensorsFolder } from "./safetensors.js";
import type { WeightEntry } from "./weight-store.js";

/** Reads a transformers config.json (already parsed). */
export function configFromHf(json: Record<string, unknown>, where = "config.json"): ModelConfig {
  const text = (json["text_config"] as Record<string, unknown> | undefined) ?? json;
  const family = findFamily("hf", text["model_type"] ?? json["model_type"], where);
  return family.configFromHf(new HfConfig(text, where));
}

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
  checkHfConfigJson(json, file); // absurd sizes and floats, before anything is allocated from them
  return configFromHf(json, file);
}

/** The text model's name for a tensor of a multimodal checkpoint (Gemma 3 and the like). */
function unwrapMultimodal(name: string): string {
  if (name.startsWith("model.language_model.")) return `model.${name.slice("model.language_model.".length)}`;
  if (name.startsWith("language_model.model.")) return `model.${name.slice("language_model.model.".length)}`;
  if (name.startsWith("language_model.lm_head.")) return name.slice("language_model.".length);
  return name;
}

export function weightsFromHfFolder(dir: string, cfg: ModelConfig): { entries: Map<string, WeightEntry>; files: string[] } {
  const refs = readSafetensorsFolder(dir);
  // Integer buffers (position ids and the like) are not weights.
  const floats = refs.filter((r) => ["F32", "F16", "BF16"].includes(r.dtype)).map((r) => ({ ...r, name: unwrapMultimodal(r.name) }));
  const family = familyOf(cfg.architecture);
  const entries = family.hfTensors ? family.hfTensors(floats, cfg) : new Map(floats.map((ref) => [ref.name, { ref }]));
  return { entries, files: [...new Set(refs.map((r) => r.file))] };
}
