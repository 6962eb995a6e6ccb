"""The same model, batch and sequence through transformers + PyTorch and through `mgpt bench`, in one run.

    python experiments/benchmarks/torch_side_by_side.py --models gpt2-small bert-base --batch-size 8 --seq-len 128 \\
        --output bench_results/side_by_side.json

For each model: a full training step (forward, backward, AdamW update) on random token ids, fp32,
timed as the median of --steps after --warmup, for PyTorch eager, PyTorch `torch.compile` (where it
works), and mgpt's jitted train_step. Also measures the fp32 matmul rate of the machine (JAX and
PyTorch) so each figure can be read as a fraction of it. Runs one framework at a time.
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from mgpt import bench  # noqa: E402
from torch_common import below_speed, torch_matmul_flops, BELOW_SPEED  # noqa: E402


def torch_step_time(name: str, batch_size: int, seq_len: int, steps: int, warmup: int, compiled: bool) -> float:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = bench.hf_config_for(name, seq_len)
    torch.manual_seed(0)
    if config.model_type == "bert":
        config.num_labels = 2
        model = AutoModelForSequenceClassification.from_config(config)
        labels = torch.randint(0, 2, (batch_size,))
    else:
        model = AutoModelForCausalLM.from_config(config)
        labels = None
    model.train()
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    mask = torch.ones_like(ids)
    labels = ids if labels is None else labels
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    fn = torch.compile(step) if compiled else step
    times = []
    for i in range(warmup + steps):
        tic = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["gpt2-small", "bert-base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--output", default="bench_results/side_by_side.json")
    args = parser.parse_args()
    tokens = args.batch_size * args.seq_len
    jax_matmul = bench.measure_peak_flops("float32")
    torch_matmul = torch_matmul_flops()
    results = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads":
                           torch.get_num_threads(), "jax_matmul_gflops": jax_matmul / 1e9,
                           "torch_matmul_gflops": torch_matmul / 1e9,
                           "reference_below_speed": below_speed(torch_matmul, jax_matmul)}, "models": {}}
    print(f"torch {torch.__version__}: {torch.get_num_threads()} threads; fp32 2048^2 matmul rate: "
          f"JAX {jax_matmul / 1e9:.1f} GFLOP/s, PyTorch {torch_matmul / 1e9:.1f} GFLOP/s", flush=True)
    if results["machine"]["reference_below_speed"]:
        print(f"WARNING: PyTorch's matmul runs at {torch_matmul / jax_matmul:.2f}x JAX's (below {BELOW_SPEED}x): "
              "the torch columns below are not a fair comparison on this machine right now", flush=True)
    for name in args.models:
        row = {}
        mgpt = bench.run_bench(bench.BenchSettings(model=name, batch_size=args.batch_size, seq_len=args.seq_len,
                                                   steps=args.steps, warmup=args.warmup,
                                                   peak_tflops=jax_matmul / 1e12))
        flops = mgpt["flops_per_token"]
        row["mgpt"] = {"step_seconds": mgpt["step_seconds_median"], "tokens_per_second": mgpt["tokens_per_second"],
                       "fraction_of_matmul_rate": mgpt["mfu"], "compile_seconds": mgpt["compile_seconds_cold"]}
        print(f"{name} mgpt: {bench.summary(mgpt)}", flush=True)
        for label, compiled in (("torch_eager", False), ("torch_compile", True)):
            if compiled and args.no_compile:
                continue
            try:
                seconds = torch_step_time(name, args.batch_size, args.seq_len, args.steps, args.warmup, compiled)
            except Exception as error:  # torch.compile needs a C++ toolchain and may fail; record why
                row[label] = {"error": f"{type(error).__name__}: {error}"[:500]}
                print(f"{name} {label}: failed: {row[label]['error']}", flush=True)
                continue
            row[label] = {"step_seconds": seconds, "tokens_per_second": tokens / seconds,
                          "fraction_of_matmul_rate": flops * tokens / seconds / jax_matmul}
            print(f"{name} {label}: {seconds * 1e3:.0f} ms/step, {tokens / seconds:.0f} tokens/s", flush=True)
        for label in ("torch_eager", "torch_compile"):
            if "tokens_per_second" in row.get(label, {}):
                row[f"mgpt_over_{label}"] = row["mgpt"]["tokens_per_second"] / row[label]["tokens_per_second"]
        results["models"][name] = row
        print(json.dumps({k: v for k, v in row.items() if k.startswith("mgpt_over")}), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
