/**
 * The architecture registry: which module builds which family's forward graph, and how each family
 * turns a residual into logits (needed by the lens, which applies it to every layer).
 */
import type { Architecture, ModelConfig } from "./config.js";
import type { BuildForward } from "./forward.js";
import { buildLlama } from "./llama.js";
import { buildGemma } from "./gemma.js";
import { buildGpt2 } from "./gpt2.js";

export const FORWARD_BUILDERS: Record<Architecture, BuildForward> = {
  llama: buildLlama,
  mistral: buildLlama,
  qwen2: buildLlama,
  qwen3: buildLlama,
  gemma2: buildGemma,
  gemma3: buildGemma,
  gpt2: buildGpt2,
};

/** The model's own path from the last residual to logits: final norm, unembedding, soft-cap. */
export interface Unembedding {
  norm: "rms" | "rms_gemma" | "layernorm";
  normWeight: string;
  normBias?: string;
  eps: number;
  /** [vocab, hidden] matrix: the tied embedding or lm_head. */
  matrix: string;
  softcap?: number;
}

export function unembeddingOf(cfg: ModelConfig): Unembedding {
  if (cfg.architecture === "gpt2") {
    return {
      norm: "layernorm",
      normWeight: "transformer.ln_f.weight",
      normBias: "transformer.ln_f.bias",
      eps: cfg.normEps,
      matrix: cfg.tiedEmbeddings ? "transformer.wte.weight" : "lm_head.weight",
    };
  }
  const gemma = cfg.architecture === "gemma2" || cfg.architecture === "gemma3";
  return {
    norm: gemma ? "rms_gemma" : "rms",
    normWeight: "model.norm.weight",
    eps: cfg.normEps,
    matrix: cfg.tiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
    softcap: cfg.finalSoftcap,
  };
}
