#!/usr/bin/env python3
"""Reads a GGUF with the `gguf` package and prints what make_synthetic_gguf.py promises: vocabulary and
metadata, the quant type of every tensor, and mean / std / max |w| of each weight (dequantized over the
first --rows rows) for the non-layer tensors and the first two layers, plus attn_v / ffn_down types per layer.

  .venv/bin/python tools/synthetic/check_gguf.py FILE.gguf [--rows 64]
"""
import argparse

import numpy as np
from gguf import GGMLQuantizationType as QT, GGUFReader
from gguf.quants import dequantize

ap = argparse.ArgumentParser()
ap.add_argument("file")
ap.add_argument("--rows", type=int, default=64)
args = ap.parse_args()
r = GGUFReader(args.file)
f = r.fields
for key in ["general.architecture", "general.name", "general.file_type", "llama.block_count", "llama.embedding_length",
            "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
            "llama.rope.freq_base", "llama.context_length", "llama.vocab_size", "tokenizer.ggml.model",
            "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "synthetic.seed",
            "synthetic.weight_std", "synthetic.source_layers"]:
    if key in f:
        print(f"{key} = {f[key].contents()}")
print(f"tokens {len(f['tokenizer.ggml.tokens'].data)}, merges {len(f['tokenizer.ggml.merges'].data)}")
for t in r.tensors:
    if t.name.startswith("blk.") and t.name.split(".")[1] not in ("0", "1"):
        continue
    if t.tensor_type == QT.F32:
        a = np.asarray(t.data)
        print(f"{t.name:26s} F32  {[int(x) for x in t.shape]} min {a.min():.4g} max {a.max():.4g}")
        continue
    w = dequantize(np.asarray(t.data)[: args.rows], t.tensor_type)
    print(f"{t.name:26s} {t.tensor_type.name} {[int(x) for x in t.shape]} mean {w.mean():+.1e} std {w.std():.4f} max|w| {np.abs(w).max():.4f}")
    assert np.isfinite(w).all()
counts = {}
for t in r.tensors:
    counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
print("types:", counts)
for kind in ("attn_v", "ffn_down"):
    print(f"{kind}:", " ".join(f"{t.name.split('.')[1]}:{t.tensor_type.name}" for t in r.tensors if t.name.endswith(f"{kind}.weight")))
