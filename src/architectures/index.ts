/**
 * The registry: the families logit-lens runs. Everything about a family lives in its own module
 * (see family.ts for the contract); this file only lists them.
 */
import { UserError } from "../errors.js";
import type { ModelConfig } from "./config.js";
import type { Family, Unembedding } from "./family.js";
import type { BuildForward } from "./forward.js";
import { gemma2, gemma3 } from "./gemma.js";
import { gpt2 } from "./gpt2.js";
import { llama, mistral, qwen2, qwen3 } from "./llama.js";
import { olmo2 } from "./olmo2.js";
import { phi3 } from "./phi3.js";
import { qwen3moe } from "./qwen3moe.js";

export const FAMILIES = [llama, mistral, qwen2, qwen3, gemma2, gemma3, gpt2, olmo2, phi3, qwen3moe] as const;

export type Architecture = (typeof FAMILIES)[number]["name"];
export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = FAMILIES.map((f) => f.name);
export type { Family, Unembedding } from "./family.js";

function supported(): string {
  return `logit-lens supports ${SUPPORTED_ARCHITECTURES.join(", ")}`;
}

/** The family of a transformers `model_type` or a GGUF `general.architecture`, or a one-line refusal. */
export function findFamily(kind: "hf" | "gguf", type: unknown, where: string): Family {
  const t = String(type ?? "");
  if (!t) throw new UserError(`${where}: the file does not say which architecture it is (no ${kind === "hf" ? "model_type" : "general.architecture"}); ${supported()}`);
  const family = FAMILIES.find((f) => (kind === "hf" ? f.hfModelTypes : f.ggufArchitectures).includes(t)) as Family | undefined;
  if (!family) throw new UserError(`${where}: unsupported architecture '${t}'; ${supported()}`);
  return family;
}

export function familyOf(arch: Architecture | string): Family {
  const family = FAMILIES.find((f) => f.name === arch) as Family | undefined;
  if (!family) throw new UserError(`unsupported architecture '${arch}'; ${supported()}`);
  return family;
}

/** Forward-graph builders by architecture (what the engine calls). */
export const FORWARD_BUILDERS = Object.fromEntries(FAMILIES.map((f) => [f.name, (f as Family).forward.bind(f)])) as Record<Architecture, BuildForward>;

/** How this model turns a residual into logits (the lens applies it to every layer). */
export function unembeddingOf(cfg: ModelConfig): Unembedding {
  return familyOf(cfg.architecture).unembedding(cfg);
}

export function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  return familyOf(cfg.architecture).expectedTensors(cfg);
}

/** Throws a one-line UserError for the first missing or mis-shaped tensor. */
export function checkTensors(cfg: ModelConfig, shapes: Map<string, { shape: number[]; source: string }>, where: string): void {
  for (const [name, want] of expectedTensors(cfg)) {
    const got = shapes.get(name);
    if (!got) throw new UserError(`${where}: missing tensor '${name}' needed by this ${cfg.architecture} model`);
    if (got.shape.length !== want.length || got.shape.some((x, i) => x !== want[i])) {
      throw new UserError(`${where}: tensor ${got.source} has shape [${got.shape.join(", ")}], expected [${want.join(", ")}] for this ${cfg.architecture} model`);
    }
  }
}
