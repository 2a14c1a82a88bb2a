/**
 * Training the tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers
 * with the Tuned Lens"): for every block l < L-1 an affine translator h -> h + A_l h + b_l,
 * identity at the start (A, b = 0), trained to minimise KL(final output || lens output of the
 * translated residual) through the model's own final norm and unembedding, over a text corpus.
 * The recipe is tuned-lens 0.2.0's train_loop: the translators of all layers step together, the
 * loss of each layer is its KL averaged over the step's tokens (every position, BOS included),
 * the gradient is clipped to global norm 1, SGD with Nesterov momentum (optimizer.ts).
 *
 * One step: `windowsPerStep` windows of the corpus (in a seeded shuffled order, cycling) run
 * through the model once (forward.ts) for every block's hook_resid_post; the final residual gives
 * the target distribution; graph.ts gives each layer's loss and gradient, in chunks of layers and
 * tokens sized to a memory budget (the [tokens, vocab] products dominate: Gemma's vocabulary is
 * 262k).
 */
import type ort from "onnxruntime-node";
import { blockHook } from "../architectures/forward.js";
import { unembeddingOf } from "../architectures/index.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { mulberry32 } from "../lens/sampling.js";
import type { SweepData } from "../sweep/data.js";
import { buildStepGraph, buildTargetGraph } from "./graph.js";
import { Optimizer, type OptimizerSettings } from "./optimizer.js";

/**
 * Bytes the [layers, tokens, vocab] intermediates of one step call may take: z and softmax z
 * (plus a little), or about eight such tensors with a softcap.
 */
const CHUNK_BUDGET_BYTES = 384 * 1024 * 1024;

export interface TrainSettings {
  optimizer: OptimizerSettings;
  /** Windows (prompts) of the data per step. */
  windowsPerStep: number;
  seed: number;
  /** Progress lines; null = quiet. */
  log: ((line: string, final: boolean) => void) | null;
}

export interface TrainedTranslators {
  hidden: number;
  nLayers: number;
  /** Translators of layers 0..L-2 as tuned-lens's residual part: A [R, H, H] as [in, out], b [R, H]. */
  weight: Float32Array;
  bias: Float32Array;
  /** Mean training KL (nats) per step, averaged over layers, before that step's update. */
  lossHistory: number[];
  /** Per layer: the training KL of the first and of the last step. */
  firstLoss: number[];
  lastLoss: number[];
  tokens: number;
  seconds: number;
}

/** The gradient for a batch: its loss per layer and dA, db (graph.ts), over chunks of layers and tokens. */
export class TunedLensGradient {
  private target: Promise<ort.InferenceSession> | undefined;
  private step: Promise<ort.InferenceSession> | undefined;
  readonly readouts: string[];

  constructor(readonly model: LoadedModel) {
    this.readouts = Array.from({ length: model.config.nLayers }, (_, l) => blockHook(l, "hook_resid_post"));
  }

  private sessions(): [Promise<ort.InferenceSession>, Promise<ort.InferenceSession>] {
    const cfg = this.model.config;
    const u = unembeddingOf(cfg);
    const w = (g: Parameters<LoadedModel["lensWeightsFor"]>[0]) => this.model.lensWeightsFor(g);
    this.target ??= createSession(buildTargetGraph(w, u, cfg.hidden), this.model.store.dir, this.model.lensTuning());
    this.step ??= createSession(buildStepGraph(w, u, cfg.hidden), this.model.store.dir, this.model.lensTuning());
    return [this.target, this.step];
  }

  /** Residuals of every block for a batch of token windows: [L][N * H], N = total tokens. */
  async residuals(windows: number[][]): Promise<{ resid: Float32Array[]; tokens: number }> {
    const H = this.model.config.hidden;
    const L = this.readouts.length;
    const forward = await this.model.forward(this.readouts, "none");
    const N = windows.reduce((a, w) => a + w.length, 0);
    const resid = Array.from({ length: L }, () => new Float32Array(N * H));
    let at = 0;
    for (const ids of windows) {
      const fwd = await forward.run(ids);
      this.readouts.forEach((hook, l) => resid[l]!.set(fwd.hooks.get(hook)!.subarray(0, ids.length * H), at * H));
      at += ids.length;
    }
    return { resid, tokens: N };
  }

  /**
   * Loss per layer (mean KL over the N tokens) and its gradient for translators A [R, H, H]
   * ([in, out]), b [R, H] at the residuals `resid` ([R + 1][N * H]: the R layers', then the
   * final one; all blocks' from `residuals`, R = L - 1).
   */
  async lossAndGradient(resid: Float32Array[], tokens: number, weight: Float32Array, bias: Float32Array): Promise<{ loss: number[]; gradWeight: Float32Array; gradBias: Float32Array }> {
    const cfg = this.model.config;
    const H = cfg.hidden;
    const V = cfg.vocabSize;
    const R = resid.length - 1;
    const [targetSession, stepSession] = await Promise.all(this.sessions());
    const bytesPerLogit = unembeddingOf(cfg).softcap ? 32 : 12;
    const tokenChunk = Math.max(1, Math.min(tokens, Math.floor(CHUNK_BUDGET_BYTES / (V * bytesPerLogit))));
    const layerChunk = Math.max(1, Math.min(R, Math.floor(CHUNK_BUDGET_BYTES / (tokenChunk * V * bytesPerLogit))));
    const loss = new Array<number>(R).fill(0);
    const gradWeight = new Float32Array(R * H * H);
    const gradBias = new Float32Array(R * H);
    const scale = new runtime.Tensor("float32", Float32Array.from([1 / tokens]), [1]);
    const lensFeeds = this.model.lensFeeds();
    for (let t0 = 0; t0 < tokens; t0 += tokenChunk) {
      const n = Math.min(tokenChunk, tokens - t0);
      const final = resid[R]!.subarray(t0 * H, (t0 + n) * H);
      const target = await runSession(targetSession, { final: new runtime.Tensor("float32", final.slice(), [n, H]), ...lensFeeds }, "tuned lens target graph");
      const targetFeeds: Record<string, ort.Tensor> = { target_pu: target["target_pu"]!, target_neg_entropy: target["target_neg_entropy"]! };
      if (target["target_logp"]) targetFeeds["target_logp"] = target["target_logp"];
      for (let r0 = 0; r0 < R; r0 += layerChunk) {
        const rc = Math.min(layerChunk, R - r0);
        const h = new Float32Array(rc * n * H);
        for (let r = 0; r < rc; r++) h.set(resid[r0 + r]!.subarray(t0 * H, (t0 + n) * H), r * n * H);
        const o = await runSession(
          stepSession,
          {
            resid: new runtime.Tensor("float32", h, [rc, n, H]),
            weight: new runtime.Tensor("float32", weight.subarray(r0 * H * H, (r0 + rc) * H * H), [rc, H, H]),
            bias: new runtime.Tensor("float32", bias.subarray(r0 * H, (r0 + rc) * H), [rc, H]),
            ...targetFeeds,
            scale,
            ...lensFeeds,
          },
          "tuned lens training step",
        );
        const l = o["loss"]!.data as Float32Array;
        const gw = o["grad_weight"]!.data as Float32Array;
        const gb = o["grad_bias"]!.data as Float32Array;
        for (let r = 0; r < rc; r++) loss[r0 + r] += l[r]!;
        const offW = r0 * H * H;
        for (let k = 0; k < gw.length; k++) gradWeight[offW + k] += gw[k]!;
        const offB = r0 * H;
        for (let k = 0; k < gb.length; k++) gradBias[offB + k] += gb[k]!;
      }
    }
    return { loss, gradWeight, gradBias };
  }
}

/**
 * Which windows each step reads: the data in a seeded shuffled order, reshuffled (seed + pass)
 * for every pass over it, as a data loader does each epoch. [step][k] = prompt index.
 */
export function stepWindows(count: number, seed: number, steps: number, windowsPerStep: number): number[][] {
  let order = shuffled(count, seed);
  let cursor = 0;
  const out: number[][] = [];
  for (let step = 0; step < steps; step++) {
    const batch: number[] = [];
    for (let k = 0; k < windowsPerStep; k++) {
      batch.push(order[cursor % count]!);
      cursor++;
      if (cursor % count === 0) order = shuffled(count, seed + cursor / count);
    }
    out.push(batch);
  }
  return out;
}

/** A seeded permutation of 0..n-1 (Fisher-Yates on the project's mulberry32). */
function shuffled(n: number, seed: number): number[] {
  const rand = mulberry32(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

export async function trainTunedLens(model: LoadedModel, data: SweepData, s: TrainSettings): Promise<TrainedTranslators> {
  const cfg = model.config;
  const H = cfg.hidden;
  const L = cfg.nLayers;
  const R = L - 1;
  if (R < 1) throw new UserError("a tuned lens needs a model with at least 2 layers");
  const grad = new TunedLensGradient(model);
  // One flat parameter vector: [A (R x H x H), b (R x H)], so the optimiser and the clip see all layers.
  const params = new Float32Array(R * H * H + R * H);
  const weight = params.subarray(0, R * H * H);
  const bias = params.subarray(R * H * H);
  const flatGrad = new Float32Array(params.length);
  const opt = new Optimizer(s.optimizer, params.length);
  const schedule = stepWindows(data.count, s.seed, s.optimizer.steps, s.windowsPerStep);
  const lossHistory: number[] = [];
  let firstLoss: number[] = [];
  let lastLoss: number[] = [];
  let tokens = 0;
  const started = Date.now();
  const steps = s.optimizer.steps;
  for (let step = 0; step < steps; step++) {
    const windows = schedule[step]!.map((i) => data.prompt(i).ids);
    const batch = await grad.residuals(windows);
    const g = await grad.lossAndGradient(batch.resid, batch.tokens, weight, bias);
    flatGrad.set(g.gradWeight, 0);
    flatGrad.set(g.gradBias, R * H * H);
    for (const v of g.loss) if (!Number.isFinite(v)) throw new UserError(`tuned lens training diverged at step ${step + 1} (loss ${v}); try a smaller --lr-scale`);
    const { gradNorm, lr } = opt.step(params, flatGrad);
    const mean = g.loss.reduce((a, b) => a + b, 0) / R;
    lossHistory.push(mean);
    if (step === 0) firstLoss = g.loss;
    lastLoss = g.loss;
    tokens += batch.tokens;
    const secs = (Date.now() - started) / 1000;
    const eta = (secs / (step + 1)) * (steps - step - 1);
    s.log?.(
      `tuned lens: step ${step + 1}/${steps}, ${tokens} tokens, KL ${mean.toFixed(3)} nats (mean over ${R} layers), grad norm ${gradNorm.toFixed(2)}, lr ${lr.toPrecision(3)}, ${(tokens / secs).toFixed(0)} tokens/s, ${step + 1 < steps ? `ETA ${formatSeconds(eta)}` : `done in ${formatSeconds(secs)}`}`,
      step + 1 === steps,
    );
  }
  return { hidden: H, nLayers: L, weight: Float32Array.from(weight), bias: Float32Array.from(bias), lossHistory, firstLoss, lastLoss, tokens, seconds: (Date.now() - started) / 1000 };
}

function formatSeconds(s: number): string {
  if (s < 90) return `${s.toFixed(0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
