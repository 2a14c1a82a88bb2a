/**
 * One model in F16 and in Q4_0, for the explorer's "what quantization does to the lens" comparison:
 * the real SmolLM2-135M-Instruct GGUF (published as Q4_1) written once with every matrix in F16,
 * and once with every matrix quantized to Q4_0 by round-to-nearest (test/helpers/gguf-requantize.ts).
 * Both hold the same weights before quantization (the Q4_1 file's, dequantized), so any difference
 * between their lenses is what Q4_0 does. Made at test time into the cache, never committed.
 */
import fs from "node:fs";
import path from "node:path";
import { cacheRoot } from "../../src/sources/cache.js";
import { requantizeGguf } from "../helpers/gguf-requantize.js";
import { realModelPath } from "../helpers/real-models.js";

export async function smollm2Variants(): Promise<{ f16: string; q4: string }> {
  const dir = path.join(cacheRoot(), "test-models", "smollm2-135m-instruct-variants");
  fs.mkdirSync(dir, { recursive: true });
  const source = await realModelPath("smollm2-135m-instruct");
  const out = { f16: path.join(dir, "SmolLM2-135M-Instruct.F16.gguf"), q4: path.join(dir, "SmolLM2-135M-Instruct.Q4_0.gguf") };
  const matrices = (name: string) => name.endsWith(".weight") && !name.includes("norm");
  for (const [file, type] of [[out.f16, "F16"], [out.q4, "Q4_0"]] as const) {
    if (fs.existsSync(file)) continue;
    // Written beside, then renamed: a run stopped halfway leaves no truncated model behind.
    const tmp = `${file}.${process.pid}.tmp`;
    requantizeGguf(source, tmp, type, matrices);
    fs.renameSync(tmp, file);
  }
  return out;
}
