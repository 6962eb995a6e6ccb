"""Shared pieces of the plain transformers + PyTorch reference loops (no Trainer, on purpose)."""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from transformers import get_linear_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for path in (ROOT, os.path.join(ROOT, "experiments")):
    if path not in sys.path:
        sys.path.insert(0, path)


def reference_args(default_output: str) -> argparse.Namespace:
    """Parse the command line every reference script takes (--seed, --output, --max-steps) and seed torch."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=default_output)
    parser.add_argument("--max-steps", type=int, default=0, help="stop each epoch early (smoke test only)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    return args


def torch_matmul_flops(size: int = 2048) -> float:
    """Measured fp32 matmul rate of this machine in FLOP/s (median of 5 square ``size`` products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(5):
        tic = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - tic)
    return 2.0 * size**3 / statistics.median(times)


def adamw_with_schedule(model, hp: dict, total_steps: int):
    """AdamW with decay off for biases and LayerNorm weights, linear warmup then linear decay (as mgpt)."""
    def no_decay(name):
        return name.endswith("bias") or "LayerNorm" in name

    groups = [
        {"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": hp["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=hp["learning_rate"], eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(hp["warmup_ratio"] * total_steps)), total_steps)
    return optimizer, scheduler


def train_epoch(model, inputs: dict, labels, hp: dict, optimizer, scheduler, generator, max_steps: int = 0) -> list:
    """One shuffled epoch; returns the wall time of each step (forward, backward, clip, update)."""
    model.train()
    n = len(labels)
    order = torch.randperm(n, generator=generator)
    times = []
    for start in range(0, n, hp["batch_size"]):
        if max_steps and len(times) >= max_steps:
            break
        index = order[start:start + hp["batch_size"]]
        tic = time.perf_counter()
        out = model(**{k: v[index] for k, v in inputs.items()}, labels=labels[index])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - tic)
    return times


def predict_argmax(model, inputs: dict, batch_size: int = 64):
    model.eval()
    outputs = []
    n = len(next(iter(inputs.values())))
    with torch.no_grad():
        for start in range(0, n, batch_size):
            outputs.append(model(**{k: v[start:start + batch_size] for k, v in inputs.items()}).logits.argmax(-1))
    return torch.cat(outputs).numpy()


def write_result(result: dict, output: str, step_times: list) -> None:
    result["seconds_per_step_median"] = statistics.median(step_times[1:] or step_times)
    result["steps"] = len(step_times)
    result["torch"] = torch.__version__
    result["threads"] = torch.get_num_threads()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))
