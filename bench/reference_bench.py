"""Reference side of `npm run bench`: transformers + PyTorch on the same GGUF weights, fp32, 2 threads.

Run by bench/bench.ts with the venv's python; prints one JSON object on stdout (everything else
goes to stderr). Two modes:

  reference_bench.py prepare GGUF CACHE_DIR [THREADS]
      Loads the GGUF with transformers (dequantized to fp32) and saves it as a Hugging Face folder
      (fp32 safetensors) in CACHE_DIR, so that timed runs measure a warm load, as the logit-lens
      side does (its converted fp32 weights are cached too). Reports the GGUF load time.

  reference_bench.py measure CACHE_DIR IDS_JSON THREADS
      IDS_JSON: {"ids": [...], "prefill": [8, 64, 256], "lens": [64, 256], "decodePrompt": 8,
                 "decodeNew": 32, "maxRuns": 3, "budgetS": 20, "chunkBytes": ...}
      Measures warm load, prefill (all-position logits, and logits_to_keep=1), the full logit lens
      (every layer's residual through the final norm, recomputed per residual, and lm_head as one
      batched matmul per chunk of positions, log_softmax, top-10, entropy, KL to the final layer),
      greedy decoding with the KV cache, and peak RSS (ru_maxrss).

The lens is written the way a careful researcher would: `output_hidden_states=True` for layers
0..L-2, and a forward hook on the last decoder layer for its residual, because transformers replaces
`hidden_states[-1]` by the final-normed state (applying the norm twice would be wrong). Positions
are processed in chunks so that one [layers, chunk, vocab] float buffer stays within the same
budget logit-lens uses (a 262k vocabulary makes the whole [18, 256, 262144] tensor 4.8 GB).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def load_gguf(path: str):
    """transformers' own GGUF dequantization, the same steps with or without `accelerate`: config
    from the GGUF, a plain fp32 model, and `load_gguf_checkpoint`'s dequantized tensors (as
    tools/reference does).

    Not `from_pretrained(gguf_file=...)`: without `accelerate` it refuses to load a GGUF, and with
    `accelerate` installed it marks the model as quantized, after which `save_pretrained` refuses to
    write it (the PyTorch column used to disappear silently)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    d, f = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    config = AutoConfig.from_pretrained(d, gguf_file=f)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    tensors = {k: v.to(torch.float32) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF load: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    try:
        import accelerate

        acc = f"accelerate {accelerate.__version__} installed, not used"
    except ImportError:
        acc = "accelerate not installed"
    return model.eval(), f"transformers load_gguf_checkpoint into a plain fp32 model ({acc})"


def prepare(gguf_path: str, cache_dir: str, threads: int = 2) -> dict:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, how = load_gguf(gguf_path)
    gguf_load_s = time.perf_counter() - t0
    tmp = cache_dir + f".{os.getpid()}.tmp"
    model.save_pretrained(tmp, safe_serialization=True)
    meta = {"ggufLoadS": gguf_load_s, "ggufLoader": how, "gguf": gguf_path, "ggufSize": os.path.getsize(gguf_path)}
    with open(os.path.join(tmp, "bench-meta.json"), "w") as fh:
        json.dump(meta, fh)
    if os.path.exists(cache_dir):  # another run got there first
        import shutil

        shutil.rmtree(tmp)
    else:
        os.replace(tmp, cache_dir)
    return meta


def timed(fn, max_runs: int, budget_s: float, warmup: bool = True) -> dict:
    """1 warm-up (optional), then up to max_runs timed runs, stopping early once budget_s is spent."""
    if warmup:
        fn()
    samples = []
    while len(samples) < max_runs and (not samples or sum(samples) < budget_s):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"best": min(samples), "median": statistics.median(samples), "samples": samples}


def measure(cache_dir: str, spec: dict, threads: int) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    with open(os.path.join(cache_dir, "bench-meta.json")) as fh:
        meta = json.load(fh)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    cfg = model.config
    n_layers = cfg.num_hidden_layers
    hidden = cfg.hidden_size
    vocab = cfg.vocab_size
    layers = model.model.layers
    norm = model.model.norm
    lm_head = model.lm_head
    softcap = getattr(cfg, "final_logit_softcapping", None)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    ids_all = spec["ids"]
    max_runs, budget = spec["maxRuns"], spec["budgetS"]
    out: dict = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attnImplementation": getattr(cfg, "_attn_implementation", None),
        "ggufLoader": meta["ggufLoader"],
        "ggufLoadS": meta["ggufLoadS"],
        "loadS": load_s,
        "params": params,
        "nLayers": n_layers,
        "hidden": hidden,
        "vocab": vocab,
        "prefill": {},
        "prefillLast": {},
        "lens": {},
        "lensOnly": {},
        "forwardHidden": {},
    }

    with torch.no_grad():
        # --- the lens
        captured = {}

        def grab_last(_module, _inputs, output):
            captured["last"] = output[0] if isinstance(output, (tuple, list)) else output

        hook = layers[-1].register_forward_hook(grab_last)

        def residuals(x):
            o = model(x, output_hidden_states=True, logits_to_keep=1)
            hs = o.hidden_states  # [embed, layer 0, ..., layer L-2, final-normed]
            return torch.cat([torch.cat(hs[1:n_layers], 0), captured["last"]], 0)  # [L, T, H]

        chunk_bytes = spec["chunkBytes"]

        def lens_on(resid):
            L, T, _ = resid.shape
            chunk = max(1, chunk_bytes // (L * vocab * 4))
            res = []
            for s in range(0, T, chunk):
                x = norm(resid[:, s : s + chunk])  # statistics recomputed for every residual
                logits = lm_head(x)  # [L, c, V]: one matmul over all layers and positions
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                logp = torch.log_softmax(logits, dim=-1)
                top_logits, top_ids = logits.topk(10, dim=-1)
                p = logp.exp()
                entropy = -(p * logp).sum(-1)
                kl = (p[-1:] * (logp[-1:] - logp)).sum(-1)  # KL(final || layer)
                res.append((top_ids, top_logits, entropy, kl))
            return res

        lens_on(residuals(torch.tensor([ids_all[:8]])))  # warm-up on a short prompt
        for n in spec["lens"]:
            x = torch.tensor([ids_all[:n]])
            fw, lo = [], []
            kept = {}

            def full_lens():
                t0 = time.perf_counter()
                resid = residuals(x)
                t1 = time.perf_counter()
                kept["parts"] = lens_on(resid)
                fw.append(t1 - t0)
                lo.append(time.perf_counter() - t1)

            out["lens"][str(n)] = timed(full_lens, max_runs, budget, warmup=False)
            if n == spec["lens"][0]:
                out["lensTop1"] = torch.cat([p[0][..., 0] for p in kept["parts"]], 1).tolist()  # [L, T]
            out["forwardHidden"][str(n)] = {"best": min(fw), "median": statistics.median(fw), "samples": fw}
            out["lensOnly"][str(n)] = {"best": min(lo), "median": statistics.median(lo), "samples": lo}
            log(f"  torch lens {n}: {out['lens'][str(n)]['best']:.3f} s (forward {min(fw):.3f} s, lens part {min(lo):.3f} s)")
        hook.remove()

        out["peakRssAfterLensBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        # --- prefill: logits for every position (as logit-lens's forward), and for the last only.
        for n in spec["prefill"]:
            x = torch.tensor([ids_all[:n]])
            out["prefill"][str(n)] = timed(lambda: model(x), spec.get("prefillRuns", max_runs), budget)
            out["prefillLast"][str(n)] = timed(lambda: model(x, logits_to_keep=1), spec.get("prefillRuns", max_runs), budget)
            log(f"  torch prefill {n}: {out['prefill'][str(n)]['best']:.3f} s (last-position logits {out['prefillLast'][str(n)]['best']:.3f} s)")

        # --- greedy decoding with the KV cache
        prompt = torch.tensor([ids_all[: spec["decodePrompt"]]])
        n_new = spec["decodeNew"]

        def decode():
            o = model(prompt, use_cache=True, logits_to_keep=1)
            past = o.past_key_values
            tok = o.logits[0, -1].argmax()
            toks = [int(tok)]
            t0 = time.perf_counter()
            for _ in range(n_new):
                o = model(tok.view(1, 1), past_key_values=past, use_cache=True)
                past = o.past_key_values
                tok = o.logits[0, -1].argmax()
                toks.append(int(tok))
            return time.perf_counter() - t0, toks

        decode()
        runs = [decode() for _ in range(max_runs)]
        secs = [r[0] for r in runs]
        out["decode"] = {"best": min(secs), "median": statistics.median(secs), "samples": secs, "newTokens": n_new, "tokens": runs[0][1]}
        log(f"  torch decode: {n_new / out['decode']['best']:.1f} tok/s")

    out["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["peakRssAfterLoadBytes"] = rss_after_load
    return out


def main() -> None:
    mode = sys.argv[1]
    if mode == "prepare":
        result = prepare(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    elif mode == "measure":
        with open(sys.argv[3]) as fh:
            spec = json.load(fh)
        result = measure(sys.argv[2], spec, int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
