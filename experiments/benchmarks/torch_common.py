"""Shared pieces of the plain transformers + PyTorch reference loops (no Trainer, on purpose).

The loops run the way Hugging Face users run them: examples tokenized without padding, each batch
padded to its longest row by a `transformers` collator (`DataCollatorWithPadding`,
`DataCollatorForTokenClassification`), optionally length-grouped by transformers' own
`LengthGroupedSampler` (what `TrainingArguments(group_by_length=True)` does). Every run prints its
thread count and its own matmul rate next to JAX's, measured in the same run, and flags a reference
that runs far below JAX's rate instead of silently comparing against it.
"""

import argparse
import json
import os
import statistics
import subprocess
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
    parser.add_argument("--group-by-length", action="store_true",
                        help="length-grouped batches (transformers' LengthGroupedSampler), as mgpt's data.group_by_length")
    parser.add_argument("--num-epochs", type=int, default=0, help="train this many epochs (0: the experiment's)")
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


BELOW_SPEED = 0.8  # a reference whose matmul rate is under this fraction of JAX's is flagged


def jax_matmul_flops(size: int = 2048) -> float:
    """JAX's fp32 matmul rate on this machine, measured in a child process (so its threads never share
    this process with torch's), the same way as :func:`torch_matmul_flops`."""
    code = ("import statistics, time, jax, jax.numpy as jnp\n"
            f"n = {size}\n"
            "a = jax.random.normal(jax.random.PRNGKey(0), (n, n)); b = jax.random.normal(jax.random.PRNGKey(1), (n, n))\n"
            "f = jax.jit(jnp.matmul); f(a, b).block_until_ready(); ts = []\n"
            "for _ in range(5):\n"
            "    t = time.perf_counter(); f(a, b).block_until_ready(); ts.append(time.perf_counter() - t)\n"
            "print(2.0 * n ** 3 / statistics.median(ts))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def below_speed(torch_flops: float, jax_flops: float, threshold: float = BELOW_SPEED) -> bool:
    """True when the reference's matmul rate is under ``threshold`` x JAX's: the comparison would be unfair."""
    return torch_flops < threshold * jax_flops


def speed_check() -> dict:
    """Torch threads and both matmul rates, printed and returned for the result JSON; warns when torch is slow."""
    torch_flops, jax_flops = torch_matmul_flops(), jax_matmul_flops()
    check = {"threads": torch.get_num_threads(), "torch_matmul_gflops": torch_flops / 1e9,
             "jax_matmul_gflops": jax_flops / 1e9, "reference_below_speed": below_speed(torch_flops, jax_flops)}
    print(f"torch {torch.__version__}: {check['threads']} threads, fp32 2048^2 matmul "
          f"{check['torch_matmul_gflops']:.1f} GFLOP/s; JAX in the same run {check['jax_matmul_gflops']:.1f} GFLOP/s",
          flush=True)
    if check["reference_below_speed"]:
        print(f"WARNING: the PyTorch reference's matmul runs at {torch_flops / jax_flops:.2f}x JAX's (below "
              f"{BELOW_SPEED}x): its timings are not a fair comparison on this machine right now", flush=True)
    return check


def loader(features: list, collator, batch_size: int, generator=None, group_by_length: bool = False,
           shuffle: bool = True):
    """A DataLoader over tokenized, unpadded ``features`` whose batches the collator pads to their longest row."""
    sampler = None
    if shuffle and group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=[len(f["input_ids"]) for f in features], generator=generator)
    elif shuffle:
        sampler = torch.utils.data.RandomSampler(features, generator=generator)
    return torch.utils.data.DataLoader(features, batch_size=batch_size, sampler=sampler, collate_fn=collator)


def train_epoch(model, batches, hp: dict, optimizer, scheduler, max_steps: int = 0) -> dict:
    """One epoch over ``batches`` (a :func:`loader`); step wall times (forward, backward, clip, update)
    and the real and computed (padded) tokens of every batch."""
    model.train()
    times, real, computed = [], 0, 0
    for batch in batches:
        if max_steps and len(times) >= max_steps:
            break
        tic = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - tic)
        real += int(batch["attention_mask"].sum())
        computed += batch["attention_mask"].numel()
    return {"step_times": times, "real_tokens": real, "computed_tokens": computed}


def epoch_figures(epochs: list) -> dict:
    """Per-epoch figures from :func:`train_epoch` results: seconds (steps only), real tokens/s, real fraction."""
    seconds = [sum(e["step_times"]) for e in epochs]
    real = sum(e["real_tokens"] for e in epochs)
    computed = sum(e["computed_tokens"] for e in epochs)
    return {"seconds_per_epoch": seconds, "steps_per_epoch": [len(e["step_times"]) for e in epochs],
            "real_tokens_per_second": real / max(sum(seconds), 1e-9), "real_token_fraction": real / max(computed, 1),
            "real_tokens": real, "computed_tokens": computed}


def predict_argmax(model, features: list, collator, batch_size: int = 64) -> list:
    """Arg-max predictions of every example in order, batches dynamically padded: one array per example
    ((C,) logits -> label id, or (T,) per token, cut to the example's own length)."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for batch in loader(features, collator, batch_size, shuffle=False):
            batch = {k: v for k, v in batch.items() if k != "labels"}
            ids = model(**batch).logits.argmax(-1).numpy()
            lengths = batch["attention_mask"].sum(-1).numpy()
            outputs += [row[:n] if row.ndim else row for row, n in zip(ids, lengths)]
    return outputs


def write_result(result: dict, output: str, epochs: list, speed: dict) -> None:
    """Add the timing figures (``epochs``: :func:`train_epoch` results) and the speed check, write JSON, print it."""
    step_times = [t for e in epochs for t in e["step_times"]]
    result["seconds_per_step_median"] = statistics.median(step_times[1:] or step_times)
    result["steps"] = len(step_times)
    result["torch"] = torch.__version__
    result.update(epoch_figures(epochs), **speed)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))
