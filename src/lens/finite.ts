/**
 * NaN and Inf are never results. A bad weight (or a config value no check caught) makes the
 * activations non-finite from some hook point on, and the lens would print "NaN%" and arbitrary
 * top tokens with exit 0. These checks run on what the lens already has in memory (the readout
 * residuals, the lens outputs: cheap next to the lens itself) and, only when something is wrong,
 * run the forward pass once more with every hook point to say where the values first go bad.
 */
import { allHookNames } from "../architectures/forward.js";
import type { KvCache, LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";

/** Index of the first NaN or ±Inf in `data`, or -1. */
export function firstNonFinite(data: ArrayLike<number>): number {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is NaN exactly for NaN and ±Inf: one comparison per element.
    if (v - v !== 0) return i;
  }
  return -1;
}

function describe(v: number): string {
  return Number.isNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
}

/**
 * Throws a UserError naming the first hook point (in forward order) and position where the model's
 * activations stop being finite, if any of `hooks` holds a non-finite value. `ids`/`cache` are the
 * run that produced them; `positionOffset` turns row indices into context positions.
 */
export async function checkActivationsFinite(
  model: LoadedModel,
  hooks: ReadonlyMap<string, Float32Array>,
  ids: number[],
  cache: KvCache | undefined,
): Promise<void> {
  if (![...hooks.values()].some((h) => firstNonFinite(h) >= 0)) return;
  // Locate the origin: every hook point of the model, in forward order, for the same tokens.
  const order = allHookNames(model.config);
  let where: { hook: string; index: number; value: number; rowWidth: number } | undefined;
  try {
    const all = await model.forward(order, false);
    const out = await all.run(ids, cache);
    for (const hook of order) {
      const data = out.hooks.get(hook);
      const i = data ? firstNonFinite(data) : -1;
      if (i >= 0) {
        where = { hook, index: i, value: data![i]!, rowWidth: data!.length / ids.length };
        break;
      }
    }
  } catch {
    // The diagnostic pass is best effort; fall back to the hooks already read.
  }
  if (!where) {
    for (const hook of order) {
      const data = hooks.get(hook);
      const i = data ? firstNonFinite(data) : -1;
      if (i >= 0) {
        where = { hook, index: i, value: data![i]!, rowWidth: data!.length / ids.length };
        break;
      }
    }
  }
  const past = cache?.length ?? 0;
  const detail = where ? ` (${describe(where.value)}) first at ${where.hook}, position ${past + Math.floor(where.index / where.rowWidth)}` : "";
  throw new UserError(
    `the model's activations are not finite${detail}: its weights or config hold values that cannot be right; no lens is shown for NaN`,
  );
}

/** Throws when the lens graph's own outputs (log-sum-exp, top logits, entropy, KL) are not finite. */
export function checkLensOutputsFinite(outputs: Record<string, ArrayLike<number> | undefined>, rows: readonly string[], positions: readonly number[]): void {
  const R = rows.length;
  for (const [name, data] of Object.entries(outputs)) {
    if (!data) continue;
    const i = firstNonFinite(data);
    if (i < 0) continue;
    // Outputs are [P, R, ...]: recover the cell.
    const perCell = data.length / (R * positions.length);
    const cell = Math.floor(i / perCell);
    const p = Math.floor(cell / R);
    throw new UserError(
      `the lens gave a non-finite ${name} (${describe(data[i]!)}) at ${rows[cell % R]}, position ${positions[p]}: the final norm or unembedding weights hold values that cannot be right; no lens is shown for NaN`,
    );
  }
}
