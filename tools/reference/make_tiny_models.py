#!/usr/bin/env python3
"""Build tiny random-weight Hugging Face models (+ real tiny tokenizers) and their reference activations.

Writes test/fixtures/tiny/<name>/ for every model in MODELS: config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json (+ chat_template.jinja for one model),
reference.safetensors and reference.json. Everything is seeded: running it twice gives identical
files (same torch / transformers / tokenizers versions). See README.md in this folder.

Usage:  .venv/bin/python tools/reference/make_tiny_models.py [--out test/fixtures/tiny] [--only gemma2,...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(2)

from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooks import dump_json, record  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------------------------
# Fixed training text for the tiny tokenizers. 🐠 (U+1F420) is deliberately absent, so that the
# SentencePiece-style tokenizer has to byte-fall-back on it (<0xF0><0x9F><0x90><0xA0>); other
# emoji are present, so the byte-level tokenizers learn the shared prefix bytes (F0 9F = "ðŁ").
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs home.
Once upon a time there was a little model that wanted to know what every layer was thinking.
It looked at the residual stream and asked: what would you say if you were the last layer?
The first layers said nothing useful; the middle layers started to guess; the last layer knew.
Hello world! Hello there, how are you today? I am fine, thank you. What is your name?
My name is Lens. I show the logits of each layer, one token at a time, for every position.
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.
Numbers: 1, 2, 3, 10, 42, 100, 2024, 3.14, 1000000. Dates like 2025-01-31 and times like 12:30.
Is there a seahorse emoji? People often think so, but the model answers with a fish or a horse.
Fish: 🐟 🐟 🐡 horse: 🐴 🐴 🐎 sea: 🌊 🌊 smile: 😀 😀 😃 heart: ❤️ ❤ star: ⭐ 🌟 fire: 🔥 🔥
emoji emoji emoji, fish emoji, horse emoji, sea horse, seahorse, sea-horse, ocean animals.
Code: def f(x): return x * 2  # comment
    if (a && b) { print("ok"); } else { print('no'); }
User: please write a short poem about the sea.
Assistant: The sea is wide, the sea is deep; the fish swim by while sailors sleep.
Résumé, café, naïve, Zürich, São Paulo, 東京.
She said "yes", he said 'no', they said maybe... and we waited -- again and again!
"""

PROMPTS = [
    "Hello world",
    "The capital of France is Paris. The capital of Italy is",
    "Fish emoji: 🐠",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_BOS_TEMPLATE = "{{ bos_token }}" + CHATML_TEMPLATE
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
CHAT_EXAMPLE = [
    {"role": "system", "content": "You are a tiny test model."},
    {"role": "user", "content": "Is there a seahorse emoji?"},
]

# Pre-tokenizer regexes of real tokenizers (GPT-4 / Llama-3 style and Qwen2 style).
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

VOCAB = 512
BYTELEVEL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]  # ids 0..4
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]  # ids 0..5, as Gemma


def corpus_lines():
    return [l for l in CORPUS.splitlines() if l.strip()] * 3


def make_bytelevel_tokenizer(style: str, bos: str | None) -> Tokenizer:
    """GPT-2 style byte-level BPE. style: 'gpt2' (ByteLevel's own regex) or a Split regex + ByteLevel."""
    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        regex = {"llama3": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}[style]
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=BYTELEVEL_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    bl = processors.ByteLevel(trim_offsets=False)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence(
            [
                bl,
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
                ),
            ]
        )
    else:
        tok.post_processor = bl
    return tok


def make_spm_tokenizer() -> Tokenizer:
    """SentencePiece-style BPE as Gemma ships it in tokenizer.json: spaces -> '▁' (no dummy prefix),
    byte_fallback with <0x00>..<0xFF> tokens (ids 6..261), <bos> prepended by the post-processor."""
    train = Tokenizer(models.BPE(unk_token="<unk>"))
    train.normalizer = normalizers.Replace(" ", "▁")
    train.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 256, special_tokens=GEMMA_SPECIALS, show_progress=False)
    train.train_from_iterator(corpus_lines(), trainer)
    trained = json.loads(train.to_str())["model"]
    vocab: dict[str, int] = {}
    for t in GEMMA_SPECIALS:
        vocab[t] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    assert len(vocab) == VOCAB, len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos>:0 $A:0", pair="<bos>:0 $A:0 <bos>:1 $B:1", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return tok


# ----------------------------------------------------------------------------------------------
# Model specs. Common shape: hidden 64, 4 query heads, 2 KV heads (GQA), head_dim 16,
# intermediate 128, 2 layers (gemma3: 3), max positions 128, float32.

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
)


def spec_list():
    bl = dict(family="bytelevel")
    return [
        dict(name="llama", seed=1, cls=LlamaForCausalLM, cfg=LlamaConfig, tok=("llama3", "<s>"), eos="</s>",
             kw=dict(tie_word_embeddings=True, rope_theta=10000.0, hidden_act="silu"),
             chat=CHATML_BOS_TEMPLATE, notes="Llama, tied embeddings, BOS <s> added by the tokenizer.", **bl),
        dict(name="llama_untied", seed=2, cls=LlamaForCausalLM, cfg=LlamaConfig, tok=("llama3", "<s>"), eos="</s>",
             kw=dict(tie_word_embeddings=False, rope_theta=500000.0, hidden_act="silu"),
             chat=CHATML_BOS_TEMPLATE, notes="Llama with UNTIED lm_head (lm_head.weight stored), rope_theta 5e5.", **bl),
        dict(name="llama31", seed=9, cls=LlamaForCausalLM, cfg=LlamaConfig, tok=("llama3", "<s>"), eos="</s>",
             kw=dict(tie_word_embeddings=True, hidden_act="silu",
                     rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=64)),
             chat=CHATML_BOS_TEMPLATE,
             notes="Llama 3.1/3.2/3.3 rotary scaling (rope_type llama3): factor 8, low/high freq factors 1/4, "
                   "original_max_position_embeddings 64, so with head_dim 16 and base 1e4 the 8 frequencies fall in "
                   "all three bands (wavelength < 16 kept, 16..64 smoothed, > 64 divided by 8).", **bl),
        dict(name="mistral", seed=3, cls=MistralForCausalLM, cfg=MistralConfig, tok=("llama3", "<s>"), eos="</s>",
             kw=dict(tie_word_embeddings=True, sliding_window=4096, rope_theta=1000000.0),
             chat=CHATML_BOS_TEMPLATE,
             notes="Mistral, tied (to keep the fixtures small); sliding_window 4096 is larger than every prompt (no effect here).", **bl),
        dict(name="qwen2", seed=4, cls=Qwen2ForCausalLM, cfg=Qwen2Config, tok=("qwen2", None), eos="<|im_end|>",
             kw=dict(tie_word_embeddings=True, use_sliding_window=False, rope_theta=1000000.0),
             chat=CHATML_TEMPLATE, notes="Qwen2, tied, q/k/v projections have biases (o_proj none), no BOS.", **bl),
        dict(name="qwen3", seed=5, cls=Qwen3ForCausalLM, cfg=Qwen3Config, tok=("qwen2", None), eos="<|im_end|>",
             kw=dict(tie_word_embeddings=True, use_sliding_window=False, rope_theta=1000000.0, attention_bias=False),
             chat=CHATML_TEMPLATE, jinja=True,
             notes="Qwen3, tied, per-head RMSNorm q_norm/k_norm before RoPE, no BOS. "
                   "Chat template saved as chat_template.jinja (not in tokenizer_config.json).", **bl),
        dict(name="gemma2", seed=6, cls=Gemma2ForCausalLM, cfg=Gemma2Config, family="spm", chat=GEMMA_TEMPLATE,
             kw=dict(tie_word_embeddings=True, query_pre_attn_scalar=32, sliding_window=4,
                     attn_logit_softcapping=3.0, final_logit_softcapping=4.0, rope_theta=10000.0,
                     hidden_activation="gelu_pytorch_tanh"),
             notes="Gemma2: embeddings scaled by sqrt(64)=8, (1+w) RMSNorms incl. sandwich norms, "
                   "attn softcap 3, final softcap 4, query_pre_attn_scalar 32 (head_dim 16), "
                   "layer_types [sliding(4), full]."),
        dict(name="gemma3", seed=7, cls=Gemma3ForCausalLM, cfg=Gemma3TextConfig, family="spm", chat=GEMMA_TEMPLATE,
             kw=dict(tie_word_embeddings=True, num_hidden_layers=3, query_pre_attn_scalar=24, sliding_window=4,
                     layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                     rope_theta=1000000.0, rope_local_base_freq=100.0, hidden_activation="gelu_pytorch_tanh"),
             notes="Gemma3 text: embeddings scaled by 8, (1+w) RMSNorms incl. q_norm/k_norm, no soft-capping, "
                   "query_pre_attn_scalar 24, layer_types [sliding(4), full, sliding(4)], "
                   "RoPE base 1e6 for full layers and 100 (rope_local_base_freq) for sliding layers."),
        dict(name="olmo2", seed=10, cls=Olmo2ForCausalLM, cfg=Olmo2Config, tok=("qwen2", None), eos="<|endoftext|>",
             kw=dict(tie_word_embeddings=False, rope_theta=500000.0, hidden_act="silu", attention_bias=False),
             chat=CHATML_TEMPLATE,
             notes="OLMo 2: norms after attention and MLP (no pre-norms), q_norm/k_norm RMSNorm over the whole "
                   "projection (weights [heads*head_dim]), untied lm_head, no BOS.", **bl),
        dict(name="phi3", seed=11, cls=Phi3ForCausalLM, cfg=Phi3Config, tok=("qwen2", None), eos="<|endoftext|>",
             kw=dict(tie_word_embeddings=False, hidden_act="silu", sliding_window=None, original_max_position_embeddings=16,
                     rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=16,
                                          short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0],
                                          long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 8.0, 12.0, 16.0])),
             chat=CHATML_TEMPLATE, tokenizer_class="GPT2Tokenizer",
             notes="Phi-3 / Phi-4: fused qkv_proj (q|k|v rows) and gate_up_proj (gate|up rows), untied, LongRoPE with "
                   "original_max_position_embeddings 16 and max 128 (attention factor sqrt(1+ln 8/ln 16)): prompt 1 "
                   "(> 16 tokens) uses the long factors, prompts 0 and 2 the short ones. tokenizer_class GPT2Tokenizer "
                   "as Phi-4 (llama.cpp's converter reads the vocabulary as GPT-2 BPE then).", **bl),
        dict(name="mistral_nemo", seed=12, cls=MistralForCausalLM, cfg=MistralConfig, tok=("llama3", "<s>"), eos="</s>",
             kw=dict(tie_word_embeddings=True, head_dim=32, sliding_window=None, rope_theta=1000000.0),
             chat=CHATML_BOS_TEMPLATE,
             notes="Mistral-Nemo style: head_dim 32 while hidden / heads = 16 (q_proj [128, 64], o_proj [64, 128]).", **bl),
        dict(name="qwen3moe", seed=13, cls=Qwen3MoeForCausalLM, cfg=Qwen3MoeConfig, tok=("qwen2", None), eos="<|im_end|>",
             kw=dict(tie_word_embeddings=True, use_sliding_window=False, rope_theta=1000000.0, attention_bias=False,
                     num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                     decoder_sparse_step=1, mlp_only_layers=[]),
             chat=CHATML_TEMPLATE,
             notes="Qwen3-MoE: Qwen3 attention, 4 experts of width 32, top-2 renormalised (norm_topk_prob), tied. "
                   "Router choices recorded as blocks.{l}.mlp.hook_expert_indices / hook_expert_weights [T, 2].", **bl),
        dict(name="gpt2", seed=8, cls=GPT2LMHeadModel, cfg=GPT2Config, tok=("gpt2", None), eos="<|endoftext|>",
             kw=dict(n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=128, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                     tie_word_embeddings=True),
             chat=CHATML_TEMPLATE,
             notes="GPT-2: learned position embeddings (hook_pos_embed), LayerNorm with bias, fused c_attn "
                   "(Conv1D, weight [in, out]), gelu_new, tied, no BOS, 4 heads x 16 (no GQA).", **bl),
    ]


def build_tokenizer(spec):
    if spec["family"] == "spm":
        tok = make_spm_tokenizer()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
            additional_special_tokens=["<start_of_turn>", "<end_of_turn>"], add_bos_token=True, add_eos_token=False,
        )
        ids = dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    else:
        style, bos = spec["tok"]
        tok = make_bytelevel_tokenizer(style, bos)
        eos = spec["eos"]
        kw = dict(eos_token=eos, pad_token="<|endoftext|>")
        if bos is not None:
            kw["bos_token"] = bos
        if spec["name"] == "gpt2":
            kw.update(bos_token="<|endoftext|>", unk_token="<|endoftext|>")
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
        ids = dict(
            bos_token_id=tok.token_to_id(kw["bos_token"]) if "bos_token" in kw else None,
            eos_token_id=tok.token_to_id(eos),
            pad_token_id=tok.token_to_id("<|endoftext|>"),
        )
    fast.chat_template = spec["chat"]
    fast.model_max_length = 128
    return fast, ids


def init_weights(model: torch.nn.Module, seed: int):
    """Large-std random init so layers are far from identity: matrices N(0, 0.2), biases N(0, 0.2),
    norm weights neutral +- U(0.3) (Gemma RMSNorm neutral 0 because it computes x*(1+w), others 1),
    LayerNorm biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for mod_name, mod in model.named_modules():
            cname = type(mod).__name__
            if "Norm" in cname:
                neutral = 0.0 if cname.startswith("Gemma") else 1.0
                w = getattr(mod, "weight", None)
                if w is not None and id(w) not in done:
                    w.copy_(neutral + (torch.rand(w.shape, generator=g) * 2 - 1) * 0.3)
                    done.add(id(w))
                b = getattr(mod, "bias", None)
                if isinstance(b, torch.nn.Parameter) and id(b) not in done:
                    b.copy_(torch.randn(b.shape, generator=g) * 0.1)
                    done.add(id(b))
        for name, p in model.named_parameters():
            if id(p) in done:
                continue
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            done.add(id(p))


def add_legacy_config_keys(folder: Path, config) -> dict:
    """transformers 5 writes RoPE settings only as `rope_parameters`; most checkpoints on the Hub
    still carry the v4 keys. Add them (same values) so a loader can be tested on either form."""
    path = folder / "config.json"
    d = json.loads(path.read_text())
    rp = d.get("rope_parameters") or {}
    added = {}
    if "full_attention" in rp:  # Gemma3: per layer type
        added["rope_theta"] = rp["full_attention"]["rope_theta"]
        added["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
    elif "rope_theta" in rp:
        added["rope_theta"] = rp["rope_theta"]
    if d.get("model_type") == "gpt2":  # the original gpt2 config has n_ctx; llama.cpp's converter reads it
        added["n_ctx"] = d["n_positions"]
    for k, v in added.items():
        d.setdefault(k, v)
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    return added


def patch_tokenizer_config(folder: Path, tokenizer_class: str = "PreTrainedTokenizerFast"):
    """transformers 5 writes tokenizer_class "TokenizersBackend", a name older loaders (and
    transformers.js) do not know; "PreTrainedTokenizerFast" means the same thing (use tokenizer.json
    as is) everywhere."""
    path = folder / "tokenizer_config.json"
    d = json.loads(path.read_text())
    d["tokenizer_class"] = tokenizer_class
    path.write_text(json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sensitivity(spec, model, ids) -> dict:
    """Max |logit difference| when a special feature is switched off: proves the fixture exercises it."""
    out = {}
    name = spec["name"]
    base = record(model, ids, check=False)["logits"]

    def variant(**changes):
        cfg = copy.deepcopy(model.config)
        for k, v in changes.items():
            setattr(cfg, k, v)
        m = type(model)(cfg).eval()
        missing, unexpected = m.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected, unexpected
        m.tie_weights()
        return (record(m, ids, check=False)["logits"] - base).abs().max().item()

    if name == "gemma2":
        out["attn_logit_softcapping=None"] = variant(attn_logit_softcapping=None)
        out["final_logit_softcapping=None"] = variant(final_logit_softcapping=None)
        out["query_pre_attn_scalar=head_dim"] = variant(query_pre_attn_scalar=16)
        out["sliding_window=4096"] = variant(sliding_window=4096)
    if name == "gemma3":
        out["query_pre_attn_scalar=head_dim"] = variant(query_pre_attn_scalar=16)
        out["sliding_window=4096"] = variant(sliding_window=4096)
        rp = copy.deepcopy(model.config.rope_parameters)
        rp["sliding_attention"]["rope_theta"] = rp["full_attention"]["rope_theta"]
        out["rope_local_base_freq=rope_theta"] = variant(rope_parameters=rp)
    if name == "llama31":
        rp = dict(rope_type="default", rope_theta=model.config.rope_parameters["rope_theta"])
        out["rope_type=default"] = variant(rope_parameters=rp)
    if name == "phi3":
        rp = dict(rope_type="default", rope_theta=model.config.rope_parameters["rope_theta"])
        out["rope_type=default"] = variant(rope_parameters=rp)
    if name == "qwen3moe":
        out["norm_topk_prob=False"] = variant(norm_topk_prob=False)
    if name == "olmo2":
        m = copy.deepcopy(model)
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.q_norm.weight.fill_(1.0)
                layer.self_attn.k_norm.weight.fill_(1.0)
        out["q_norm/k_norm weight=1"] = (record(m, ids, check=False)["logits"] - base).abs().max().item()
    if name == "qwen2":
        m = copy.deepcopy(model)
        with torch.no_grad():
            for layer in m.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.zero_()
        out["qkv_bias=0"] = (record(m, ids, check=False)["logits"] - base).abs().max().item()
    if name == "qwen3":
        m = copy.deepcopy(model)
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.q_norm.weight.fill_(1.0)
                layer.self_attn.k_norm.weight.fill_(1.0)
        out["q_norm/k_norm weight=1"] = (record(m, ids, check=False)["logits"] - base).abs().max().item()
    for k, v in out.items():
        assert v > 1e-2, f"{name}: feature {k} has no visible effect on the logits ({v})"
    return out


def build_one(spec, out_root: Path):
    t0 = time.time()
    name = spec["name"]
    folder = out_root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    fast, tok_ids = build_tokenizer(spec)
    vocab_size = len(fast)
    assert vocab_size == VOCAB

    kw = dict(spec["kw"])
    if spec["cls"] is GPT2LMHeadModel:
        cfg = GPT2Config(vocab_size=vocab_size, bos_token_id=tok_ids["bos_token_id"],
                         eos_token_id=tok_ids["eos_token_id"], pad_token_id=tok_ids["pad_token_id"], **kw)
    else:
        c = dict(COMMON)
        c.update(kw)
        cfg = spec["cfg"](vocab_size=vocab_size, **tok_ids, **c)
    cfg.architectures = [spec["cls"].__name__]
    torch.manual_seed(spec["seed"])
    model = spec["cls"](cfg)
    init_weights(model, spec["seed"])
    model.tie_weights()
    model.eval()
    model.config._attn_implementation = "eager"
    model.set_attn_implementation("eager") if hasattr(model, "set_attn_implementation") else None

    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder, save_jinja_files=bool(spec.get("jinja")))
    legacy = add_legacy_config_keys(folder, model.config)
    patch_tokenizer_config(folder, spec.get("tokenizer_class", "PreTrainedTokenizerFast"))

    # Reload from disk: the reference must describe what the folder contains.
    tok = AutoTokenizer.from_pretrained(folder)
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    for (k1, v1), (k2, v2) in zip(sorted(model.state_dict().items()), sorted(m.state_dict().items())):
        assert k1 == k2 and torch.equal(v1, v2), (k1, k2)

    tensors = {}
    input_ids, token_strs, decoded = [], [], []
    for i, p in enumerate(PROMPTS):
        ids = tok(p, add_special_tokens=True)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == p, (name, p, tok.decode(ids, skip_special_tokens=True))
        input_ids.append(ids)
        token_strs.append(tok.convert_ids_to_tokens(ids))
        idt = torch.tensor(ids, dtype=torch.int64)
        rec = record(m, idt, check=True)
        # Same numbers from the in-memory model (sanity: reload changed nothing).
        assert torch.equal(rec["logits"], record(model, idt, check=False)["logits"])
        tensors[f"p{i}/input_ids"] = idt
        for k, v in rec.items():
            tensors[f"p{i}/{k}"] = v.contiguous()
    save_file(tensors, str(folder / "reference.safetensors"), metadata={"format": "pt"})

    sens = sensitivity(spec, m, torch.tensor(input_ids[1]))
    rendered = tok.apply_chat_template(CHAT_EXAMPLE, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    bos_id = tok.bos_token_id
    bos_added = bos_id is not None and all(ids[0] == bos_id for ids in input_ids)
    L = m.config.num_hidden_layers
    hook_names = ["hook_embed"] + (["hook_pos_embed"] if name == "gpt2" else [])
    for l in range(L):
        hook_names += [f"blocks.{l}.{h}" for h in
                       ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")]
    if any(k.endswith("hook_expert_indices") for k in tensors):
        hook_names += [f"blocks.{l}.mlp.hook_{h}" for l in range(L) for h in ("expert_indices", "expert_weights")]
    hook_names += ["ln_final.hook_normalized", "logits"]
    ref = {
        "name": name,
        "architecture": spec["cls"].__name__,
        "model_type": m.config.model_type,
        "prompts": PROMPTS,
        "add_special_tokens": True,
        "bos_added": bos_added,
        "bos_token_id": bos_id,
        "input_ids": input_ids,
        "tokens": token_strs,
        "num_layers": L,
        "hidden_size": m.config.hidden_size,
        "vocab_size": m.config.vocab_size,
        "tie_word_embeddings": bool(m.config.tie_word_embeddings),
        "hooks": hook_names,
        "tensor_naming": "p{prompt_index}/{hook}; float32 [T, hidden] ([T, vocab] for logits); "
                         "p{i}/input_ids int64 [T]",
        "feature_sensitivity": sens,
        "legacy_config_keys_added": legacy,
        "chat_example": {"messages": CHAT_EXAMPLE, "add_generation_prompt": True, "rendered": rendered,
                         "input_ids": chat_ids, "tokenized_with_add_special_tokens": False},
        "notes": spec["notes"],
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "attn_implementation": "eager",
    }
    (folder / "reference.json").write_text(dump_json(ref))
    for f in folder.iterdir():
        f.chmod(0o644)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"{name:13s} T={[len(x) for x in input_ids]} bos_added={bos_added} size={size/1024:.0f} KiB "
          f"sens={ {k: round(v, 3) for k, v in sens.items()} } ({time.time()-t0:.1f}s)")
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "test" / "fixtures" / "tiny"))
    ap.add_argument("--only", default="", help="comma-separated model names")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    total = 0
    for spec in spec_list():
        if only and spec["name"] not in only:
            continue
        total += build_one(spec, out)
    print(f"total {total/1024:.0f} KiB in {out}")


if __name__ == "__main__":
    main()
