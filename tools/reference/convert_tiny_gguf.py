#!/usr/bin/env python3
"""Convert the tiny Hugging Face fixtures to GGUF with llama.cpp's own converter.

The converter is `convert_hf_to_gguf.py` of the llama.cpp source that node-llama-cpp ships
(node_modules/node-llama-cpp/llama/gitRelease.bundle, a git bundle: clone it anywhere outside the
repository and pass the clone with --llama-cpp). It runs unchanged, except for one gap it has by
design: it names a byte-level BPE pre-tokenizer by hashing how the tokenizer splits a test string,
and refuses hashes it does not know. Our tiny tokenizers are trained for the fixtures, so their
hashes are not in its table although their pre-tokenizer regexes are exactly those of real
tokenizers. This script answers that one question from the regex in tokenizer.json (Llama 3's ->
"llama-bpe", Qwen2's -> "qwen2", GPT-2's ByteLevel -> "gpt-2") and leaves everything else (config
keys, tensor names, q/k permutation, rope factors, expert stacking) to llama.cpp.

Usage (from the repository root):
  git clone node_modules/node-llama-cpp/llama/gitRelease.bundle ../llama.cpp-src
  .venv/bin/python tools/reference/convert_tiny_gguf.py --llama-cpp ../llama.cpp-src \
      [--only llama31,phi3] [--outtype f32]
Writes test/fixtures/tiny/<name>/model.gguf for every fixture folder (or --only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "test" / "fixtures" / "tiny"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_models import LLAMA3_REGEX, QWEN2_REGEX  # noqa: E402

# Families whose tiny fixtures have no GGUF: their tokenizer is the SentencePiece-style one
# (tokenizer.json only), and llama.cpp's Gemma converter needs a sentencepiece tokenizer.model.
SKIP = {"gemma2", "gemma3"}


def pre_tokenizer_name(model_dir: Path) -> str:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    pre = tok.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    for p in pre.get("pretokenizers", []):
        regex = (p.get("pattern") or {}).get("Regex")
        if regex == LLAMA3_REGEX:
            return "llama-bpe"
        if regex == QWEN2_REGEX:
            return "qwen2"
    raise SystemExit(f"{model_dir}: unknown pre-tokenizer, cannot name it for llama.cpp")


def convert(llama_cpp: Path, model_dir: Path, outtype: str) -> Path:
    out = model_dir / "model.gguf"
    pre = pre_tokenizer_name(model_dir)
    # Run llama.cpp's converter in a child process with get_vocab_base_pre answered by name.
    code = f"""
import sys, runpy
sys.argv = ["convert_hf_to_gguf.py", {str(model_dir)!r}, "--outtype", {outtype!r}, "--outfile", {str(out)!r}]
sys.path.insert(0, {str(llama_cpp)!r})
sys.path.insert(1, {str(llama_cpp / 'gguf-py')!r})
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
runpy.run_path({str(llama_cpp / 'convert_hf_to_gguf.py')!r}, run_name="__main__")
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=llama_cpp, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{model_dir.name}: llama.cpp's converter failed:\n{run.stderr[-3000:]}")
    out.chmod(0o644)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, type=Path, help="a clone of node-llama-cpp's llama.cpp bundle")
    ap.add_argument("--only", default="")
    ap.add_argument("--outtype", default="f32", choices=["f32", "f16"])
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    commit = subprocess.run(["git", "-C", str(args.llama_cpp), "log", "-1", "--format=%H %s"], capture_output=True, text=True).stdout.strip()
    for d in sorted(FIXTURES.iterdir()):
        if not (d / "config.json").exists() or (only and d.name not in only) or (not only and d.name in SKIP):
            continue
        out = convert(args.llama_cpp, d, args.outtype)
        print(f"{d.name:13s} -> {out.relative_to(REPO)} ({out.stat().st_size / 1024:.0f} KiB), llama.cpp {commit}")


if __name__ == "__main__":
    main()
