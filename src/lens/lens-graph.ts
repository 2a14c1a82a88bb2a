/**
 * The lens as onnxruntime graphs, over one tile of the vocabulary at a time, so that only compact
 * per-tile results cross into JavaScript (src/lens/tile-merge.ts puts the tiles together).
 *
 * Why tiles of the vocabulary rather than chunks of positions over the whole vocabulary: every
 * layer x position row of the lens is multiplied by the same unembedding, the biggest matrix of
 * the model (262k x 640 for Gemma 3, 128k x 4096 for Llama 3 8B). Read a tile at a time, it can
 * stay in the file's own quantized form in memory: each tile's rows are dequantized to fp32 once
 * per pass (in JavaScript from the file and fed, logit-lens.ts; for a matrix that cannot be read
 * by rows, inside this graph), for all the rows the pass reads (hundreds to thousands), which
 * costs little next to the product. Before, the lens either kept a whole fp32 copy (671 MB for Gemma 3
 * 270M, more than the rest of the model) or ran onnxruntime's 4-bit product, 1.6-3x slower at
 * these shapes than fp32 GEMM.
 *
 * Input `resid` [P, R, hidden]: P positions x R readouts; for every position the last readout must
 * be the final layer's residual, so that its distribution is the model's own output (the reference
 * for KL). For each row: logits = unembed(norm(resid)) over the tile [first, end), with the norm's
 * statistics recomputed from that very residual (not a cached scale: TransformerLens #1076). Per
 * row and tile the graph gives, with m the row's maximum in the tile and e = exp(logits - m):
 *   top-k logits and ids, m, s0 = sum e, own = sum e * logits,
 *   cross = sum_v logits_v * e_final,v (e of the position's final row, with that row's own m),
 * and, when tracking, how many logits exceed each tracked token's logit (computed beforehand by
 * the tracked-logits graph below), the tracked tokens' own logits in this tile, and each family's
 * sum of e. The merge rescales these by exp(m - global max) and gives log-sum-exp, entropy and KL.
 */
import { GraphBuilder, type Value } from "../graph/builder.js";
import type { WeightSource } from "../architectures/layers.js";
import { layerNorm, rmsNorm } from "../architectures/layers.js";
import type { Unembedding } from "../architectures/index.js";

export type LensVariant = "logit" | "raw";

export interface LensGraphOptions {
  variant: LensVariant;
  /**
   * The tile's fp32 rows are fed (input `tile_weight` [Vt, hidden]: a view of an fp32 copy held in
   * memory, or rows dequantized from the file) instead of cut from the stored matrix and
   * dequantized in the graph.
   */
  fedTile: boolean;
  /** Add tracked-id counts and family sums (inputs `tracked_ids`, `tracked_logits`, `family_mask`). */
  tracking: boolean;
}

/** The rows' logits over fp32 unembedding rows `rows` ([V', hidden]): [P * R, V'], soft-capped as the model does. */
function logitsOver(g: GraphBuilder, weights: WeightSource, u: Unembedding, resid: Value, hidden: number, variant: LensVariant, rows: Value): Value {
  let x: Value = g.reshape(resid, [-1, hidden]);
  if (variant === "logit") {
    x = u.norm === "layernorm" ? layerNorm(g, x, weights.get(u.normWeight), weights.get(u.normBias!), u.eps) : rmsNorm(g, x, weights.get(u.normWeight), u.eps, u.norm === "rms_gemma");
  }
  let logits = g.linear(x, rows);
  if (u.softcap) logits = g.mul(g.tanh(g.div(logits, g.scalar(u.softcap))), g.scalar(u.softcap));
  return logits;
}

/** Reshapes [P * R, C] rows back to [P, R, C] using resid's own [P, R]. */
function byPosition(g: GraphBuilder, resid: Value, rows: Value): Value {
  const shapePR = g.slice(g.op1("Shape", [resid]), [0], [2], [0]);
  return g.op1("Reshape", [rows, g.concat([shapePR, g.ints([-1])], 0)]);
}

export function buildLensTileGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number, opts: LensGraphOptions): GraphBuilder {
  const g = new GraphBuilder(`lens-tile-${opts.variant}${opts.tracking ? "-tracking" : ""}${opts.fedTile ? "-fed" : ""}`);
  const weights = w(g);
  const resid = g.input("resid", "float32", ["P", "R", hidden]);
  const first = g.input("first", "int64", []);
  const end = g.input("end", "int64", []);
  const k = g.input("k", "int64", [1]);
  // The tile's rows of the unembedding as fp32: fed, or cut from the stored arrays and dequantized (or widened) here,
  // once per run.
  const rows = opts.fedTile ? g.input("tile_weight", "float32", ["Vt", hidden]) : g.sliceRows(weights.get(u.matrix), first, end);
  const logits = byPosition(g, resid, logitsOver(g, weights, u, resid, hidden, opts.variant, rows)); // [P, R, Vt]

  const [topLogits, topIds] = g.op("TopK", [logits, k], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });
  const max = g.slice(topLogits!, [0], [1], [2]); // [P, R, 1]: the row's maximum in the tile
  // One fused Softmax pass gives p = e / z, with e = exp(logits - max) and z the kernel's own fp32
  // sum; at the maximum p = 1 / z, so every sum against e is the same sum against p divided by
  // p at the top token. The sums themselves are then taken again here, per row: each row's figures
  // must not depend on which other rows share the run (a streamed group of rows must give the
  // CLI's numbers exactly). s0 is a product with a column of ones (the GEMM kernel sums in short
  // blocks: better rounding than one long fp32 chain), own an elementwise product summed per row,
  // and cross one batched product per position against the final row's p ([R, Vt] @ [Vt, 1],
  // whose rows do not interact).
  const p = g.softmax(logits, -1); // [P, R, Vt]
  const pTop = g.op1("GatherElements", [p, g.slice(topIds!, [0], [1], [2])], { axis: 2 }); // [P, R, 1]
  const ones = g.op1("Expand", [g.constant([1], "float32", [1, 1]), g.concat([g.slice(g.op1("Shape", [logits]), [2], [3], [0]), g.ints([1])], 0)]); // [Vt, 1]
  const s0 = g.div(g.matmul(p, ones), pTop); // [P, R, 1]
  const own = g.div(g.reduceSum(g.mul(logits, p), [2]), pTop); // [P, R, 1]
  const lastRow = (x: Value) => g.slice(x, [-1], [Number.MAX_SAFE_INTEGER], [1]);
  const cross = g.div(g.matmul(logits, g.transpose(lastRow(p), [0, 2, 1])), lastRow(pTop)); // [P, R, 1]

  g.output(topLogits!, "top_logits");
  g.output(topIds!, "top_ids", "int64");
  g.output(g.reshape(max, [0, 0]), "max");
  g.output(g.reshape(s0, [0, 0]), "sum_exp");
  g.output(g.reshape(own, [0, 0]), "own");
  g.output(g.reshape(cross, [0, 0]), "cross");

  if (opts.tracking) {
    const trackedLogits = g.input("tracked_logits", "float32", ["P", "R", "M"]); // from the tracked-logits graph
    const localIds = g.input("tracked_local", "int64", ["M"]); // id - first, clamped into the tile
    const familyMask = g.input("family_mask", "float32", ["F", "Vt"]); // this tile's columns
    // How many of the tile's logits are strictly higher than each tracked logit: [P, R, Vt, M] compared.
    const higher = g.op1("Greater", [g.unsqueeze(logits, [3]), g.unsqueeze(trackedLogits, [2])]);
    g.output(g.reduceSum(g.op1("Cast", [higher], { to: 6 /* int32 */ }), [2], 0), "higher", "int32"); // [P, R, M]
    g.output(g.gather(logits, localIds, 2), "tracked_here"); // [P, R, M]: the tile's own value for ids inside it
    g.output(g.div(g.matmul(p, g.transpose(familyMask, [1, 0])), pTop), "family_exp"); // [P, R, F]
  }
  return g;
}

/** The logits of a few tracked ids at every row ([P, R, M]), computed as the tiles compute them. */
export function buildTrackedLogitsGraph(w: (g: GraphBuilder) => WeightSource, u: Unembedding, hidden: number, variant: LensVariant): GraphBuilder {
  const g = new GraphBuilder(`lens-tracked-${variant}`);
  const weights = w(g);
  const resid = g.input("resid", "float32", ["P", "R", hidden]);
  const ids = g.input("tracked_ids", "int64", ["M"]);
  g.output(byPosition(g, resid, logitsOver(g, weights, u, resid, hidden, variant, g.gather(weights.get(u.matrix), ids, 0))), "tracked_logits");
  return g;
}
