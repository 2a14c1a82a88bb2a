/**
 * One prompt through the model and the sweep graph (graph.ts): per layer (every block's
 * hook_resid_post) and position, KL to the final output, cross-entropy against the real next
 * token, top-1 agreement with the final prediction; at the prompt's last position, the probability
 * of each tracked target id and the mass of each token set. One forward pass serves every lens
 * asked for (the logit lens, and linear translators).
 */
import type ort from "onnxruntime-node";
import { blockHook } from "../architectures/forward.js";
import { unembeddingOf } from "../architectures/index.js";
import type { LoadedModel } from "../engine/model.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { checkActivationsFinite } from "../lens/finite.js";
import { buildSweepGraph } from "./graph.js";

const CHUNK_BUDGET_BYTES = 128 * 1024 * 1024;

/** An affine map per layer applied to the residual before the lens: y = x @ weight[l] + bias[l]. */
export interface Translator {
  /** [L, H, H] as [in, out]; the last layer's must be the identity. */
  weight: Float32Array;
  /** [L, H] */
  bias: Float32Array;
}

export interface LensSpec {
  /** "logit", or "linear" for a linear translator. */
  name: string;
  translator?: Translator;
}

export interface PromptEval {
  lens: string;
  /** Positions read (indices into ids). */
  positions: number[];
  /** [layer][i]: nats; ce is NaN where the position has no next token (the last one). */
  kl: Float32Array[];
  ce: Float32Array[];
  top1Agree: Uint8Array[];
  /** [layer][m]: probability of tracked id m at the last prompt position. */
  targetProb: Float32Array[];
  /** [layer][f]: mass of token set f at the last prompt position. */
  familyProb: Float32Array[];
}

export interface EvalRequest {
  ids: number[];
  positions: number[];
  tracked: number[];
  families: Float32Array[];
}

export class SweepEvaluator {
  private sessions = new Map<boolean, Promise<ort.InferenceSession>>();
  readonly readouts: string[];

  constructor(readonly model: LoadedModel) {
    this.readouts = Array.from({ length: model.config.nLayers }, (_, l) => blockHook(l, "hook_resid_post"));
  }

  private session(translated: boolean): Promise<ort.InferenceSession> {
    let s = this.sessions.get(translated);
    if (!s) {
      const cfg = this.model.config;
      const g = buildSweepGraph((gb) => this.model.lensWeightsFor(gb), unembeddingOf(cfg), cfg.hidden, cfg.vocabSize, { translators: translated });
      s = createSession(g, this.model.store.dir, this.model.lensTuning());
      this.sessions.set(translated, s);
    }
    return s;
  }

  async evaluate(req: EvalRequest, lenses: LensSpec[]): Promise<PromptEval[]> {
    const cfg = this.model.config;
    const H = cfg.hidden;
    const V = cfg.vocabSize;
    const L = this.readouts.length;
    const forward = await this.model.forward(this.readouts, "none");
    const fwd = await forward.run(req.ids);
    await checkActivationsFinite(this.model, fwd.hooks, req.ids, undefined);
    const trackedFeed = req.tracked.length ? req.tracked : [0];
    const F = Math.max(1, req.families.length);
    const familyFeed = new Float32Array(F * V);
    req.families.forEach((f, i) => familyFeed.set(f, i * V));
    const M = trackedFeed.length;
    const P = req.positions.length;
    const lastPos = req.ids.length - 1;
    const chunk = Math.max(1, Math.floor(CHUNK_BUDGET_BYTES / (L * V * 8)));
    const out: PromptEval[] = [];
    for (const lens of lenses) {
      const session = await this.session(lens.translator !== undefined);
      const ev: PromptEval = {
        lens: lens.name,
        positions: req.positions,
        kl: Array.from({ length: L }, () => new Float32Array(P)),
        ce: Array.from({ length: L }, () => new Float32Array(P)),
        top1Agree: Array.from({ length: L }, () => new Uint8Array(P)),
        targetProb: Array.from({ length: L }, () => new Float32Array(req.tracked.length)),
        familyProb: Array.from({ length: L }, () => new Float32Array(req.families.length)),
      };
      for (let start = 0; start < P; start += chunk) {
        const pos = req.positions.slice(start, start + chunk);
        const n = pos.length;
        const resid = new Float32Array(n * L * H);
        this.readouts.forEach((hook, r) => {
          const src = fwd.hooks.get(hook)!;
          pos.forEach((p, i) => resid.set(src.subarray(p * H, (p + 1) * H), (i * L + r) * H));
        });
        const next = new BigInt64Array(n * L);
        pos.forEach((p, i) => next.fill(BigInt(p + 1 < req.ids.length ? req.ids[p + 1]! : 0), i * L, (i + 1) * L));
        const feeds: Record<string, ort.Tensor> = {
          resid: new runtime.Tensor("float32", resid, [n, L, H]),
          next_ids: new runtime.Tensor("int64", next, [n, L, 1]),
          tracked_ids: new runtime.Tensor("int64", BigInt64Array.from(trackedFeed, (t) => BigInt(t)), [M]),
          family_mask: new runtime.Tensor("float32", familyFeed, [F, V]),
        };
        Object.assign(feeds, this.model.lensFeeds());
        if (lens.translator) {
          feeds["translator_weight"] = new runtime.Tensor("float32", lens.translator.weight, [L, H, H]);
          feeds["translator_bias"] = new runtime.Tensor("float32", lens.translator.bias, [L, H]);
        }
        const o = await runSession(session, feeds, "sweep lens graph");
        const kl = o["kl"]!.data as Float32Array;
        const ce = o["ce"]!.data as Float32Array;
        const top1 = o["top1"]!.data as BigInt64Array;
        const tlp = o["target_logprob"]!.data as Float32Array;
        const fp = o["family_prob"]!.data as Float32Array;
        for (let i = 0; i < n; i++) {
          const finalTop = top1[i * L + L - 1]!;
          for (let r = 0; r < L; r++) {
            const c = i * L + r;
            ev.kl[r]![start + i] = Math.max(0, kl[c]!);
            ev.ce[r]![start + i] = pos[i]! < lastPos ? ce[c]! : NaN;
            ev.top1Agree[r]![start + i] = top1[c] === finalTop ? 1 : 0;
            if (pos[i] === lastPos) {
              for (let m = 0; m < req.tracked.length; m++) ev.targetProb[r]![m] = Math.exp(tlp[c * M + m]!);
              for (let f = 0; f < req.families.length; f++) ev.familyProb[r]![f] = fp[c * F + f]!;
            }
          }
        }
      }
      for (const arr of [...ev.kl, ...ev.ce]) {
        for (const v of arr) if (!Number.isNaN(v) && !Number.isFinite(v)) throw new Error("sweep lens produced a non-finite value");
      }
      out.push(ev);
    }
    return out;
  }
}
