/**
 * The lens as a JSON document (schema in docs/lens-json.md). Compact by design: top-k and summary
 * numbers per cell, never full-vocabulary logits; probabilities rounded to 4 significant digits.
 */
import type { LoadedModel } from "../engine/model.js";
import type { LensCell, LensResult } from "../lens/logit-lens.js";
import { hex, reassemble, renderToken } from "../tokens/render.js";

export interface JsonToken {
  id: number;
  /** Display text: whitespace visible, partial UTF-8 as ⟨F0 9F⟩. */
  text: string;
  /** Raw bytes, lowercase hex. */
  bytes: string;
}

export interface JsonTopEntry extends JsonToken {
  prob: number;
  logit: number;
}

function round(x: number, digits = 4): number {
  if (!Number.isFinite(x)) return x;
  return Number(x.toPrecision(digits));
}

export function jsonToken(model: LoadedModel, id: number): JsonToken {
  const bytes = model.tokenizer.tokenBytes(id);
  return { id, text: renderToken(bytes).text, bytes: hex(bytes) };
}

function topEntries(model: LoadedModel, cell: LensCell): JsonTopEntry[] {
  return cell.topIds.map((id, i) => ({ ...jsonToken(model, id), prob: round(Math.exp(cell.topLogprobs[i]!)), logit: round(cell.topLogits[i]!) }));
}

export function lensToJson(model: LoadedModel, prompt: string, ids: number[], result: LensResult): object {
  const cfg = model.config;
  const tokens = ids.map((id) => jsonToken(model, id));
  return {
    model: {
      name: model.info.name,
      architecture: cfg.architecture,
      n_layers: cfg.nLayers,
      hidden_size: cfg.hidden,
      vocab_size: cfg.vocabSize,
      source: model.info.source,
    },
    lens: {
      variant: result.variant,
      description:
        result.variant === "logit"
          ? "logit lens: final norm (statistics recomputed from each residual) then unembedding"
          : "raw unembedding of each residual, without the final norm",
    },
    prompt,
    text: reassemble(ids.map((id) => model.tokenizer.tokenBytes(id))).text,
    tokens,
    positions: result.positions,
    layers: result.readouts.map((r) => ({
      hook: r.hook,
      layer: r.layer,
      positions: r.cells.map((cell, i) => ({
        position: result.positions[i],
        top: topEntries(model, cell),
        entropy: round(cell.entropy),
        kl_to_final: round(cell.klToFinal),
      })),
    })),
    final: {
      positions: result.final.map((cell, i) => ({
        position: result.positions[i],
        top: topEntries(model, cell),
        entropy: round(cell.entropy),
      })),
    },
  };
}
