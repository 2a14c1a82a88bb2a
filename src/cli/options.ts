/**
 * Parsing and checking of the lens options that need more than node:util's parseArgs: numbers
 * with ranges, readout points, positions. Every refusal is a one-line UserError naming the option.
 */
import { UserError } from "../errors.js";
import { HOOK_POINTS_PER_BLOCK, blockHook } from "../architectures/forward.js";
import type { ModelConfig } from "../architectures/config.js";

export function number(value: string | undefined, name: string, fallback: number, check: (n: number) => boolean, what: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || !check(n)) throw new UserError(`--${name} must be ${what}, got '${value}'`);
  return n;
}

const POINT_NAMES = ["embed", ...HOOK_POINTS_PER_BLOCK.map((p) => p.replace("hook_", ""))];

/** --points: which hook points to read, in forward order (embed, then per block). */
export function readoutHooks(spec: string | undefined, cfg: ModelConfig): { hooks: string[]; points: string[] } {
  const points = (spec ?? "resid_post").split(",").map((p) => p.trim().replace(/^hook_/, "")).filter(Boolean);
  for (const p of points) {
    if (!POINT_NAMES.includes(p)) throw new UserError(`unknown --points name '${p}' (known: ${POINT_NAMES.join(", ")})`);
  }
  if (points.length === 0) throw new UserError("--points is empty");
  const hooks: string[] = [];
  if (points.includes("embed")) hooks.push("hook_embed");
  for (let l = 0; l < cfg.nLayers; l++) {
    for (const p of HOOK_POINTS_PER_BLOCK) if (points.includes(p.replace("hook_", ""))) hooks.push(blockHook(l, p));
  }
  return { hooks, points };
}

/** --positions: comma-separated indices and ranges; negative indices count from the end. */
export function parsePositions(spec: string | undefined, length: number): number[] | undefined {
  if (spec === undefined) return undefined;
  const out = new Set<number>();
  const resolve = (s: string): number => {
    const n = Number(s);
    if (!Number.isInteger(n)) throw new UserError(`--positions: '${s}' is not an integer`);
    const p = n < 0 ? length + n : n;
    if (p < 0 || p >= length) throw new UserError(`--positions: ${s} is out of range for a prompt of ${length} tokens (0..${length - 1}, or -1..-${length})`);
    return p;
  };
  for (const part of spec.split(",").map((x) => x.trim()).filter(Boolean)) {
    const m = /^(-?\d+)-(-?\d+)$/.exec(part);
    if (m) {
      const [a, b] = [resolve(m[1]!), resolve(m[2]!)];
      if (a > b) throw new UserError(`--positions: range ${part} is backwards`);
      for (let p = a; p <= b; p++) out.add(p);
    } else out.add(resolve(part));
  }
  if (out.size === 0) throw new UserError("--positions is empty");
  return [...out].sort((a, b) => a - b);
}


/**
 * A memory size: "16G", "512M", "1.5GB", "4GiB" or plain bytes (binary units: 1G = 2^30 bytes, as
 * `free -g` counts). Undefined stays undefined (the default budget applies).
 */
export function parseSize(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value);
  if (!m) throw new UserError(`${name} must be a size such as 4G, 512M or 16GB, not '${value}'`);
  const bytes = Number(m[1]) * 1024 ** "_kmgt".indexOf((m[2] || "_").toLowerCase());
  if (!(bytes >= 64 * 2 ** 20)) throw new UserError(`${name} ${value} is too small: a model needs at least 64M`);
  return Math.floor(bytes);
}
