/**
 * Turns a built graph into a running onnxruntime session. The .onnx file is written next to the
 * model's weights.bin because onnxruntime resolves external data relative to the model file and
 * refuses paths outside its directory.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import ort from "onnxruntime-node";
import { ONNX_ELEM_TYPE, type GraphBuilder } from "./builder.js";
import { UserError } from "../errors.js";

export function threadCount(): number {
  const env = Number(process.env["LOGIT_LENS_THREADS"]);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, os.availableParallelism());
}

/**
 * onnxruntime execution providers, in order of preference: LOGIT_LENS_EP (for example "webgpu"),
 * else the CPU. The CPU is always the last resort, for ops the others do not have.
 * (bench/gpu-probe.ts measures what a GPU machine gives; docs/big-models.md, "GPU".)
 */
function executionProviders(): string[] {
  const wanted = (process.env["LOGIT_LENS_EP"] ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  return [...wanted.filter((p) => p !== "cpu"), "cpu"];
}

export interface SessionTuning {
  /**
   * Let kernels read weights where they lie (the memory-mapped weights file) instead of keeping a
   * re-laid-out copy. onnxruntime builds that copy next to a fully loaded original, so for a big
   * matrix (Gemma's 262k x 640 unembedding: 671 MB) session creation briefly holds it twice.
   */
  disablePrepacking?: boolean;
}

export async function createSession(g: GraphBuilder, dir: string, tuning: SessionTuning = {}): Promise<ort.InferenceSession> {
  const bytes = g.toModelProto();
  const hash = crypto.createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  const file = path.join(dir, `${g.name}-${hash}.onnx`);
  if (!fs.existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  }
  try {
    return await ort.InferenceSession.create(file, {
      executionProviders: executionProviders(),
      intraOpNumThreads: threadCount(),
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
      // Measured (bench): the memory-pattern planner pre-allocates for the largest shapes seen and
      // raised the lens's peak by ~0.7 GB at no gain in speed.
      enableMemPattern: false,
      // A graph with 16-bit matrices widens each one to fp32 next to its use (builder.ts
      // halfWeight). The arena would keep every widened copy's block for reuse, so the session
      // would end up holding the whole fp32 model again (measured: SmolLM2 F16, 0.85 GB with the
      // arena, 0.56 GB without; the fp32 model took 0.74 GB).
      enableCpuMemArena: !hasHalfWeights(g),
      executionMode: "sequential",
      logSeverityLevel: 4, // errors reach the user through our own one-line messages
      // disable_quant_qdq: no quantize/dequantize-pair rewrites, so that the DequantizeLinear nodes
      // that expand quantized matrices' scale codes are folded into constants at load
      // (graph/builder.ts, quantizedWeight) instead of running on every call.
      extra: { session: { disable_quant_qdq: "1", ...(tuning.disablePrepacking ? { disable_prepacking: "1" } : {}) } },
    });
  } catch (e) {
    throw new UserError(`onnxruntime could not load the ${g.name} graph: ${String((e as Error).message).split("\n")[0]}`);
  }
}

function hasHalfWeights(g: GraphBuilder): boolean {
  // halfWeight's raw matrices (graph inputs named `<matrix>.float16` / `.bfloat16`); the fp16 scale
  // codes of quantized matrices are small and do not count.
  const half = new Set([ONNX_ELEM_TYPE.float16, ONNX_ELEM_TYPE.bfloat16]);
  return g.inputs.some((v) => half.has(v.type?.tensorType?.elemType ?? -1) && /\.(float16|bfloat16)$/.test(v.name ?? ""));
}

export type Feeds = Record<string, ort.Tensor>;

/** Runs a session, turning onnxruntime's multi-line failures into one line that names the graph. */
export async function runSession(session: ort.InferenceSession, feeds: Feeds, what: string): Promise<ort.InferenceSession.OnnxValueMapType> {
  try {
    return await session.run(feeds);
  } catch (e) {
    throw new UserError(`onnxruntime failed while running the ${what}: ${String((e as Error).message).split("\n")[0]}`);
  }
}
export { ort };
