/**
 * The architecture registry: which module builds which family's forward graph, and how each family
 * turns a residual into logits (needed by the lens, which applies it to every layer).
 */
import { UserError } from "../errors.js";
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

/**
 * The tensors a model of this configuration needs, with their shapes (transformers' names and
 * layouts). Checked before anything runs, so a file that lies about a shape is a clear error
 * rather than a failure deep inside onnxruntime.
 */
export function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  const { hidden: h, nHeads, nKvHeads, headDim: d, intermediate: ff, vocabSize: V } = cfg;
  const m = new Map<string, number[]>();
  if (cfg.architecture === "gpt2") {
    m.set("transformer.wte.weight", [V, h]);
    m.set("transformer.wpe.weight", [cfg.maxPositions, h]);
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = `transformer.h.${l}`;
      for (const n of ["ln_1", "ln_2"]) { m.set(`${p}.${n}.weight`, [h]); m.set(`${p}.${n}.bias`, [h]); }
      m.set(`${p}.attn.c_attn.weight`, [h, 3 * h]); m.set(`${p}.attn.c_attn.bias`, [3 * h]);
      m.set(`${p}.attn.c_proj.weight`, [h, h]); m.set(`${p}.attn.c_proj.bias`, [h]);
      m.set(`${p}.mlp.c_fc.weight`, [h, ff]); m.set(`${p}.mlp.c_fc.bias`, [ff]);
      m.set(`${p}.mlp.c_proj.weight`, [ff, h]); m.set(`${p}.mlp.c_proj.bias`, [h]);
    }
    m.set("transformer.ln_f.weight", [h]);
    m.set("transformer.ln_f.bias", [h]);
  } else {
    const gemma = cfg.architecture === "gemma2" || cfg.architecture === "gemma3";
    m.set("model.embed_tokens.weight", [V, h]);
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = `model.layers.${l}`;
      m.set(`${p}.input_layernorm.weight`, [h]);
      m.set(`${p}.post_attention_layernorm.weight`, [h]);
      if (gemma) { m.set(`${p}.pre_feedforward_layernorm.weight`, [h]); m.set(`${p}.post_feedforward_layernorm.weight`, [h]); }
      m.set(`${p}.self_attn.q_proj.weight`, [nHeads * d, h]);
      m.set(`${p}.self_attn.k_proj.weight`, [nKvHeads * d, h]);
      m.set(`${p}.self_attn.v_proj.weight`, [nKvHeads * d, h]);
      m.set(`${p}.self_attn.o_proj.weight`, [h, nHeads * d]);
      if (cfg.attentionBias) {
        m.set(`${p}.self_attn.q_proj.bias`, [nHeads * d]);
        m.set(`${p}.self_attn.k_proj.bias`, [nKvHeads * d]);
        m.set(`${p}.self_attn.v_proj.bias`, [nKvHeads * d]);
      }
      if (cfg.qkNorm) { m.set(`${p}.self_attn.q_norm.weight`, [d]); m.set(`${p}.self_attn.k_norm.weight`, [d]); }
      m.set(`${p}.mlp.gate_proj.weight`, [ff, h]);
      m.set(`${p}.mlp.up_proj.weight`, [ff, h]);
      m.set(`${p}.mlp.down_proj.weight`, [h, ff]);
    }
    m.set("model.norm.weight", [h]);
  }
  if (!cfg.tiedEmbeddings) m.set("lm_head.weight", [V, h]);
  return m;
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
