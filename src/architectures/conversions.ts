/**
 * Conversions between llama.cpp's tensor layouts and transformers': pure functions on fp32 data,
 * applied once when the weights are converted (weight-store.ts). Each family says which of its
 * tensors need which, next to the reason.
 */
import type { TensorRef } from "../formats/tensor-ref.js";
import type { TensorTransform } from "../formats/weight-store.js";

/**
 * Undo llama.cpp's q/k row permutation (convert_hf_to_gguf.py `LlamaModel.permute`; transformers'
 * `reverse_permute`). llama.cpp rotates interleaved pairs (x0,x1),(x2,x3)...; transformers rotates
 * halves (x_i, x_{i+d/2}). So for the Llama-rotary families the converter reorders each head's rows
 * from halves to pairs; this puts them back. A pure row permutation.
 */
export function unpermuteRows(heads: number): TensorTransform {
  return {
    id: `unpermute${heads}`,
    apply(data, shape) {
      const rows = shape[0]!;
      const cols = data.length / rows;
      const half = rows / heads / 2;
      const out = new Float32Array(data.length);
      for (let h = 0; h < heads; h++) {
        for (let j = 0; j < 2; j++) {
          for (let i = 0; i < half; i++) {
            const from = h * 2 * half + i * 2 + j; // GGUF row: pairs interleaved
            const to = h * 2 * half + j * half + i; // HF row: halves
            out.set(data.subarray(from * cols, (from + 1) * cols), to * cols);
          }
        }
      }
      return { data: out, shape };
    },
  };
}

/** Gemma's RMSNorm scales by (1 + w): transformers stores w, llama.cpp stores 1 + w. */
export const minusOne: TensorTransform = {
  id: "minus1",
  apply(data, shape) {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = data[i]! - 1;
    return { data: out, shape };
  },
};

/** GPT-2's Conv1D stores [in, out]; llama.cpp stores [out, in]. (model.ts knows this id's shape.) */
export const transpose2d: TensorTransform = {
  id: "transpose",
  apply(data, shape) {
    const [rows, cols] = shape as [number, number];
    const out = new Float32Array(data.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
    return { data: out, shape: [cols, rows] };
  },
};

/**
 * One expert's matrix out of llama.cpp's stacked `ffn_*_exps` tensor [experts, rows, cols]: a view
 * of the same bytes (each expert is a whole number of rows, so of quantization blocks too).
 */
export function expertSlice(ref: TensorRef, expert: number): TensorRef {
  const [n, ...rest] = ref.shape;
  const bytes = ref.byteLength / n!;
  return { ...ref, name: `${ref.name}[${expert}]`, shape: rest, offset: ref.offset + expert * bytes, byteLength: bytes };
}
