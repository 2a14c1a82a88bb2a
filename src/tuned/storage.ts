/**
 * Tuned lens files: safetensors in the linear lens's layout (src/sweep/linear.ts), so the sweep
 * and `lens` apply both the same way: `layers.{l}.weight` [hidden, hidden] as [out, in] and
 * `layers.{l}.bias` [hidden], F32, l = 0..L-2, holding the whole affine map y = weight @ x + bias
 * (identity included: weight = I + A^T of tuned-lens's h + A h + b parametrisation).
 *
 * `__metadata__` (strings, as safetensors requires): format `logit-lens/tuned-lens@1`, the model's
 * name, architecture, shape and sha256 of its files, and every training setting (data file and
 * sha256, window, tokens, steps, optimiser, seed), plus the training KL per layer at the first and
 * the last step. A file made for another model is refused: its translators are meaningless there.
 */
import fs from "node:fs";
import path from "node:path";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { modelHash, readAffineLens, saveLinearLens, type LinearLens } from "../sweep/linear.js";
import type { SweepData } from "../sweep/data.js";
import { baseLr, warmupSteps } from "./optimizer.js";
import type { TrainedTranslators, TrainSettings } from "./train.js";

export const TUNED_FORMAT = "logit-lens/tuned-lens@1";

/** The trained translators as a lens file's contents (full affine maps, [out, in]). */
export function tunedLensOf(model: LoadedModel, t: TrainedTranslators, s: TrainSettings, dataFile: string, data: SweepData, window: number): LinearLens {
  const H = t.hidden;
  const R = t.nLayers - 1;
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (let r = 0; r < R; r++) {
    const w = new Float32Array(H * H);
    const a = t.weight.subarray(r * H * H, (r + 1) * H * H); // [in, out]
    for (let o = 0; o < H; o++) {
      for (let i = 0; i < H; i++) w[o * H + i] = a[i * H + o]!;
      w[o * H + o] += 1;
    }
    weights.push(w);
    biases.push(t.bias.slice(r * H, (r + 1) * H));
  }
  const o = s.optimizer;
  const cfg = model.config;
  return {
    hidden: H,
    nLayers: t.nLayers,
    weights,
    biases,
    metadata: {
      format: TUNED_FORMAT,
      method: "tuned lens (Belrose et al. 2023): per layer h -> h + A h + b, A and b zero at the start, trained to minimise KL(final output || lens output) through the final norm and unembedding",
      model_name: model.info.name,
      model_sha256: modelHash(model),
      architecture: cfg.architecture,
      n_layers: String(cfg.nLayers),
      hidden_size: String(H),
      vocab_size: String(cfg.vocabSize),
      layers: String(R),
      data_file: path.basename(dataFile),
      data_sha256: data.sha256,
      data_prompts: String(data.count),
      window: data.kind === "text" ? String(window) : "",
      tokens: String(t.tokens),
      steps: String(o.steps),
      windows_per_step: String(s.windowsPerStep),
      optimizer: o.kind === "sgd" ? "sgd (nesterov)" : "adam",
      lr: String(Number(baseLr(o).toPrecision(6))),
      lr_scale: String(o.lrScale),
      lr_schedule: `linear warmup ${warmupSteps(o)} steps, then linear decay to 0`,
      momentum: String(o.momentum),
      weight_decay: String(o.weightDecay),
      clip_grad_norm: String(o.clipNorm),
      seed: String(s.seed),
      train_seconds: t.seconds.toFixed(1),
      train_kl_first_step: JSON.stringify(t.firstLoss.map((v) => Number(v.toFixed(4)))),
      train_kl_last_step: JSON.stringify(t.lastLoss.map((v) => Number(v.toFixed(4)))),
      weight_layout: "[out, in]: y = weight @ x + bias (the identity included)",
    },
  };
}

export async function saveTunedLens(file: string, lens: LinearLens): Promise<void> {
  await saveLinearLens(file, lens);
}

/** Reads a tuned lens and refuses it unless it was trained on exactly this model's files. */
export function readTunedLens(file: string, model: LoadedModel): LinearLens {
  if (!fs.existsSync(file)) throw new UserError(`tuned lens ${file} does not exist (train one with 'logit-lens tuned train')`);
  const lens = readAffineLens(file, TUNED_FORMAT, "a tuned lens", model);
  const want = modelHash(model);
  if (lens.metadata["model_sha256"] !== want) {
    throw new UserError(
      `${file} was trained on ${lens.metadata["model_name"]} (sha256 ${String(lens.metadata["model_sha256"]).slice(0, 12)}…), not on this model (${model.info.name}, sha256 ${want.slice(0, 12)}…); train one for this model with 'logit-lens tuned train'`,
    );
  }
  return lens;
}
