/**
 * The tuned-lens optimiser settings (tuned_lens/scripts/ingredients.py, train_loop.py 0.2.0), in
 * JS on the flat parameter vector: the gradients come from onnxruntime (graph.ts), and a step on a
 * few million floats takes milliseconds, so there is nothing to gain from a library here.
 *
 * - SGD with Nesterov momentum (PyTorch's torch.optim.SGD: weight decay added to the gradient,
 *   buf = m buf + g, step along g + m buf), lr = lr_scale x (1 - momentum) = 0.1 by default,
 *   momentum 0.9, weight decay 1e-3, no warmup, linear decay to 0.
 * - Adam (torch.optim.Adam, L2 weight decay), lr = lr_scale x 1e-3, betas (0.9, 0.999), eps 1e-8,
 *   linear warmup over 20 % of the steps then linear decay to 0 at the last step. (tuned-lens
 *   passes num_steps - warmup as the schedule's length, which leaves the last warmup-many steps at
 *   lr 0; we decay over the steps that are actually taken.)
 * - Before each step the gradient's global norm (all layers together) is clipped to 1.
 */
export type OptimizerKind = "sgd" | "adam";

export interface OptimizerSettings {
  kind: OptimizerKind;
  lrScale: number;
  momentum: number;
  weightDecay: number;
  steps: number;
  clipNorm: number;
}

export const DEFAULT_OPTIMIZER: Omit<OptimizerSettings, "steps"> = { kind: "sgd", lrScale: 1, momentum: 0.9, weightDecay: 1e-3, clipNorm: 1 };

export function baseLr(s: OptimizerSettings): number {
  return s.kind === "sgd" ? s.lrScale * (1 - s.momentum) : s.lrScale * 1e-3;
}

export function warmupSteps(s: OptimizerSettings): number {
  return s.kind === "adam" ? Math.min(1000, Math.floor(s.steps / 5)) : 0;
}

/** Learning rate of step `step` (0-based). */
export function learningRate(s: OptimizerSettings, step: number): number {
  const w = warmupSteps(s);
  const factor = step < w ? (step + 1) / (w + 1) : Math.max(0, (s.steps - step) / (s.steps - w));
  return baseLr(s) * factor;
}

export class Optimizer {
  private readonly m: Float32Array;
  private readonly v: Float32Array | undefined;
  private t = 0;

  constructor(
    readonly settings: OptimizerSettings,
    size: number,
  ) {
    this.m = new Float32Array(size);
    this.v = settings.kind === "adam" ? new Float32Array(size) : undefined;
  }

  /** Clips `grad` in place to the global norm and updates `params` in place; returns the norm before clipping. */
  step(params: Float32Array, grad: Float32Array): { gradNorm: number; lr: number } {
    const s = this.settings;
    let sq = 0;
    for (let i = 0; i < grad.length; i++) sq += grad[i]! * grad[i]!;
    const gradNorm = Math.sqrt(sq);
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
    const clip = Math.min(1, s.clipNorm / (gradNorm + 1e-6));
    const lr = learningRate(s, this.t);
    const wd = s.weightDecay;
    const m = this.m;
    if (s.kind === "sgd") {
      const mu = s.momentum;
      const first = this.t === 0;
      for (let i = 0; i < params.length; i++) {
        const g = grad[i]! * clip + wd * params[i]!;
        const buf = first ? g : mu * m[i]! + g;
        m[i] = buf;
        params[i] -= lr * (g + mu * buf);
      }
    } else {
      const v = this.v!;
      const b1 = s.momentum;
      const b2 = 0.999;
      const t = this.t + 1;
      const c1 = 1 - b1 ** t;
      const c2 = 1 - b2 ** t;
      for (let i = 0; i < params.length; i++) {
        const g = grad[i]! * clip + wd * params[i]!;
        m[i] = b1 * m[i]! + (1 - b1) * g;
        v[i] = b2 * v[i]! + (1 - b2) * g * g;
        params[i] -= (lr * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + 1e-8);
      }
    }
    this.t++;
    return { gradNorm, lr };
  }
}
