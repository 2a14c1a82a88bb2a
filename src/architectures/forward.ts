/**
 * The contract between the runtime and the architecture modules: which graph inputs a forward
 * graph takes, which outputs it may give, and how hook points are named (TransformerLens names).
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { ModelConfig } from "./config.js";
import type { Unembedding } from "./family.js";
import { familyOf } from "./index.js";
import { finalNorm, unembed, type WeightSource } from "./layers.js";

export type LogitsOutput = "none" | "last" | "all";

export interface ForwardOptions {
  /** Hook points to expose as graph outputs, by TransformerLens name. */
  hooks: ReadonlySet<string>;
  /** Also output the model's own logits ("logits"): for every new position [T, vocab], or only the last [1, vocab]. */
  logits: LogitsOutput;
}

/** Graph inputs every decoder graph receives (created by `standardInputs`). */
export interface ForwardInputs {
  inputIds: Value; // int64 [T]
  positionIds: Value; // int64 [T]
  ropeCos: Value; // [T, headDim]
  ropeSin: Value;
  ropeCosLocal: Value; // [T, headDim], for sliding layers (same as global where the bases agree)
  ropeSinLocal: Value;
  maskFull: Value; // [T, P+T] additive
  maskSliding: Value;
  pastKey: Value[]; // per layer [nKv, P, headDim]
  pastValue: Value[];
}

export const HOOK_POINTS_PER_BLOCK = ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"] as const;

export function blockHook(layer: number, point: (typeof HOOK_POINTS_PER_BLOCK)[number]): string {
  return `blocks.${layer}.${point}`;
}

/** Each head's attention output before the output projection, [T, heads, headDim] (TransformerLens `blocks.{l}.attn.hook_z`). */
export function attnHookZ(layer: number): string {
  return `blocks.${layer}.attn.hook_z`;
}

/** The hook points of a decoder: embedding, five per block plus the heads' z, the final norm's output. */
export function standardHookNames(cfg: ModelConfig, extra: { afterEmbed?: string[]; perBlock?: (layer: number) => string[] } = {}): string[] {
  const names = ["hook_embed", ...(extra.afterEmbed ?? [])];
  for (let l = 0; l < cfg.nLayers; l++) {
    names.push(blockHook(l, "hook_resid_pre"), attnHookZ(l));
    for (const p of HOOK_POINTS_PER_BLOCK.slice(1)) names.push(blockHook(l, p));
    names.push(...(extra.perBlock?.(l) ?? []));
  }
  names.push("ln_final.hook_normalized");
  return names;
}

/** Every hook name a model exposes, in forward order (the family's own list where it has extras). */
export function allHookNames(cfg: ModelConfig): string[] {
  const family = familyOf(cfg.architecture);
  return family.hookNames ? family.hookNames(cfg) : standardHookNames(cfg);
}

export function standardInputs(g: GraphBuilder, cfg: ModelConfig): ForwardInputs {
  const d = cfg.headDim;
  const pastKey: Value[] = [];
  const pastValue: Value[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    pastKey.push(g.input(`past_key.${l}`, "float32", [cfg.nKvHeads, "past", d]));
    pastValue.push(g.input(`past_value.${l}`, "float32", [cfg.nKvHeads, "past", d]));
  }
  return {
    inputIds: g.input("input_ids", "int64", ["T"]),
    positionIds: g.input("position_ids", "int64", ["T"]),
    ropeCos: g.input("rope_cos", "float32", ["T", d]),
    ropeSin: g.input("rope_sin", "float32", ["T", d]),
    ropeCosLocal: g.input("rope_cos_local", "float32", ["T", d]),
    ropeSinLocal: g.input("rope_sin_local", "float32", ["T", d]),
    maskFull: g.input("mask_full", "float32", ["T", "total"]),
    maskSliding: g.input("mask_sliding", "float32", ["T", "total"]),
    pastKey,
    pastValue,
  };
}

/** Helper used by the architectures: outputs `value` under `name` when that hook was asked for. */
export function hookPoint(g: GraphBuilder, opts: ForwardOptions, name: string, value: Value): Value {
  if (opts.hooks.has(name)) g.output(value, name);
  return value;
}

/** The `hookZ` option of the attention core for layer `layer` (exposes `blocks.{l}.attn.hook_z`). */
export function hookZ(g: GraphBuilder, opts: ForwardOptions, layer: number): (z: Value) => Value {
  return (z) => hookPoint(g, opts, attnHookZ(layer), z);
}

/** The rows of the final normed residual that go through the unembedding, per `opts.logits`. */
export function logitRows(g: GraphBuilder, opts: ForwardOptions, normed: Value): Value {
  return opts.logits === "last" ? g.slice(normed, [-1], [Number.MAX_SAFE_INTEGER], [0]) : normed;
}

/**
 * The end of every forward pass: the final norm (hook `ln_final.hook_normalized`) and, when asked
 * for, the logits, both from the family's Unembedding description: the same path the lens applies
 * to every layer.
 */
export function finalLayer(g: GraphBuilder, opts: ForwardOptions, w: WeightSource, u: Unembedding, residual: Value): void {
  const normed = hookPoint(g, opts, "ln_final.hook_normalized", finalNorm(g, w, u, residual));
  // "last": one row per run (a decoding step, or a prompt's last position).
  if (opts.logits !== "none") g.output(unembed(g, w, u, logitRows(g, opts, normed), { fewRows: opts.logits === "last" }), "logits");
}

export type BuildForward = (g: GraphBuilder, cfg: ModelConfig, w: WeightSource, inputs: ForwardInputs, opts: ForwardOptions) => void;
