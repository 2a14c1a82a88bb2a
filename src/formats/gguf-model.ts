/**
 * A GGUF file seen as a Hugging Face model, through its family (src/architectures/<family>.ts):
 * the family reads its metadata keys into a ModelConfig and maps its tensors to transformers'
 * names, undoing the conversions llama.cpp applied (q/k row permutations, Gemma's 1 + w norms,
 * stacked experts ...).
 */
import { GgufMeta, type ModelConfig } from "../architectures/config.js";
import { familyOf, findFamily, type Family } from "../architectures/index.js";
import type { GgufFile } from "./gguf.js";
import type { TensorRef } from "./tensor-ref.js";
import type { WeightEntry } from "./weight-store.js";

export function ggufFamily(file: GgufFile): Family {
  return findFamily("gguf", file.metadata.get("general.architecture"), file.path);
}

export function configFromGguf(file: GgufFile): ModelConfig {
  return ggufFamily(file).configFromGguf(new GgufMeta(file.metadata, file.tensors, file.path));
}

/** The weight entries of a GGUF model, in transformers' names and layouts. */
export function weightsFromGguf(file: GgufFile, cfg: ModelConfig): Map<string, WeightEntry> {
  return familyOf(cfg.architecture).ggufTensors(file.tensors, cfg);
}

export function ggufDisplayName(file: GgufFile): string | undefined {
  const n = file.metadata.get("general.name");
  return typeof n === "string" ? n : undefined;
}

export type { TensorRef };
