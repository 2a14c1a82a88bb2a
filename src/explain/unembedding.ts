/**
 * Products with the whole unembedding, done inside onnxruntime (a 262k x 640 matrix has no
 * business in a JS loop): for a few vectors in the unembedding's own space (after the final norm),
 * their dot product with every token row, every row's norm (for cosines), and a few rows themselves.
 * Shared by `explain` (issue 10, item 2) and direct logit attribution.
 */
import type ort from "onnxruntime-node";
import { unembeddingOf } from "../architectures/index.js";
import type { LoadedModel } from "../engine/model.js";
import { GraphBuilder } from "../graph/builder.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { UserError } from "../errors.js";


export interface Products {
  /** [N, V]: u_v . x_n, before any soft-cap. */
  dots: Float32Array;
  /** [V]: |u_v|. */
  rowNorms: Float32Array;
  /** [M, H]: the rows asked for. */
  rows: Float32Array;
}

const sessions = new WeakMap<LoadedModel, Promise<ort.InferenceSession>>();
const norms = new WeakMap<LoadedModel, Promise<Float32Array>>();

/** The unembedding as a graph value: the fp32 copy the lens uses when the model keeps one, else the file's. */
function unembeddingValue(model: LoadedModel, g: GraphBuilder) {
  return model.lensWeightsFor(g).get(unembeddingOf(model.config).matrix);
}

function feedsFor(model: LoadedModel, feeds: Record<string, ort.Tensor>): Record<string, ort.Tensor> {
  return Object.assign(feeds, model.lensFeeds());
}

function session(model: LoadedModel): Promise<ort.InferenceSession> {
  let s = sessions.get(model);
  if (!s) {
    const cfg = model.config;
    const g = new GraphBuilder("unembedding-products");
    const U = unembeddingValue(model, g);
    const x = g.input("x", "float32", ["N", cfg.hidden]);
    const ids = g.input("ids", "int64", ["M"]);
    g.output(g.linear(x, U), "dots");
    g.output(g.gather(U, ids), "rows");
    s = createSession(g, model.store.dir, model.lensTuning());
    sessions.set(model, s);
  }
  return s;
}

/** |u_v| for every token, once per model (one pass over the matrix, inside onnxruntime). */
export function rowNorms(model: LoadedModel): Promise<Float32Array> {
  let n = norms.get(model);
  if (!n) {
    n = (async () => {
      const cfg = model.config;
      const g = new GraphBuilder("unembedding-row-norms");
      const U = unembeddingValue(model, g);
      // Squares summed by a product with a column of ones (GEMM sums in blocks, not one long fp32 chain).
      const ones = g.constant(new Float32Array(cfg.hidden).fill(1), "float32", [cfg.hidden, 1]);
      g.output(g.reshape(g.sqrt(g.matmul(g.mul(U, U), ones)), [-1]), "row_norms");
      const s = await createSession(g, model.store.dir, model.lensTuning());
      const out = await runSession(s, feedsFor(model, {}), "unembedding row norms");
      await s.release();
      return out["row_norms"]!.data as Float32Array;
    })();
    norms.set(model, n);
  }
  return n;
}

/** Dot products of `vectors` (N x hidden, flat) with every token row, row norms, and rows `ids`. */
export async function unembeddingProducts(model: LoadedModel, vectors: Float32Array, ids: number[]): Promise<Products> {
  const { hidden, vocabSize } = model.config;
  if (vectors.length % hidden !== 0) throw new Error("vectors must be a multiple of the hidden size");
  for (const id of ids) if (!(Number.isInteger(id) && id >= 0 && id < vocabSize)) throw new UserError(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
  const feeds: Record<string, ort.Tensor> = {
    x: new runtime.Tensor("float32", vectors, [vectors.length / hidden, hidden]),
    ids: new runtime.Tensor("int64", BigInt64Array.from(ids.length ? ids : [0], BigInt), [Math.max(1, ids.length)]),
  };
  const out = await runSession(await session(model), feedsFor(model, feeds), "unembedding products");
  return {
    dots: out["dots"]!.data as Float32Array,
    rowNorms: await rowNorms(model),
    rows: (out["rows"]!.data as Float32Array).subarray(0, ids.length * hidden),
  };
}

/**
 * The final norm applied to one residual, as the lens does (statistics from this residual):
 * what the unembedding reads. Also returns the scale it used, for frozen-scale attribution.
 */
export function finalNormOf(model: LoadedModel, x: Float32Array): { normed: Float32Array; scale: number; mean: number } {
  const u = unembeddingOf(model.config);
  const w = model.store.tensorF32(u.normWeight).data;
  const H = x.length;
  const normed = new Float32Array(H);
  if (u.norm === "layernorm") {
    const b = model.store.tensorF32(u.normBias!).data;
    let mean = 0;
    for (const v of x) mean += v;
    mean /= H;
    let vr = 0;
    for (const v of x) vr += (v - mean) ** 2;
    const scale = 1 / Math.sqrt(vr / H + u.eps);
    for (let i = 0; i < H; i++) normed[i] = (x[i]! - mean) * scale * w[i]! + b[i]!;
    return { normed, scale, mean };
  }
  let ms = 0;
  for (const v of x) ms += v * v;
  const scale = 1 / Math.sqrt(ms / H + u.eps);
  const gemma = u.norm === "rms_gemma";
  for (let i = 0; i < H; i++) normed[i] = x[i]! * scale * (gemma ? 1 + w[i]! : w[i]!);
  return { normed, scale, mean: 0 };
}
