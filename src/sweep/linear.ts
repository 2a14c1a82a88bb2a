/**
 * The linear shortcut lens (Din et al. 2024, "Jump to Conclusions"): for every layer l an affine
 * map fitted by least squares from that layer's residual h_l to the final residual h_L over a
 * corpus, min_{A,b} sum_t |A h_l(t) + b - h_L(t)|^2 (+ ridge), then read through the model's own
 * final norm and unembedding like the logit lens. Closed form: with x = [h_l; 1],
 * W = (X^T X + lambda D)^{-1} X^T Y. The Gram matrices X^T X and X^T Y are accumulated in float64
 * from per-window products computed by onnxruntime; the solve is a Cholesky factorisation in
 * float64 in JS (hidden + 1 unknowns per layer).
 *
 * Position 0 is left out of the fit: its residual (the attention sink, often BOS) has norms orders
 * of magnitude above the rest and would dominate the squares (recorded as skip_first_position).
 * Ridge: lambda = ridge x mean(diag(X^T X)) / tokens, on the weights only (not the bias).
 *
 * Saved as safetensors: `layers.{l}.weight` [hidden, hidden] as [out, in] (PyTorch nn.Linear, as
 * tuned-lens stores its translators) and `layers.{l}.bias` [hidden], F32, for l in 0..L-2 (the
 * last layer's map is the identity); metadata names the model (sha256 of its files) and settings.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type ort from "onnxruntime-node";
import { blockHook } from "../architectures/forward.js";
import type { LoadedModel } from "../engine/model.js";
import { UserError } from "../errors.js";
import { GraphBuilder } from "../graph/builder.js";
import { createSession, runSession, ort as runtime } from "../graph/session.js";
import { readSafetensors } from "../formats/safetensors.js";
import { writeFileAtomic } from "../outputs/write-file.js";
import type { SweepData } from "./data.js";
import type { Translator } from "./evaluate.js";

export const LINEAR_FORMAT = "logit-lens/linear-lens@1";

export interface LinearLens {
  hidden: number;
  nLayers: number;
  /** Per fitted layer (0..L-2): weight [out, in] row-major, bias [hidden]. */
  weights: Float32Array[];
  biases: Float32Array[];
  metadata: Record<string, string>;
  /** sha256 of the safetensors file (when read from one). */
  sha256?: string;
}

const modelHashes = new WeakMap<LoadedModel, string>();

/** sha256 over the model's source files (a .gguf, or a folder's config.json and *.safetensors). */
export function modelHash(model: LoadedModel): string {
  let h = modelHashes.get(model);
  if (h) return h;
  const src = model.info.source;
  const files = fs.statSync(src).isDirectory()
    ? fs.readdirSync(src).filter((f) => f === "config.json" || f.endsWith(".safetensors")).sort().map((f) => path.join(src, f))
    : [src];
  const hash = crypto.createHash("sha256");
  const buf = Buffer.alloc(1 << 22);
  for (const f of files) {
    const fd = fs.openSync(f, "r");
    try {
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  h = hash.digest("hex");
  modelHashes.set(model, h);
  return h;
}

function gramGraph(H1: number, H: number): GraphBuilder {
  const g = new GraphBuilder(`linear-lens-gram-${H}`);
  const xa = g.input("xa", "float32", ["R", "T", H1]);
  const y = g.input("y", "float32", ["T", H]);
  const xt = g.transpose(xa, [0, 2, 1]);
  g.output(g.matmul(xt, xa), "gram"); // [R, H1, H1]
  g.output(g.matmul(xt, y), "cross"); // [R, H1, H]
  return g;
}

/** In-place Cholesky of the n x n row-major symmetric positive definite `a` (lower triangle). */
function cholesky(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j]!;
    for (let k = 0; k < j; k++) d -= a[j * n + k]! ** 2;
    if (!(d > 0)) throw new UserError("the linear lens fit is singular (too little text for the hidden size, or a constant residual); give more --data or a larger --ridge");
    const ljj = Math.sqrt(d);
    a[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j]!;
      const ri = i * n;
      const rj = j * n;
      for (let k = 0; k < j; k++) s -= a[ri + k]! * a[rj + k]!;
      a[ri + j] = s / ljj;
    }
  }
}

/** Solves (L L^T) X = B in place for B [n, m] row-major, L from cholesky(). */
function choleskySolve(l: Float64Array, n: number, b: Float64Array, m: number): void {
  for (let i = 0; i < n; i++) {
    const bi = i * m;
    for (let k = 0; k < i; k++) {
      const f = l[i * n + k]!;
      if (f === 0) continue;
      const bk = k * m;
      for (let c = 0; c < m; c++) b[bi + c] -= f * b[bk + c]!;
    }
    const d = l[i * n + i]!;
    for (let c = 0; c < m; c++) b[bi + c] /= d;
  }
  for (let i = n - 1; i >= 0; i--) {
    const bi = i * m;
    for (let k = i + 1; k < n; k++) {
      const f = l[k * n + i]!;
      if (f === 0) continue;
      const bk = k * m;
      for (let c = 0; c < m; c++) b[bi + c] -= f * b[bk + c]!;
    }
    const d = l[i * n + i]!;
    for (let c = 0; c < m; c++) b[bi + c] /= d;
  }
}

export interface FitOptions {
  ridge: number;
  dataFile: string;
  window: number;
  log: ((line: string, final: boolean) => void) | null;
}

export async function fitLinearLens(model: LoadedModel, data: SweepData, opts: FitOptions): Promise<LinearLens> {
  const cfg = model.config;
  const H = cfg.hidden;
  const H1 = H + 1;
  const L = cfg.nLayers;
  const R = L - 1;
  if (R < 1) throw new UserError("a linear lens needs a model with at least 2 layers");
  const readouts = Array.from({ length: L }, (_, l) => blockHook(l, "hook_resid_post"));
  const forward = await model.forward(readouts, "none");
  const session: ort.InferenceSession = await createSession(gramGraph(H1, H), model.store.dir);
  const gram = Array.from({ length: R }, () => new Float64Array(H1 * H1));
  const cross = Array.from({ length: R }, () => new Float64Array(H1 * H));
  let tokens = 0;
  const started = Date.now();
  for (let i = 0; i < data.count; i++) {
    const p = data.prompt(i);
    const T = p.ids.length - 1; // position 0 left out
    if (T < 1) continue;
    const fwd = await forward.run(p.ids);
    const xa = new Float32Array(R * T * H1);
    for (let r = 0; r < R; r++) {
      const src = fwd.hooks.get(readouts[r]!)!;
      for (let t = 0; t < T; t++) {
        xa.set(src.subarray((t + 1) * H, (t + 2) * H), (r * T + t) * H1);
        xa[(r * T + t) * H1 + H] = 1;
      }
    }
    const y = fwd.hooks.get(readouts[L - 1]!)!.slice(H, (T + 1) * H);
    const o = await runSession(session, { xa: new runtime.Tensor("float32", xa, [R, T, H1]), y: new runtime.Tensor("float32", y, [T, H]) }, "linear lens fit");
    const g = o["gram"]!.data as Float32Array;
    const c = o["cross"]!.data as Float32Array;
    for (let r = 0; r < R; r++) {
      const gr = gram[r]!;
      const off = r * H1 * H1;
      for (let k = 0; k < H1 * H1; k++) gr[k] += g[off + k]!;
      const cr = cross[r]!;
      const offc = r * H1 * H;
      for (let k = 0; k < H1 * H; k++) cr[k] += c[offc + k]!;
    }
    tokens += T;
    opts.log?.(`linear lens: ${i + 1}/${data.count} windows, ${tokens} tokens (${((Date.now() - started) / 1000).toFixed(1)} s)`, false);
  }
  if (tokens < 2) throw new UserError("the linear lens needs at least 2 tokens of text after the first position");
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (let r = 0; r < R; r++) {
    opts.log?.(`linear lens: solving layer ${r + 1}/${R}`, false);
    const a = gram[r]!;
    let meanDiag = 0;
    for (let k = 0; k < H; k++) meanDiag += a[k * H1 + k]!;
    meanDiag /= H;
    const lambda = opts.ridge * meanDiag;
    for (let k = 0; k < H; k++) a[k * H1 + k] += lambda;
    cholesky(a, H1);
    const b = cross[r]!; // becomes W [H1, H]: y^T = [x^T 1] W
    choleskySolve(a, H1, b, H);
    const w = new Float32Array(H * H); // [out, in]
    for (let i = 0; i < H; i++) for (let o2 = 0; o2 < H; o2++) w[o2 * H + i] = b[i * H + o2]!;
    weights.push(w);
    biases.push(Float32Array.from(b.subarray(H * H, H * H + H)));
  }
  opts.log?.(`linear lens: fitted ${R} layers on ${tokens} tokens in ${((Date.now() - started) / 1000).toFixed(1)} s`, true);
  return {
    hidden: H,
    nLayers: L,
    weights,
    biases,
    metadata: {
      format: LINEAR_FORMAT,
      method: "least squares from each layer's hook_resid_post to the final hook_resid_post (Din et al. 2024)",
      model_name: model.info.name,
      model_sha256: modelHash(model),
      architecture: cfg.architecture,
      n_layers: String(L),
      hidden_size: String(H),
      layers: String(R),
      data_file: path.basename(opts.dataFile),
      data_sha256: data.sha256,
      data_prompts: String(data.count),
      window: data.kind === "text" ? String(opts.window) : "",
      tokens: String(tokens),
      ridge: String(opts.ridge),
      skip_first_position: "1",
      weight_layout: "[out, in]: y = weight @ x + bias",
    },
  };
}

export async function saveLinearLens(file: string, lens: LinearLens): Promise<void> {
  const H = lens.hidden;
  const header: Record<string, unknown> = { __metadata__: lens.metadata };
  let offset = 0;
  const chunks: Float32Array[] = [];
  lens.weights.forEach((w, l) => {
    header[`layers.${l}.weight`] = { dtype: "F32", shape: [H, H], data_offsets: [offset, offset + w.byteLength] };
    offset += w.byteLength;
    chunks.push(w);
    const b = lens.biases[l]!;
    header[`layers.${l}.bias`] = { dtype: "F32", shape: [H], data_offsets: [offset, offset + b.byteLength] };
    offset += b.byteLength;
    chunks.push(b);
  });
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // data aligned to 8 bytes
  const headerBytes = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const c of chunks) {
    Buffer.from(c.buffer, c.byteOffset, c.byteLength).copy(out, at);
    at += c.byteLength;
  }
  writeFileAtomic(file, out);
}

/** Reads a linear lens and checks it fits `model` (shape; a different model hash is a warning). */
export function readLinearLens(file: string, model: LoadedModel): LinearLens {
  if (!fs.existsSync(file)) throw new UserError(`linear lens ${file} does not exist (make one with 'logit-lens linear fit')`);
  const lens = readAffineLens(file, LINEAR_FORMAT, "a linear lens", model);
  const md = lens.metadata;
  if (md["model_sha256"] !== modelHash(model)) {
    process.stderr.write(`logit-lens: warning: ${file} was fitted on ${md["model_name"]} (sha256 ${String(md["model_sha256"]).slice(0, 12)}…), not on this model's files (${modelHash(model).slice(0, 12)}…)\n`);
  }
  return lens;
}

/**
 * Reads a file of per-layer affine maps in this module's layout (`layers.{l}.weight` [out, in],
 * `layers.{l}.bias`, l < L-1; the linear lens and the tuned lens of src/tuned/ share it) whose
 * metadata `format` is `format`, refusing one whose layer count or width differ from `model`'s.
 */
export function readAffineLens(file: string, format: string, what: string, model: LoadedModel): LinearLens {
  const st = readSafetensors(file);
  const md = st.metadata;
  if (md["format"] !== format) throw new UserError(`${file} is not ${what} (metadata format is ${JSON.stringify(md["format"] ?? null)}, expected ${format})`);
  const H = Number(md["hidden_size"]);
  const L = Number(md["n_layers"]);
  if (H !== model.config.hidden || L !== model.config.nLayers) {
    throw new UserError(`${file} was made for a model with ${L} layers x ${H} wide (${md["model_name"]}); this model has ${model.config.nLayers} x ${model.config.hidden}`);
  }
  const bytes = fs.readFileSync(file);
  const byName = new Map(st.tensors.map((t) => [t.name, t]));
  const tensor = (name: string, n: number): Float32Array => {
    const t = byName.get(name);
    if (!t || t.dtype !== "F32" || t.byteLength !== n * 4) throw new UserError(`${file}: tensor ${name} is missing or not F32 of ${n} values`);
    const out = new Float32Array(n);
    Buffer.from(out.buffer).set(bytes.subarray(t.offset, t.offset + t.byteLength));
    return out;
  };
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (let l = 0; l < L - 1; l++) {
    weights.push(tensor(`layers.${l}.weight`, H * H));
    biases.push(tensor(`layers.${l}.bias`, H));
  }
  return { hidden: H, nLayers: L, weights, biases, metadata: md, sha256: crypto.createHash("sha256").update(bytes).digest("hex") };
}

/** The translator the sweep graph takes: [L, H, H] as [in, out], the last layer the identity. */
export function translatorOf(lens: LinearLens, nLayers: number): Translator {
  const H = lens.hidden;
  const weight = new Float32Array(nLayers * H * H);
  const bias = new Float32Array(nLayers * H);
  for (let l = 0; l < nLayers; l++) {
    const off = l * H * H;
    if (l < nLayers - 1) {
      const w = lens.weights[l]!;
      for (let o = 0; o < H; o++) for (let i = 0; i < H; i++) weight[off + i * H + o] = w[o * H + i]!;
      bias.set(lens.biases[l]!, l * H);
    } else for (let i = 0; i < H; i++) weight[off + i * H + i] = 1;
  }
  return { weight, bias };
}

/**
 * The linear lens as LensOptions.translate for `logit-lens lens --lens linear:FILE`: each
 * block's hook_resid_post mapped by its fitted affine map (in JS: T x hidden^2 per layer, small
 * next to the lens itself). Other hook points have no fitted map and are refused.
 */
export function linearTranslate(lens: LinearLens): (hook: string, resid: Float32Array) => Float32Array {
  const H = lens.hidden;
  return (hook, resid) => {
    const m = /^blocks\.(\d+)\.hook_resid_post$/.exec(hook);
    if (!m) throw new UserError(`the linear lens maps hook_resid_post readouts only, not ${hook} (use --points resid_post)`);
    const l = Number(m[1]);
    if (l >= lens.nLayers - 1) return resid;
    const w = lens.weights[l]!;
    const b = lens.biases[l]!;
    const T = resid.length / H;
    const out = new Float32Array(resid.length);
    for (let t = 0; t < T; t++) {
      const x = resid.subarray(t * H, (t + 1) * H);
      for (let o = 0; o < H; o++) {
        let v = b[o]!;
        const row = o * H;
        for (let k = 0; k < H; k++) v += w[row + k]! * x[k]!;
        out[t * H + o] = v;
      }
    }
    return out;
  };
}
