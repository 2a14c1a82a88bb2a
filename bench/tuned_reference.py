"""Reference side of bench/tuned-bench.ts: the tuned-lens package (0.2.0) training on PyTorch, for
the same windows and steps as logit-lens's `tuned train`. Prints one JSON object on stdout.

    tuned_reference.py MODEL_DIR JOB_JSON

MODEL_DIR: a Hugging Face folder with the model in fp32 (bench/reference_bench.py prepare makes it
from the same GGUF logit-lens reads). JOB_JSON: {"steps": [[ids, ...], ...] (each step's windows,
equal length), "threads": 2, "autocast": "bf16" | "none"}.

The loop is tuned-lens's `Train.execute` body (tuned_lens/scripts/train_loop.py), with its
`TunedLens` module and its optimiser settings (ingredients.py: SGD, lr 1.0 x (1 - 0.9), momentum
0.9, Nesterov, weight decay 1e-3; linear schedule, no warmup; grad norm clipped to 1). The script
itself is not run: it needs torchdata's DataLoader2 (gone from torchdata since 0.8), wandb and a
datasets pipeline. Two differences, both to do the same work as logit-lens (and a shim: tuned-lens 0.2.0 does not
know Gemma 3's final norm, see main):
- the translators trained are those of blocks 0..L-2 (hidden_states[1:L]); tuned-lens also trains
  one for the input embeddings (hidden_states[0]), one more layer of the same cost;
- "autocast": "bf16" runs the lens forward under torch.autocast(bfloat16) as tuned-lens does (on a
  GPU); "none" runs it in fp32, as logit-lens does.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    model_dir, job_file = sys.argv[1], sys.argv[2]
    job = json.load(open(job_file))
    import torch as th
    from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup
    from tuned_lens import TunedLens, model_surgery

    # tuned-lens 0.2.0's get_final_norm lists the architectures it knows, and Gemma 3 is not among
    # them (NotImplementedError: Unknown model type Gemma3TextModel). The final norm of such a
    # model is `base_model.norm`, as for the Llama family it does know: give it that, and nothing
    # else changes.
    known = model_surgery.get_final_norm

    def final_norm(model):
        try:
            return known(model)
        except NotImplementedError:
            return model.base_model.norm

    model_surgery.get_final_norm = final_norm

    th.set_num_threads(int(job.get("threads", 2)))
    th.manual_seed(0)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=th.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    lens = TunedLens.from_model(model)
    load_s = time.perf_counter() - t0
    n_layers = model.config.num_hidden_layers
    params = [p for p in lens.parameters() if p.requires_grad]
    steps = job["steps"]
    opt = th.optim.SGD(params, lr=1.0 * (1 - 0.9), momentum=0.9, nesterov=True, weight_decay=1e-3)
    scheduler = get_linear_schedule_with_warmup(opt, 0, len(steps))
    autocast = job.get("autocast", "none") == "bf16"
    step_s: list[float] = []
    history: list[float] = []
    first: list[float] = []
    last: list[float] = []
    for ids in steps:
        t = time.perf_counter()
        batch = th.tensor(ids, dtype=th.long)
        with th.no_grad():
            output = model(input_ids=batch, output_hidden_states=True)
        labels = output.logits.float().log_softmax(dim=-1)
        losses = []
        for i in range(1, n_layers):  # blocks 0..L-2 (see the module comment)
            h = output.hidden_states[i]
            with th.autocast("cpu", dtype=th.bfloat16, enabled=autocast):
                logits = lens(h, idx=i)
                loss = th.sum(labels.exp() * (labels - logits.log_softmax(-1)), dim=-1).mean()
            losses.append(loss.detach().item())
            loss.backward()
        th.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        scheduler.step()
        step_s.append(time.perf_counter() - t)
        history.append(sum(losses) / len(losses))
        if not first:
            first = losses
        last = losses
        print(f"tuned-lens step {len(step_s)}/{len(steps)}: {step_s[-1]:.1f} s, KL {history[-1]:.3f}", file=sys.stderr, flush=True)
    print(json.dumps({
        "torch": th.__version__,
        "threads": th.get_num_threads(),
        "autocast": "bf16" if autocast else "none",
        "load_s": load_s,
        "step_s": step_s,
        "loss_history": history,
        "first_loss": first,
        "last_loss": last,
    }))


if __name__ == "__main__":
    main()
