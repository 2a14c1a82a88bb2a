/**
 * Where one tensor's bytes live on disk, whatever the container (GGUF, safetensors). Loaders
 * produce these without reading tensor data; the engine decides per tensor whether to point
 * onnxruntime straight at the bytes (F32, zero copy) or convert them once.
 */
export interface TensorRef {
  /** Name inside its source file (GGUF name like `blk.0.attn_q.weight`, or HF name). */
  name: string;
  /** Row-major shape, outermost dimension first (PyTorch order; GGUF's `ne` reversed). */
  shape: number[];
  /** Source element type as named by its format: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS. */
  dtype: string;
  /** Absolute path of the file holding the bytes. */
  file: string;
  /** Absolute byte offset of the first byte in `file`. */
  offset: number;
  /** Number of bytes the tensor occupies in `file`. */
  byteLength: number;
}

/**
 * GGUF metadata values as plain JS: integers and floats as `number` (64-bit integers converted,
 * checked to be exactly representable), strings, booleans, and arrays as JS arrays.
 */
export type GgufValue = number | string | boolean | GgufValue[];
export type GgufMetadata = Map<string, GgufValue>;
