/**
 * The family contract. A family module (`src/architectures/<family>.ts`) is the one place that
 * knows everything about a family of models:
 * - how its config is read, from a Hugging Face config.json (`configFromHf`) or GGUF metadata
 *   (`configFromGguf`);
 * - its tensor names in both formats and the conversions llama.cpp applied to them (`ggufTensors`,
 *   `hfTensors`), all mapped to one set of names: transformers' names and layouts;
 * - which tensors it needs, with their shapes (`expectedTensors`), checked before anything runs;
 * - its forward pass (`forward`), written against the graph builder like plain PyTorch;
 * - how a residual becomes logits (`unembedding`): the lens applies it to every layer, and the
 *   forward pass ends with it (`finalLayer` in forward.ts), so it is written once.
 * The registry (index.ts) only lists families. See docs/adding-a-family.md.
 */
import type { GraphBuilder } from "../graph/builder.js";
import type { TensorRef } from "../formats/tensor-ref.js";
import type { TensorTransform, WeightEntry } from "../formats/weight-store.js";
import type { GgufMeta, HfConfig, ModelConfig } from "./config.js";
import type { ForwardInputs, ForwardOptions } from "./forward.js";
import type { WeightSource } from "./layers.js";

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

export interface Family<C extends ModelConfig = ModelConfig, N extends string = string> {
  /** Our name for it (`architecture` in ModelConfig and the JSON report). */
  readonly name: N;
  /** transformers `model_type` values it reads (config.json, or its `text_config`). */
  readonly hfModelTypes: readonly string[];
  /** GGUF `general.architecture` values it reads (llama.cpp's LLM_ARCH names). */
  readonly ggufArchitectures: readonly string[];

  configFromHf(c: HfConfig): C;
  configFromGguf(m: GgufMeta): C;
  /**
   * A Hugging Face checkpoint's tensors in our names and layouts. Default: every float tensor under
   * its own name (hf-model.ts already unwraps multimodal prefixes such as `language_model.`).
   */
  hfTensors?(tensors: TensorRef[], cfg: C): Map<string, WeightEntry>;
  /** The GGUF file's tensors in our names and layouts (llama.cpp's conversions undone). */
  ggufTensors(tensors: TensorRef[], cfg: C): Map<string, WeightEntry>;
  /** Every tensor the forward pass reads, with its shape in our layout. */
  expectedTensors(cfg: C): Map<string, number[]>;
  /** Hook points beyond the standard ones (forward.ts `standardHookNames`), in forward order. */
  hookNames?(cfg: C): string[];
  forward(g: GraphBuilder, cfg: C, w: WeightSource, inputs: ForwardInputs, opts: ForwardOptions): void;
  unembedding(cfg: C): Unembedding;
}

/**
 * GGUF tensor names to ours from two tables, as llama.cpp's llama-arch.cpp keeps them: whole-model
 * tensors by full name, per-block tensors (`blk.{l}.<key>.weight|bias`) by key.
 */
export function ggufRenamer(globals: Record<string, string>, blockPrefix: string, block: Record<string, string>): (gguf: string) => string | undefined {
  return (gguf) => {
    if (gguf in globals) return globals[gguf];
    const m = /^blk\.(\d+)\.(.+)\.(weight|bias)$/.exec(gguf);
    const mapped = m && block[m[2]!];
    return mapped ? `${blockPrefix}.${m[1]}.${mapped}.${m[3]}` : undefined;
  };
}

/** The weight entries of a GGUF file: every tensor `rename` knows, with the conversion `transform` names. */
export function ggufEntries(
  tensors: TensorRef[],
  rename: (gguf: string) => string | undefined,
  transform: (name: string) => TensorTransform | undefined = () => undefined,
): Map<string, WeightEntry> {
  const entries = new Map<string, WeightEntry>();
  for (const ref of tensors) {
    const name = rename(ref.name);
    if (name) entries.set(name, { ref, transform: transform(name) });
  }
  return entries;
}

/** A shape table helper for `expectedTensors`: `t(name, ...shape)`. */
export function shapeTable(): { m: Map<string, number[]>; t: (name: string, ...shape: number[]) => void } {
  const m = new Map<string, number[]>();
  return { m, t: (name, ...shape) => void m.set(name, shape) };
}
