"""Record TransformerLens-style hook points from a Hugging Face causal LM with PyTorch forward hooks.

Shared by make_tiny_models.py and make_real_references.py. See README.md in this folder for the
exact semantics of every hook name. Supported model classes: the Llama family (LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM), Gemma2ForCausalLM, Gemma3ForCausalLM
(text only) and GPT2LMHeadModel.

All tensors are returned with the batch dimension dropped: [T, hidden] (logits: [T, vocab]).
"""

from __future__ import annotations

import json
import re

import torch


def _first(x):
    """Decoder layers / attention modules return a tensor or a tuple whose first item is the hidden state."""
    return x[0] if isinstance(x, (tuple, list)) else x


class HookPlan:
    """Which torch modules realise each hook point for one model."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        mt = model.config.model_type
        self.model_type = mt
        if mt == "gpt2":
            base = model.transformer
            self.embed = base.wte
            self.pos_embed = base.wpe
            self.layers = list(base.h)
            self.final_norm = base.ln_f
            # attn output = c_proj (+ resid dropout, identity in eval) ; resid_mid = input of ln_2
            self.attn_out = [(blk.attn, "out0") for blk in self.layers]
            self.mid = [(blk.ln_2, "in0") for blk in self.layers]
            self.mlp_out = [(blk.mlp, "out0") for blk in self.layers]
        else:
            base = model.model
            self.embed = base.embed_tokens
            self.pos_embed = None
            self.layers = list(base.layers)
            self.final_norm = base.norm
            sandwich = hasattr(self.layers[0], "pre_feedforward_layernorm")  # Gemma2 / Gemma3
            post_norms_only = not sandwich and hasattr(self.layers[0], "post_feedforward_layernorm")  # OLMo 2
            self.sandwich = sandwich
            if post_norms_only:
                # OLMo 2: attn -> post_attention_layernorm -> + residual ; mlp (on the raw residual)
                # -> post_feedforward_layernorm -> + residual
                self.attn_out = [(blk.post_attention_layernorm, "out0") for blk in self.layers]
                self.mid = [(blk.mlp, "in0") for blk in self.layers]
                self.mlp_out = [(blk.post_feedforward_layernorm, "out0") for blk in self.layers]
            elif sandwich:
                # Gemma: attn -> post_attention_layernorm -> + residual ; pre_feedforward_layernorm -> mlp
                # -> post_feedforward_layernorm -> + residual
                self.attn_out = [(blk.post_attention_layernorm, "out0") for blk in self.layers]
                self.mid = [(blk.pre_feedforward_layernorm, "in0") for blk in self.layers]
                self.mlp_out = [(blk.post_feedforward_layernorm, "out0") for blk in self.layers]
            else:
                # Llama family: attn (o_proj) -> + residual ; post_attention_layernorm (the pre-MLP norm!)
                # -> mlp -> + residual
                self.attn_out = [(blk.self_attn, "out0") for blk in self.layers]
                self.mid = [(blk.post_attention_layernorm, "in0") for blk in self.layers]
                self.mlp_out = [(blk.mlp, "out0") for blk in self.layers]

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def record(model: torch.nn.Module, input_ids: torch.Tensor, check: bool = True, atol: float = 1e-5, dtype: torch.dtype = torch.float32):
    """Run one forward pass on a single sequence and return {hook_name: tensor[T, ...]} (float32, cpu).

    input_ids: int64 tensor [T] or [1, T]. dtype: what the tensors are stored as (float64 for a
    float64 model keeps its precision, as attribution.py does).
    If check, asserts the residual-stream identities (resid_mid = resid_pre + attn_out,
    resid_post = resid_mid + mlp_out, resid_pre[l+1] = resid_post[l], embed = resid_pre[0], and the
    final logits = lm_head(ln_final(resid_post[L-1])) with soft-capping where configured).
    """
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    plan = HookPlan(model)
    store: dict[str, torch.Tensor] = {}
    handles = []

    def save(name, kind):
        def fn(module, args, kwargs_or_out, out=None):
            # registered with with_kwargs=True for forward hooks: (module, args, kwargs, output)
            if kind == "in0":
                t = args[0] if args else next(iter(kwargs_or_out.values()))
            else:
                t = _first(out)
            store[name] = t.detach()[0].to(dtype).clone()

        return fn

    def save_pre(name):
        def fn(module, args, kwargs):
            t = args[0] if args else kwargs["hidden_states"]
            store[name] = t.detach()[0].to(dtype).clone()

        return fn

    def add(mod, name, kind):
        handles.append(mod.register_forward_hook(save(name, kind), with_kwargs=True))

    add(plan.embed, "hook_embed", "out0")
    if plan.pos_embed is not None:
        add(plan.pos_embed, "hook_pos_embed", "out0")
    for l, blk in enumerate(plan.layers):
        handles.append(blk.register_forward_pre_hook(save_pre(f"blocks.{l}.hook_resid_pre"), with_kwargs=True))
        add(blk, f"blocks.{l}.hook_resid_post", "out0")
        mod, kind = plan.attn_out[l]
        add(mod, f"blocks.{l}.hook_attn_out", kind)
        mod, kind = plan.mid[l]
        add(mod, f"blocks.{l}.hook_resid_mid", kind)
        mod, kind = plan.mlp_out[l]
        add(mod, f"blocks.{l}.hook_mlp_out", kind)
    # Mixture-of-experts routers (Qwen3-MoE's mlp.gate returns router logits, the chosen experts'
    # weights [T, k] and their ids [T, k]): TransformerLens's hook_expert_weights / hook_expert_indices.
    for l, blk in enumerate(plan.layers):
        router = getattr(getattr(blk, "mlp", None), "gate", None)
        if router is not None and hasattr(blk.mlp, "experts"):
            def save_router(module, args, out, l=l):
                _, weights, ids = out
                store[f"blocks.{l}.mlp.hook_expert_weights"] = weights.detach().to(dtype).clone()
                store[f"blocks.{l}.mlp.hook_expert_indices"] = ids.detach().to(dtype).clone()
            handles.append(router.register_forward_hook(save_router))
    add(plan.final_norm, "ln_final.hook_normalized", "out0")
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    store["logits"] = out.logits.detach()[0].to(dtype).clone()

    if check:
        L = plan.n_layers

        def close(a, b, what):
            err = (store[a] - b).abs().max().item() if isinstance(b, torch.Tensor) else None
            scale = max(1.0, b.abs().max().item())
            assert err is not None and err <= atol * scale, f"{what}: max abs err {err} (scale {scale})"

        if plan.pos_embed is not None:
            close("blocks.0.hook_resid_pre", store["hook_embed"] + store["hook_pos_embed"], "gpt2 embed+pos == resid_pre.0")
        else:
            close("blocks.0.hook_resid_pre", store["hook_embed"], "embed == resid_pre.0")
        for l in range(L):
            p = f"blocks.{l}."
            close(p + "hook_resid_mid", store[p + "hook_resid_pre"] + store[p + "hook_attn_out"], f"resid_mid {l}")
            close(p + "hook_resid_post", store[p + "hook_resid_mid"] + store[p + "hook_mlp_out"], f"resid_post {l}")
            if l + 1 < L:
                close(f"blocks.{l + 1}.hook_resid_pre", store[p + "hook_resid_post"], f"resid_pre {l + 1}")
        close("ln_final.hook_normalized", plan.final_norm(store[f"blocks.{L - 1}.hook_resid_post"]), "ln_final")
        close("logits", unembed(model, store["ln_final.hook_normalized"]), "logits")
    return store


def unembed(model: torch.nn.Module, normalized: torch.Tensor) -> torch.Tensor:
    """lm_head (+ final logit soft-capping if the config has one) applied to already-normalised residuals."""
    with torch.no_grad():
        logits = model.get_output_embeddings()(normalized)
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
    return logits


def logit_lens(model: torch.nn.Module, resid: torch.Tensor) -> torch.Tensor:
    """Logit lens of residual(s) [..., hidden]: final norm (statistics recomputed per vector), lm_head, soft-cap."""
    plan_norm = HookPlan(model).final_norm
    with torch.no_grad():
        return unembed(model, plan_norm(resid))


def dump_json(obj) -> str:
    """Indented JSON, but with every innermost list of numbers / strings on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    scalar = r'(?:-?\d[\d.eE+-]*|true|false|null|"(?:[^"\\]|\\.)*")'
    pattern = re.compile(r"\[\s*(" + scalar + r"(?:,\s*" + scalar + r")*)\s*\]")
    return pattern.sub(lambda m: json.dumps(json.loads(m.group(0)), ensure_ascii=False), text) + "\n"
