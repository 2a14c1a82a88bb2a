#!/usr/bin/env python3
"""Synthetic Llama 3 GGUF files: real shapes, random weights, the Q4_K_M mix of llama.cpp's quantizer.

For measuring memory and speed on big shapes without downloading big models (issue 7). The files
look like a Llama-3.1 Q4_K_M GGUF made by llama.cpp: architecture `llama`, Llama 3 hyperparameters
and a real Llama-3 BPE vocabulary (copied from llama.cpp's `ggml-vocab-llama-bpe.gguf`), RoPE base
500000 with the `rope_freqs.weight` factors that Llama 3.1 GGUFs carry, F32 norms, and the quant
types `llama-quantize ... Q4_K_M` picks (llama.cpp src/llama-quant.cpp, llama_tensor_get_type_impl):

- Q4_K for every matrix by default, token_embd.weight included;
- Q6_K for output.weight;
- Q6_K for attn_v.weight and ffn_down.weight in the layers where use_more_bits(i, n) holds:
  i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2 (16 of 32 layers, 40 of 80);
- the 70B rule: in an 80-layer model attn_v.weight that would be Q4_K becomes Q5_K.

The quant blocks are random bits (4/5/6-bit values uniform), with the block scales set so that every
weight matrix has mean 0 and a chosen standard deviation (default 0.02, like trained Llama weights):
Q4_K/Q5_K: 6-bit sub-block scales sc random in 32..63, the sub-block mins m = sc and dmin = 7.5 d
(Q5_K: 15.5 d), so w = d * sc * (q - 7.5) is centred; Q6_K: int8 scales random in +-(64..127),
w = d * sc * (q - 32). RMSNorm weights are 1. With pre-norm blocks each block's output is bounded
(inputs are normalised), so the residual grows additively, not exponentially: about 20 after 32
layers at std 0.02, nowhere near float16's range, let alone float32's.

Presets (sizes of the written file):
  llama3-8b       32 layers, hidden 4096, MLP 14336, 32 heads, 8 KV heads, vocab 128256 (4.9 GB)
  llama3-70b-cut  Llama-3-70B shapes (hidden 8192, MLP 28672, 64 heads, 8 KV heads, vocab 128256)
                  cut to --layers N (default 2). The quant types are those of the full 80-layer
                  model's layers at evenly spaced positions (round(k * 80 / N)): layers 0 and 40 for
                  N = 2, one heavy (Q6_K attn_v, ffn_down) and one light layer, like the 70B's average.
  tiny            8 layers, hidden 256, MLP 768, 8 heads, 2 KV heads (head_dim 32), vocab 8192 (the
                  7936 lowest-ranked Llama 3 tokens + its 256 special tokens, renumbered), 6.9 MB

Deterministic: the same preset, seed and options give the same bytes (numpy PCG64, one stream per
tensor). Written streaming, a chunk of rows at a time (never a whole tensor in memory), to a
.part file renamed at the end. Never into the repository.

Usage:
  .venv/bin/python tools/synthetic/make_synthetic_gguf.py llama3-8b [--out FILE_OR_DIR]
      [--seed 0] [--std 0.02] [--layers N] [--vocab-file ggml-vocab-llama-bpe.gguf] [--force]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT, GGUFReader, GGUFWriter, GGML_QUANT_SIZES

REPO = Path(__file__).resolve().parents[2]
ALIGNMENT = 32
# Rows are produced in chunks of about this many bytes: memory stays small, bytes stay deterministic.
CHUNK_BYTES = 32 << 20
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15

# Meta-Llama-3-8B-Instruct's chat template (tokenizer_config.json).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    name: str
    n_layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int | None  # None: the whole Llama 3 vocabulary (128256)
    full_layers: int | None = None  # the uncut model's layer count (its quant mix)
    context: int = 131072
    description: str = ""


PRESETS = {
    "llama3-8b": Preset("llama3-8b", 32, 4096, 14336, 32, 8, None,
                        description="Llama-3.1-8B shapes"),
    "llama3-70b-cut": Preset("llama3-70b-cut", 2, 8192, 28672, 64, 8, None, full_layers=80,
                             description="Llama-3.1-70B shapes, cut to a few of its 80 layers"),
    "tiny": Preset("tiny", 8, 256, 768, 8, 2, 8192, context=8192,
                   description="tiny Llama-3-style model for tests"),
}


# ----------------------------------------------------------------------------- the Q4_K_M mix

def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp's use_more_bits (C++ integer division; i - n/8 < 0 is cut short by the first test)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def q4_k_m_type(kind: str, i_layer: int, n_layers: int) -> QT:
    """The type llama-quantize gives a llama tensor for Q4_K_M (no experts, untied output)."""
    if kind == "output":
        return QT.Q6_K
    if kind == "attn_v":
        t = QT.Q6_K if use_more_bits(i_layer, n_layers) else QT.Q4_K
        if n_layers == 80 and t == QT.Q4_K:  # LLM_TYPE_70B: attn_v is 8x smaller than attn_q, give it more bits
            t = QT.Q5_K
        return t
    if kind == "ffn_down":
        return QT.Q6_K if use_more_bits(i_layer, n_layers) else QT.Q4_K
    return QT.Q4_K  # token_embd, attn_q, attn_k, attn_output, ffn_gate, ffn_up


def q3_k_m_type(kind: str, i_layer: int, n_layers: int) -> QT:
    """The type llama-quantize gives a llama tensor for Q3_K_M (GQA >= 4, no experts, untied output)."""
    if kind == "output":
        return QT.Q6_K
    if kind == "attn_v":
        return QT.Q5_K if i_layer < 2 else QT.Q4_K
    if kind == "ffn_down":
        return QT.Q5_K if i_layer < n_layers // 16 else QT.Q4_K
    if kind == "attn_output":
        return QT.Q4_K
    return QT.Q3_K  # token_embd, attn_q, attn_k, ffn_gate, ffn_up


def iq4_xs_type(kind: str, i_layer: int, n_layers: int) -> QT:
    """The type llama-quantize gives a llama tensor for IQ4_XS without an importance matrix (GQA >= 4)."""
    if kind == "output":
        return QT.Q6_K
    if kind == "attn_v":
        return QT.Q5_K
    if kind == "ffn_down" and i_layer < n_layers // 8:
        return QT.Q5_K
    return QT.IQ4_XS


# name -> (type rule, llama_ftype id)
MIXES = {"q4_k_m": (q4_k_m_type, 15), "q3_k_m": (q3_k_m_type, 12), "iq4_xs": (iq4_xs_type, 30)}


# ----------------------------------------------------------------------------- random blocks

def _mean_square(lo: int, hi: int) -> float:
    k = np.arange(lo, hi + 1, dtype=np.float64)
    return float((k * k).mean())


# Q4_K / Q5_K 6-bit sub-block scales are drawn from 32..63, Q6_K int8 scales from +-(64..127),
# Q3_K and IQ4_XS signed 6-bit codes from +-(16..31).
SC_LO, SC_HI = 32, 63
Q6_SC_LO, Q6_SC_HI = 64, 127
S6_LO, S6_HI = 16, 31
IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float64)


def block_d(qtype: QT, std: float) -> np.float16:
    """The super-block scale d that gives weights of standard deviation `std` (before f16 rounding)."""
    if qtype == QT.Q4_K:
        var_q = (16 ** 2 - 1) / 12  # q uniform in 0..15, centred by the min: q - 7.5
        ms = _mean_square(SC_LO, SC_HI)
    elif qtype == QT.Q5_K:
        var_q = (32 ** 2 - 1) / 12
        ms = _mean_square(SC_LO, SC_HI)
    elif qtype == QT.Q6_K:
        var_q = (64 ** 2 - 1) / 12 + 0.25  # q - 32, q uniform in 0..63: mean -0.5
        ms = _mean_square(Q6_SC_LO, Q6_SC_HI)
    elif qtype == QT.Q3_K:
        var_q = (8 ** 2 - 1) / 12 + 0.25  # q uniform in -4..3: mean -0.5 (a signed scale makes the mean 0)
        ms = _mean_square(S6_LO, S6_HI)
    elif qtype == QT.IQ4_XS:
        var_q = float((IQ4_LEVELS ** 2).mean())  # levels uniform, mean -5.9 (a signed scale makes the mean 0)
        ms = _mean_square(S6_LO, S6_HI)
    else:
        raise ValueError(qtype)
    return np.float16(std / math.sqrt(var_q * ms))


def pack_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """8 six-bit scales and 8 six-bit mins -> the 12 bytes of Q4_K/Q5_K (inverse of get_scale_min_k4)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def random_blocks(rng: np.random.Generator, qtype: QT, n_blocks: int, d: np.float16) -> np.ndarray:
    """n_blocks random blocks of qtype, [n_blocks, type_size] uint8."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    raw = np.frombuffer(rng.bytes(n_blocks * type_size), dtype=np.uint8).reshape(n_blocks, type_size).copy()
    d16 = np.full(n_blocks, d, dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)
    if qtype in (QT.Q4_K, QT.Q5_K):
        # layout: d f16, dmin f16, scales[12], (Q5_K: qh[32]), qs[...]; w = d*sc*q - dmin*m
        half = 7.5 if qtype == QT.Q4_K else 15.5
        sc = rng.integers(SC_LO, SC_HI + 1, size=(n_blocks, 8), dtype=np.uint8)
        raw[:, 0:2] = d16
        raw[:, 2:4] = np.full(n_blocks, np.float16(half * float(d)), dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)
        raw[:, 4:16] = pack_k_scales(sc, sc)  # m = sc and dmin = half * d: w = d*sc*(q - half)
    elif qtype == QT.Q6_K:
        # layout: ql[128], qh[64], scales[16] int8, d f16; w = d*sc*(q - 32)
        mag = rng.integers(Q6_SC_LO, Q6_SC_HI + 1, size=(n_blocks, 16), dtype=np.int16)
        sign = np.where(rng.integers(0, 2, size=(n_blocks, 16), dtype=np.int8) == 1, 1, -1).astype(np.int16)
        raw[:, 192:208] = (mag * sign).astype(np.int8).view(np.uint8)
        raw[:, 208:210] = d16
    elif qtype in (QT.Q3_K, QT.IQ4_XS):
        # signed 6-bit codes c in +-(16..31), stored as c + 32; w = d*c*q
        mag = rng.integers(S6_LO, S6_HI + 1, size=(n_blocks, 16 if qtype == QT.Q3_K else 8), dtype=np.int16)
        sign = np.where(rng.integers(0, 2, size=mag.shape, dtype=np.int8) == 1, 1, -1).astype(np.int16)
        code = (mag * sign + 32).astype(np.uint8)
        if qtype == QT.Q3_K:
            # layout: hmask[32], qs[64], scales[12], d f16 (the 6-bit packing of Q3_K.dequantize_blocks)
            packed = np.zeros((n_blocks, 12), dtype=np.uint8)
            for i in range(16):
                packed[:, i % 8] |= (code[:, i] & 15) << (4 * (i // 8))
                packed[:, 8 + i % 4] |= ((code[:, i] >> 4) & 3) << (2 * (i // 4))
            raw[:, 96:108] = packed
            raw[:, 108:110] = d16
        else:
            # layout: d f16, scales_h u16, scales_l[4], qs[128]
            raw[:, 0:2] = d16
            high = np.zeros(n_blocks, dtype=np.uint16)
            low = np.zeros((n_blocks, 4), dtype=np.uint8)
            for ib in range(8):
                high |= ((code[:, ib] >> 4) & 3).astype(np.uint16) << (2 * ib)
                low[:, ib // 2] |= (code[:, ib] & 15) << (4 * (ib % 2))
            raw[:, 2:4] = high.view(np.uint8).reshape(n_blocks, 2)
            raw[:, 4:8] = low
    else:
        raise ValueError(qtype)
    return raw


# ----------------------------------------------------------------------------- vocabulary

def cache_root() -> Path:
    if os.environ.get("LOGIT_LENS_CACHE", "").strip():
        return Path(os.path.expanduser(os.environ["LOGIT_LENS_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(os.path.expanduser(xdg)) if xdg else Path.home() / ".cache") / "logit-lens"


def find_vocab(given: str | None) -> Path:
    """ggml-vocab-llama-bpe.gguf: --vocab-file, else <cache>/llamacpp-vocab/ (where the tokenizer test
    puts llama.cpp's vocab files), else extracted with git from node-llama-cpp's llama.cpp source bundle
    into that folder (all ggml-vocab-* files, as the test does)."""
    if given:
        return Path(given)
    name = "ggml-vocab-llama-bpe.gguf"
    folder = cache_root() / "llamacpp-vocab"
    if (folder / name).exists():
        return folder / name
    bundle = REPO / "node_modules" / "node-llama-cpp" / "llama" / "gitRelease.bundle"
    if not bundle.exists():
        raise SystemExit(f"{name} not found in {folder} and no llama.cpp bundle at {bundle} (npm ci first, or --vocab-file)")
    print(f"extracting llama.cpp vocab files from {bundle}", flush=True)
    with tempfile.TemporaryDirectory(prefix="logit-lens-llamacpp-") as tmp:
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(bundle), tmp], check=True)
        subprocess.run(["git", "-C", tmp, "checkout", "--quiet", "HEAD", "--", "models"], check=True)
        staging = Path(f"{folder}.tmp-{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        for f in (Path(tmp) / "models").glob("ggml-vocab-*"):
            shutil.copyfile(f, staging / f.name)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder / name


@dataclass
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos: int
    eos: int  # <|eot_id|>, as in Llama 3 Instruct GGUFs
    model: str
    pre: str


def load_vocab(path: Path, size: int | None) -> Vocab:
    r = GGUFReader(path)
    f = r.fields
    tokens = list(f["tokenizer.ggml.tokens"].contents())
    types = [int(t) for t in f["tokenizer.ggml.token_type"].contents()]
    merges = list(f["tokenizer.ggml.merges"].contents())
    assert f["tokenizer.ggml.pre"].contents() == "llama-bpe", "not the Llama 3 vocabulary"
    assert len(tokens) == 128256 and tokens[128000] == "<|begin_of_text|>" and tokens[128009] == "<|eot_id|>"
    n_special = len(tokens) - 128000
    bos, eot = 128000, 128009
    if size is not None and size < len(tokens):
        # Keep the (size - 256) lowest-ranked regular tokens (ids 0..255 are the 256 bytes, so every
        # text still encodes) and the merges among them, then the 256 special tokens, renumbered.
        keep = size - n_special
        assert keep >= 256
        index = {t: i for i, t in enumerate(tokens[:keep])}
        kept = []
        for m in merges:
            a, b = m.split(" ", 1)
            if a in index and b in index and (a + b) in index:
                kept.append(m)
        tokens = tokens[:keep] + tokens[128000:]
        types = types[:keep] + types[128000:]
        merges = kept
        bos, eot = keep + (bos - 128000), keep + (eot - 128000)
    return Vocab(tokens, types, merges, bos, eot, f["tokenizer.ggml.model"].contents(), "llama-bpe")


# ----------------------------------------------------------------------------- the model

def rope_freqs(head_dim: int, base: float = 500000.0, factor: float = 8.0, low_freq_factor: float = 1.0,
               high_freq_factor: float = 4.0, old_context_len: int = 8192) -> np.ndarray:
    """Llama 3.1 rope scaling factors, as llama.cpp's converter writes them (conversion/llama.py)."""
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    out = []
    for freq in freqs.astype(np.float32):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_freq_wavelen:
            out.append(1.0)
        elif wavelen > low_freq_wavelen:
            out.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, int] | tuple[int]  # numpy order: (rows, row_length) or (length,)
    qtype: QT
    f32_value: np.ndarray | None = None  # for F32 tensors: the data (small)

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        n = int(np.prod(self.shape))
        return n // block * size


def plan_tensors(p: Preset, n_layers: int, vocab: int, mix: str = "q4_k_m") -> tuple[list[TensorPlan], list[int]]:
    """Tensors in the order llama.cpp's converter writes them, and the source layer of each layer."""
    head_dim = p.hidden // p.heads
    full = p.full_layers or n_layers
    type_of = MIXES[mix][0]
    if p.full_layers:
        source = [round(k * full / n_layers) for k in range(n_layers)]
    else:
        source = list(range(n_layers))
    t: list[TensorPlan] = [
        TensorPlan("rope_freqs.weight", (head_dim // 2,), QT.F32, rope_freqs(head_dim)),
        TensorPlan("token_embd.weight", (vocab, p.hidden), type_of("token_embd", 0, full)),
    ]
    kv = p.kv_heads * head_dim
    ones = np.ones(p.hidden, dtype=np.float32)
    for i in range(n_layers):
        s = source[i]
        b = f"blk.{i}."
        t += [
            TensorPlan(b + "attn_k.weight", (kv, p.hidden), type_of("attn_k", s, full)),
            TensorPlan(b + "attn_norm.weight", (p.hidden,), QT.F32, ones),
            TensorPlan(b + "attn_output.weight", (p.hidden, p.hidden), type_of("attn_output", s, full)),
            TensorPlan(b + "attn_q.weight", (p.hidden, p.hidden), type_of("attn_q", s, full)),
            TensorPlan(b + "attn_v.weight", (kv, p.hidden), type_of("attn_v", s, full)),
            TensorPlan(b + "ffn_down.weight", (p.hidden, p.ffn), type_of("ffn_down", s, full)),
            TensorPlan(b + "ffn_gate.weight", (p.ffn, p.hidden), type_of("ffn_gate", s, full)),
            TensorPlan(b + "ffn_norm.weight", (p.hidden,), QT.F32, ones),
            TensorPlan(b + "ffn_up.weight", (p.ffn, p.hidden), type_of("ffn_up", s, full)),
        ]
    t += [
        TensorPlan("output.weight", (vocab, p.hidden), type_of("output", 0, full)),
        TensorPlan("output_norm.weight", (p.hidden,), QT.F32, ones),
    ]
    return t, source


def write_tensor(fout, rng: np.random.Generator, plan: TensorPlan, std: float) -> None:
    if plan.qtype == QT.F32:
        assert plan.f32_value is not None
        plan.f32_value.astype("<f4").tofile(fout)
        return
    rows, cols = plan.shape
    block, size = GGML_QUANT_SIZES[plan.qtype]
    assert cols % block == 0, f"{plan.name}: row length {cols} is not a multiple of {block}"
    per_row = cols // block
    d = block_d(plan.qtype, std)
    rows_per_chunk = max(1, CHUNK_BYTES // (per_row * size))
    for r0 in range(0, rows, rows_per_chunk):
        n = min(rows_per_chunk, rows - r0)
        random_blocks(rng, plan.qtype, n * per_row, d).tofile(fout)


def default_out_dir() -> Path:
    if os.environ.get("LOGIT_LENS_SYNTHETIC_DIR", "").strip():
        return Path(os.environ["LOGIT_LENS_SYNTHETIC_DIR"])
    return cache_root() / "synthetic"


def build(preset: Preset, out: Path, *, seed: int, std: float, n_layers: int, vocab_file: Path,
          quiet: bool = False, mix: str = "q4_k_m") -> dict:
    t0 = time.time()
    vocab = load_vocab(vocab_file, preset.vocab)
    V = len(vocab.tokens)
    tensors, source = plan_tensors(preset, n_layers, V, mix)
    head_dim = preset.hidden // preset.heads

    w = GGUFWriter(None, "llama")
    w.add_name(f"synthetic-{preset.name}" + (f"-{n_layers}l" if preset.full_layers else "") + f"-{mix}")
    w.add_description(f"{preset.description}; RANDOM WEIGHTS (std {std}, seed {seed}) made by "
                      "logit-lens tools/synthetic/make_synthetic_gguf.py: not a language model")
    w.add_context_length(preset.context)
    w.add_embedding_length(preset.hidden)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(preset.ffn)
    w.add_head_count(preset.heads)
    w.add_head_count_kv(preset.kv_heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(MIXES[mix][1])
    w.add_vocab_size(V)
    w.add_rope_dimension_count(head_dim)
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.token_types)
    w.add_token_merges(vocab.merges)
    w.add_bos_token_id(vocab.bos)
    w.add_eos_token_id(vocab.eos)
    w.add_chat_template(LLAMA3_CHAT_TEMPLATE)
    w.add_quantization_version(2)
    w.add_uint32("synthetic.seed", seed)
    w.add_float32("synthetic.weight_std", std)
    if preset.full_layers:
        w.add_uint32("synthetic.full_block_count", preset.full_layers)
        w.add_array("synthetic.source_layers", source)

    for t in tensors:
        if t.qtype == QT.F32:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes)
        else:
            byte_shape = (t.shape[0], t.shape[1] // GGML_QUANT_SIZES[t.qtype][0] * GGML_QUANT_SIZES[t.qtype][1])
            w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    w.write_header_to_file(part)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    total = sum(t.nbytes for t in tensors)
    done = 0
    last = 0.0
    for index, t in enumerate(tensors):
        w.write_padding(fout, fout.tell(), ALIGNMENT)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
        write_tensor(fout, rng, t, std)
        w.write_padding(fout, t.nbytes, ALIGNMENT)
        done += t.nbytes
        if not quiet and (time.time() - last > 5 or index == len(tensors) - 1):
            last = time.time()
            print(f"  {done / 1e9:6.2f} / {total / 1e9:.2f} GB  {t.name}", flush=True)
    w.close()
    part.replace(out)
    counts: dict[str, int] = {}
    for t in tensors:
        counts[t.qtype.name] = counts.get(t.qtype.name, 0) + 1
    return {"path": str(out), "bytes": out.stat().st_size, "seconds": round(time.time() - t0, 1),
            "tensors": len(tensors), "types": counts, "vocab": V, "layers": n_layers, "source_layers": source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("--out", help="output file (.gguf) or folder (default: $LOGIT_LENS_SYNTHETIC_DIR, "
                                  "else <logit-lens cache>/synthetic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="standard deviation of every weight matrix")
    ap.add_argument("--layers", type=int, help="number of layers (default: the preset's; llama3-70b-cut: 2)")
    ap.add_argument("--vocab-file", help="ggml-vocab-llama-bpe.gguf (default: found or extracted, see find_vocab)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing file")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--mix", choices=sorted(MIXES), default="q4_k_m",
                    help="llama-quantize's type choice to copy (default q4_k_m)")
    args = ap.parse_args()

    preset = PRESETS[args.preset]
    n_layers = args.layers or preset.n_layers
    if n_layers < 1 or (preset.full_layers and n_layers > preset.full_layers):
        raise SystemExit(f"--layers must be 1..{preset.full_layers or 'any'}")
    default_name = f"synthetic-{preset.name}" + (f"-{n_layers}l" if preset.full_layers or args.layers else "") \
        + (f"-seed{args.seed}" if args.seed else "") + f"-{args.mix}.gguf"
    out = Path(args.out) if args.out else default_out_dir()
    if out.suffix != ".gguf":
        out = out / default_name
    out = out.resolve()
    if out == REPO or REPO in out.parents:
        raise SystemExit(f"{out} is inside the repository: synthetic models are never written there")
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists (--force to overwrite)")
    vocab_file = find_vocab(args.vocab_file)
    print(f"{preset.name}: {n_layers} layers, hidden {preset.hidden}, MLP {preset.ffn}, heads {preset.heads}/"
          f"{preset.kv_heads}, seed {args.seed}, std {args.std} -> {out}", flush=True)
    info = build(preset, out, seed=args.seed, std=args.std, n_layers=n_layers, vocab_file=vocab_file, quiet=args.quiet, mix=args.mix)
    print(f"wrote {info['path']}: {info['bytes'] / 1e9:.3f} GB ({info['bytes']:,} bytes), {info['tensors']} tensors "
          f"{info['types']}, vocab {info['vocab']}, in {info['seconds']} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
