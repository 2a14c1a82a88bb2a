#!/usr/bin/env python3
"""Direct logit attribution, TransformerLens style, computed with transformers on a tiny fixture.

The reference for logit-lens's attribution (src/explain/attribution.ts, heads.ts): for prompt 1 of
the fixture ("The capital of France is Paris. The capital of Italy is"), at its last position, the
logit difference between the model's top two tokens split into
- embed (the residual entering block 0), each layer's attention and MLP output,
- each attention layer's heads: z_h (the input of o_proj / c_proj, TransformerLens `attn.hook_z`)
  with every other head's slice zeroed, through the projection module itself, minus the
  projection of zeros (which is the bias, reported as its own part),
- LayerNorm models: the final norm's bias.
The final norm's scale is frozen at the final residual (TransformerLens `apply_ln_to_stack` with the
cached scale). Nothing here re-implements a norm: the frozen map is read off transformers' own
module as the elementwise ratio norm(x) / x (RMSNorm; LayerNorm: (norm(x) - b) / (x - mean x), and
each part is centred), so the convention (Gemma's 1 + w, eps) is transformers', not ours. Where the
attention output is normed before the residual add (Gemma 2/3, OLMo 2), that norm is frozen the
same way at the layer's o_proj output: ratio attn_out / o_proj(z).
Everything runs in float64. Checks: the heads and the bias sum to the layer's attention part, and
all parts sum to the model's own logit difference (before any final soft-cap).

Usage:
  python tools/reference/attribution.py                      # every tiny fixture -> <dir>/attribution.json
  python tools/reference/attribution.py --model DIR --print  # one folder, JSON on stdout (live test)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(2)
torch.set_grad_enabled(False)

from transformers import AutoModelForCausalLM  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooks import HookPlan, dump_json, record  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROMPT = 1


def out_proj(plan: HookPlan, blk):
    """The attention output projection module of a block (its input is hook_z, flattened)."""
    return blk.attn.c_proj if plan.model_type == "gpt2" else blk.self_attn.o_proj


def attribution(folder: Path) -> dict:
    ref = json.loads((folder / "reference.json").read_text())
    ids = torch.tensor(ref["input_ids"][PROMPT])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64, attn_implementation="eager", experts_implementation="eager").eval()
    plan = HookPlan(model)
    cfg = model.config
    n_heads = cfg.n_head if plan.model_type == "gpt2" else cfg.num_attention_heads

    # z and o_proj's output, per layer (a second pass beside hooks.record's, same weights and ids).
    z, o = {}, {}
    handles = []
    for l, blk in enumerate(plan.layers):
        def grab(module, args, out, l=l):
            z[l] = args[0].detach()[0].clone()
            o[l] = out.detach()[0].clone()
        handles.append(out_proj(plan, blk).register_forward_hook(grab))
    try:
        with torch.no_grad():
            model(input_ids=ids[None], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    acts = record(model, ids, check=True, atol=1e-10, dtype=torch.float64)
    L = plan.n_layers
    P = len(ids) - 1
    logits = (model.get_output_embeddings()(acts["ln_final.hook_normalized"])).detach()[P]  # before any soft-cap
    top = torch.topk(logits, 2).indices.tolist()
    target, versus = top[0], top[1]
    W_U = model.get_output_embeddings().weight.detach()
    u = W_U[target] - W_U[versus]

    final = acts[f"blocks.{L - 1}.hook_resid_post"][P]
    norm = plan.final_norm
    layer_norm = isinstance(norm, torch.nn.LayerNorm)
    with torch.no_grad():
        normed = norm(final)
    if layer_norm:
        ratio = (normed - norm.bias) / (final - final.mean())
    else:
        ratio = normed / final

    def logit_of(part: torch.Tensor) -> float:
        v = part - part.mean() if layer_norm else part
        return float((v * ratio) @ u)

    parts = {"embed": logit_of(acts["blocks.0.hook_resid_pre"][P]), "attn": [], "mlp": [], "heads": [], "head_bias": []}
    for l, blk in enumerate(plan.layers):
        attn_out = acts[f"blocks.{l}.hook_attn_out"][P]
        parts["attn"].append(logit_of(attn_out))
        parts["mlp"].append(logit_of(acts[f"blocks.{l}.hook_mlp_out"][P]))
        post = attn_out / o[l][P]  # 1 without a norm after o_proj; that norm's frozen scale x weight with one
        proj = out_proj(plan, blk)
        zp = z[l][P]
        d = zp.shape[-1] // n_heads
        with torch.no_grad():
            zero = proj(torch.zeros_like(zp))
            heads = []
            for h in range(n_heads):
                only = torch.zeros_like(zp)
                only[h * d : (h + 1) * d] = zp[h * d : (h + 1) * d]
                heads.append(logit_of((proj(only) - zero) * post))
        parts["heads"].append(heads)
        parts["head_bias"].append(logit_of(zero * post))
        got = sum(heads) + parts["head_bias"][-1]
        assert abs(got - parts["attn"][-1]) < 1e-8 * max(1, abs(got)), f"layer {l}: heads sum to {got}, attention part {parts['attn'][-1]}"
    if layer_norm:
        parts["final_norm_bias"] = float(norm.bias.detach() @ u)
    total = parts["embed"] + sum(parts["attn"]) + sum(parts["mlp"]) + parts.get("final_norm_bias", 0.0)
    model_logit = float(logits[target] - logits[versus])
    assert abs(total - model_logit) < 1e-8 * max(1, abs(model_logit)), f"parts sum to {total}, the model says {model_logit}"
    return {
        "note": "written by tools/reference/attribution.py (float64, transformers); see its docstring",
        "prompt": ref["prompts"][PROMPT],
        "input_ids": ids.tolist(),
        "position": P,
        "target": target,
        "versus": versus,
        "logit_difference": model_logit,
        **parts,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="one tiny fixture folder (default: every folder of test/fixtures/tiny)")
    ap.add_argument("--print", action="store_true", help="write the JSON to stdout instead of <folder>/attribution.json")
    args = ap.parse_args()
    root = REPO / "test" / "fixtures" / "tiny"
    folders = [Path(args.model)] if args.model else sorted(p for p in root.iterdir() if (p / "reference.json").exists())
    for folder in folders:
        print(folder.name, file=sys.stderr)
        result = attribution(folder)
        if args.print:
            sys.stdout.write(dump_json(result))
        else:
            (folder / "attribution.json").write_text(dump_json(result))
            print(f"{folder.name}: {result['logit_difference']:.6f} = {len(result['attn'])} layers x {len(result['heads'][0])} heads", file=sys.stderr)


if __name__ == "__main__":
    main()
