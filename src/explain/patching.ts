/**
 * Activation patching (issue 10, item 4): the residual entering layer l at position p, taken from
 * prompt A (the source) and written into the run on prompt B, and what that does to B's output:
 * the target's log-probability, or the logit difference target - versus, at B's last position.
 * A sweep over layers x positions gives the standard patching heatmap. The engine does the
 * patching (ForwardSession.runFrom with `patches`, from a cut at the patched layer; layer nLayers =
 * the final residual before the final norm).
 * Prompts must have the same length, or a position map (B position -> A position) must be given.
 */
import { blockHook } from "../architectures/forward.js";
import { truncateCache, type LoadedModel, type ResidualPatch } from "../engine/model.js";
import { UserError } from "../errors.js";
import { renderToken } from "../tokens/render.js";
import { shownToken, type ShownToken } from "./attribution.js";

export interface PatchMetric {
  target: number;
  versus?: number;
}

export interface PatchSweep {
  /** The model's layer count: layer n_layers is the final residual (before the final norm). */
  n_layers: number;
  layers: number[];
  /** Positions in B that were patched. */
  positions: number[];
  /** The A position each patched B position reads from. */
  source_positions: number[];
  metric: string;
  target: ShownToken;
  versus?: ShownToken;
  /** B's token at each patched position (the column labels). */
  position_tokens: string[];
  clean: number; // A's own value
  corrupted: number; // B's own value
  /** [layer][position]: B's value with that one residual patched in from A. */
  patched: number[][];
}

function metricOf(logits: Float32Array, V: number, m: PatchMetric): number {
  const row = logits.subarray(logits.length - V);
  if (m.versus !== undefined) return row[m.target]! - row[m.versus]!;
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return row[m.target]! - max - Math.log(sum);
}

export async function patchSweep(
  model: LoadedModel,
  idsA: number[],
  idsB: number[],
  metric: PatchMetric,
  options: { layers?: number[]; positions?: number[]; positionMap?: Map<number, number>; signal?: AbortSignal } = {},
): Promise<PatchSweep> {
  const cfg = model.config;
  const L = cfg.nLayers;
  const V = cfg.vocabSize;
  if (idsA.length !== idsB.length && !options.positionMap) {
    throw new UserError(`the prompts have different lengths (${idsA.length} and ${idsB.length} tokens): give a position map (--map B:A,...) or prompts of equal length`);
  }
  const layers = options.layers ?? Array.from({ length: L + 1 }, (_, l) => l);
  for (const l of layers) if (!Number.isInteger(l) || l < 0 || l > L) throw new UserError(`layer ${l} is out of range (0..${L}; ${L} is the final residual)`);
  const positions = options.positions ?? (options.positionMap ? [...options.positionMap.keys()] : idsB.map((_, i) => i));
  const source = positions.map((p) => (options.positionMap ? options.positionMap.get(p) : p));
  positions.forEach((p, i) => {
    const a = source[i];
    if (!(Number.isInteger(p) && p >= 0 && p < idsB.length)) throw new UserError(`position ${p} is outside prompt B (0..${idsB.length - 1})`);
    if (a === undefined || !(Number.isInteger(a) && a >= 0 && a < idsA.length)) throw new UserError(`position ${p} of prompt B has no position in prompt A (0..${idsA.length - 1}) to read from`);
  });
  const hookOf = (l: number) => (l < L ? blockHook(l, "hook_resid_pre") : blockHook(L - 1, "hook_resid_post"));
  const H = cfg.hidden;
  // A and B run once, whole, for their residuals at every layer asked for. Then, per layer l, a
  // session cut only at l runs the rest of the model from B's residual with one position replaced:
  // the layers before l are never run again, and the cut costs one piece boundary, not one per
  // layer (BENCHMARKS.md, "Why the fish: costs").
  const whole = await model.forward([...new Set(layers.map(hookOf))], "last");
  const a = await whole.run(idsA);
  const b = await whole.run(idsB);
  await model.release(whole);
  const patched: number[][] = [];
  for (const l of layers) {
    const row: number[] = [];
    const residA = a.hooks.get(hookOf(l))!;
    const residB = b.hooks.get(hookOf(l))!;
    const rest = await model.forward([], "last", { cutsAt: [l] });
    try {
      for (let i = 0; i < positions.length; i++) {
        // A sweep is layers x positions runs: the explorer's server cancels it between two of them.
        options.signal?.throwIfAborted();
        const src = source[i]!;
        // Positions before the patched one cannot change (causal attention): they come from B's
        // KV cache, and only the patched position and those after it run.
        const p = positions[i]!;
        const patch: ResidualPatch = { layer: l, position: 0, vector: residA.slice(src * H, (src + 1) * H) };
        const past = p > 0 ? truncateCache(b.cache, p) : undefined;
        const r = await rest.runFrom(idsB.slice(p), l, residB.slice(p * H), [patch], past);
        row.push(metricOf(r.logits!, V, metric));
      }
    } finally {
      // One session per layer: closed before the next opens, so the sweep holds one model's worth.
      await model.release(rest);
    }
    patched.push(row);
  }
  const text = (id: number) => renderToken(model.tokenizer.tokenBytes(id)).text;
  const result: PatchSweep = {
    n_layers: L,
    layers,
    positions,
    source_positions: source as number[],
    metric: metric.versus !== undefined ? "logit difference" : "log-probability",
    target: shownToken(model, idsB, metric.target),
    position_tokens: positions.map((p) => text(idsB[p]!)),
    clean: metricOf(a.logits!, V, metric),
    corrupted: metricOf(b.logits!, V, metric),
    patched,
  };
  if (metric.versus !== undefined) result.versus = shownToken(model, idsB, metric.versus);
  return result;
}

/** Terminal heatmap: one row per layer, one column per position, the recovered fraction (patched - B) / (A - B). */
export function patchText(s: PatchSweep, tokenText: (position: number) => string, what: string): string {
  const span = s.clean - s.corrupted;
  const shades = " ░▒▓█";
  const lines = [
    `${what} (${s.metric}): prompt A ${s.clean.toFixed(3)}, prompt B ${s.corrupted.toFixed(3)}; cell = (patched - B) / (A - B), 1 = A's value restored`,
    `layer  ${s.positions.map((p) => tokenText(p).slice(0, 6).padEnd(7)).join("")}`,
  ];
  s.layers.forEach((l, li) => {
    const cells = s.patched[li]!.map((v) => {
      const f = Math.abs(span) > 1e-9 ? (v - s.corrupted) / span : 0;
      const shade = shades[Math.max(0, Math.min(4, Math.round(Math.abs(f) * 4)))]!;
      return `${shade}${(f >= 0 ? "+" : "-") + Math.abs(f).toFixed(2)}`.padEnd(7);
    });
    lines.push(`${String(l).padEnd(7)}${cells.join("")}`);
  });
  return lines.join("\n");
}
