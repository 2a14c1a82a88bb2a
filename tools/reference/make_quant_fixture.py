"""Make the GGUF fixture that test/formats/gguf.test.ts checks logit-lens's GGUF reader and dequantizer against.

What it writes (into test/fixtures/quant/, about 60 KB in all, committed):
  quant.gguf      GGUF v3 (alignment 64) with one [4, 256] tensor of every type logit-lens supports
                  (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K,
                  IQ4_NL, IQ4_XS), a 3-D F32
                  tensor [2, 3, 32] to check the ne-reversal, and metadata keys of every GGUF value
                  type (all integer widths, floats, bools, strings, string arrays, nested arrays).
  reference.json  for each tensor: name, dtype, shape (outermost first), where gguf-py's reader
                  finds its bytes (fileOffset, byteLength), and where its reference float32 values
                  start in reference.f32 (offset, count, in elements); plus the expected metadata.
  reference.f32   the reference values, little-endian float32, dequantized by gguf-py's
                  gguf.quants.dequantize (the Python port of ggml-quants.c).

Types gguf-py can quantize are quantized from random normal data; for K-quants and IQ4 (which gguf-py only
dequantizes) valid blocks are built from random bytes with small positive f16 scales. The F16 tensor
also holds the edge cases of half floats (subnormals, +-inf, NaN, -0, 65504).

Rerun (deterministic, seeded) from the repository root:
  .venv/bin/python tools/reference/make_quant_fixture.py
The venv needs `pip install gguf numpy` (gguf 0.19.0 made the committed files).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import quantize, dequantize
from gguf.constants import GGML_QUANT_SIZES

OUT = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "quant"
ROWS, COLS = 4, 256
rng = np.random.default_rng(20250101)


def random_f16_scales(n: int, lo: float, hi: float) -> np.ndarray:
    """n small positive half floats, as raw bytes (n, 2)."""
    return rng.uniform(lo, hi, size=n).astype(np.float16).view(np.uint8).reshape(n, 2)


def k_quant_blocks(qtype: T, n_blocks: int) -> np.ndarray:
    """Valid blocks of a type gguf-py only dequantizes (K-quants, IQ4): random quant bits and scale codes, realistic f16 scales."""
    r = lambda n: rng.integers(0, 256, size=(n_blocks, n), dtype=np.uint8)
    if qtype == T.Q4_K:  # d, dmin, scales[12], qs[128]
        parts = [random_f16_scales(n_blocks, 1e-3, 5e-3), random_f16_scales(n_blocks, 1e-3, 5e-3), r(12), r(128)]
    elif qtype == T.Q5_K:  # d, dmin, scales[12], qh[32], qs[128]
        parts = [random_f16_scales(n_blocks, 1e-3, 5e-3), random_f16_scales(n_blocks, 1e-3, 5e-3), r(12), r(32), r(128)]
    elif qtype == T.Q6_K:  # ql[128], qh[64], int8 scales[16], d
        parts = [r(128), r(64), r(16), random_f16_scales(n_blocks, 1e-4, 1e-3)]
    elif qtype == T.Q2_K:  # scales[16] (scale and min codes, a nibble each), qs[64], d, dmin
        parts = [r(16), r(64), random_f16_scales(n_blocks, 1e-3, 5e-3), random_f16_scales(n_blocks, 1e-3, 5e-3)]
    elif qtype == T.Q3_K:  # hmask[32], qs[64], 6-bit scales[12], d
        parts = [r(32), r(64), r(12), random_f16_scales(n_blocks, 1e-4, 1e-3)]
    elif qtype == T.IQ4_XS:  # d, scales_h (u16), scales_l[4], qs[128]
        parts = [random_f16_scales(n_blocks, 1e-4, 1e-3), r(2), r(4), r(128)]
    elif qtype == T.IQ4_NL:  # blocks of 32: d, qs[16]
        parts = [random_f16_scales(n_blocks, 1e-4, 1e-3), r(16)]
    else:
        raise ValueError(qtype)
    blocks = np.concatenate(parts, axis=1)
    assert blocks.shape[1] == GGML_QUANT_SIZES[qtype][1]
    return blocks


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gguf_path = OUT / "quant.gguf"
    w = GGUFWriter(str(gguf_path), "llama")
    w.add_custom_alignment(64)

    # Metadata of every value type. Expected values go to reference.json as [type, value], with
    # floats given as the exact value after float32 rounding where the type is FLOAT32.
    meta: dict[str, tuple[str, object]] = {}

    def kv(key: str, value: object, vtype: V, sub: V | None = None, expected: object | None = None) -> None:
        w.add_key_value(key, value, vtype, sub)
        meta[key] = (vtype.name, value if expected is None else expected)

    kv("test.u8", 200, V.UINT8)
    kv("test.i8", -100, V.INT8)
    kv("test.u16", 60000, V.UINT16)
    kv("test.i16", -30000, V.INT16)
    kv("test.u32", 4_000_000_000, V.UINT32)
    kv("test.i32", -2_000_000_000, V.INT32)
    kv("test.f32", 0.1, V.FLOAT32, expected=float(np.float32(0.1)))
    kv("test.u64", 2**53 - 1, V.UINT64)
    kv("test.i64", -(2**53 - 1), V.INT64)
    kv("test.f64", 0.1, V.FLOAT64)
    kv("test.true", True, V.BOOL)
    kv("test.false", False, V.BOOL)
    kv("test.string", "héllo 🐠\nworld", V.STRING)
    kv("test.empty_string", "", V.STRING)
    kv("test.strings", ["a", "ĠðŁ", "", "▁the", "<0x0A>"], V.ARRAY, V.STRING)
    kv("test.f32s", [0.5, -1.25, 3.0], V.ARRAY, V.FLOAT32)
    kv("test.u64s", [0, 1, 2**40], V.ARRAY, V.UINT64)
    kv("test.i8s", [-128, 0, 127], V.ARRAY, V.INT8)
    kv("test.bools", [True, False, True], V.ARRAY, V.BOOL)
    kv("test.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY, V.ARRAY)  # inner arrays are INT32
    kv("test.nested_strings", [["x"], ["y", "z"]], V.ARRAY, V.ARRAY)
    kv("test.deep", [[[7]]], V.ARRAY, V.ARRAY)
    kv("tokenizer.ggml.model", "gpt2", V.STRING)

    tensors: list[tuple[str, T, np.ndarray, tuple[int, ...]]] = []  # name, type, raw bytes, shape

    def normal(shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0, 0.05, size=shape).astype(np.float32)

    tensors.append(("t.f32", T.F32, normal((ROWS, COLS)).view(np.uint8), (ROWS, COLS)))
    f16 = normal((ROWS, COLS)).astype(np.float16)
    specials = np.array([0x0001, 0x03FF, 0x8001, 0x0400, 0x7C00, 0xFC00, 0x7E00, 0x8000, 0x7BFF, 0xFBFF, 0x3C00, 0x3555],
                        dtype=np.uint16).view(np.float16)
    f16.reshape(-1)[: len(specials)] = specials
    tensors.append(("t.f16", T.F16, f16.view(np.uint8), (ROWS, COLS)))
    bf16_src = normal((ROWS, COLS))
    bf16_src.reshape(-1)[:4] = [np.inf, -np.inf, 1e-40, -0.0]  # inf, -inf, a subnormal, -0
    for qt in (T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        src = bf16_src if qt == T.BF16 else normal((ROWS, COLS))
        tensors.append((f"t.{qt.name.lower()}", qt, quantize(src, qt), (ROWS, COLS)))
    for qt in (T.Q4_K, T.Q5_K, T.Q6_K, T.Q2_K, T.Q3_K, T.IQ4_NL, T.IQ4_XS):
        blocks = k_quant_blocks(qt, ROWS * COLS // GGML_QUANT_SIZES[qt][0])
        tensors.append((f"t.{qt.name.lower()}", qt, blocks.reshape(ROWS, -1), (ROWS, COLS)))
    tensors.append(("t.f32_3d", T.F32, normal((2, 3, 32)).view(np.uint8), (2, 3, 32)))

    refs: list[dict[str, object]] = []
    ref_values: list[np.ndarray] = []
    offset = 0
    for name, qt, raw, shape in tensors:
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(shape[:-1] + (-1,))
        w.add_tensor(name, raw, raw_dtype=qt)
        values = dequantize(raw, qt).astype(np.float32).reshape(-1)
        assert values.size == int(np.prod(shape)), (name, values.size)
        refs.append({"name": name, "dtype": qt.name, "shape": list(shape), "offset": offset, "count": int(values.size)})
        ref_values.append(values)
        offset += values.size

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Where gguf-py's own reader finds each tensor's bytes: the TS reader must agree.
    from gguf import GGUFReader
    by_name = {t.name: t for t in GGUFReader(str(gguf_path)).tensors}
    for ref in refs:
        ref["fileOffset"] = int(by_name[ref["name"]].data_offset)
        ref["byteLength"] = int(by_name[ref["name"]].n_bytes)

    np.concatenate(ref_values).astype("<f4").tofile(OUT / "reference.f32")
    meta_json = {k: {"type": t, "value": v} for k, (t, v) in meta.items()}
    (OUT / "reference.json").write_text(json.dumps({"alignment": 64, "version": 3, "tensors": refs, "metadata": meta_json},
                                                   ensure_ascii=False).replace('}, "', '},\n "').replace('}, {', '},\n {') + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(tensors)} tensors to {gguf_path} ({gguf_path.stat().st_size} bytes); fixture total {total} bytes")


if __name__ == "__main__":
    main()
