"""Seconds per epoch, mgpt against the PyTorch reference users would run, side by side in one run.

    python experiments/benchmarks/epoch_compare.py wnut17 --epochs 1 --group-by-length
    python experiments/benchmarks/epoch_compare.py banking77 --epochs 1 --group-by-length
    python experiments/benchmarks/epoch_compare.py smollm2_banking77 --epochs 1
    python experiments/benchmarks/epoch_compare.py wnut17 --epochs 1 --group-by-length --pack --pack-rows 8

Runs ``mgpt train`` on the experiment, then its reference script (transformers collators, dynamic
padding, the same length grouping when asked), one after the other on the same machine, and prints
one table row per framework: seconds per epoch, real tokens per second, the fraction of computed
tokens that are real and mgpt's compile seconds, then writes everything as JSON.

``--pack`` trains mgpt on packed rows (``data.pack``: several examples per row, one compiled shape) with
``--pack-rows`` rows per batch; pick it so that a step holds about as many examples as the reference's
batch (the JSON records both runs' examples per step).

What is timed: mgpt's ``train_seconds`` (its training clock, compilation included, evaluation and
checkpoint saves excluded) and the reference's summed step times (forward, backward, clip, update;
its batch collation between steps is not counted), so the comparison leans towards the reference.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "experiments", "benchmarks")

TASKS = {
    "wnut17": {"experiment": "experiments/wnut17_minilm.py", "reference": ["wnut17_torch.py"],
               "epochs_flag": "--num-epochs", "group_flag": "--group-by-length"},
    "banking77": {"experiment": "experiments/banking77_intent.py", "reference": ["banking77_torch.py"],
                  "epochs_flag": "--num-epochs", "group_flag": "--group-by-length"},
    "smollm2_banking77": {"experiment": "experiments/smollm2_banking77_lora.py",
                          "reference": ["smollm2_reference.py", "banking77"],
                          "epochs_flag": "--epochs", "group_flag": None},
}


def final_event(workdir: str) -> dict:
    """The last ``final`` event of a run's metrics.jsonl."""
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as f:
        finals = [event for event in map(json.loads, filter(str.strip, f)) if event.get("kind") == "final"]
    if not finals:
        raise SystemExit(f"{path}: no final event (did the run finish?)")
    return finals[-1]


def mgpt_figures(final: dict) -> dict:
    """Per-epoch figures from mgpt's final event."""
    seconds = final["train_seconds"]
    return {"seconds_per_epoch": seconds / final["epochs"], "real_tokens_per_second": final["real_tokens"] / seconds,
            "real_token_fraction": final["real_token_fraction"], "compile_seconds": final["compile_seconds"],
            "train_steps": final["train_steps"],
            "examples_per_step": final["train_examples"] / final["train_steps"] if final.get("train_examples") else None}


def reference_figures(result: dict, epochs: int) -> dict:
    """Per-epoch figures from a reference script's JSON (per-epoch step times, or total train seconds)."""
    if "seconds_per_epoch" in result:
        seconds = statistics.mean(result["seconds_per_epoch"])
    else:
        seconds = result["train_seconds"] / epochs
    figures = {"seconds_per_epoch": seconds, "real_tokens_per_second": result.get("real_tokens_per_second"),
               "real_token_fraction": result.get("real_token_fraction"), "threads": result.get("threads"),
               "torch_matmul_gflops": result.get("torch_matmul_gflops", result.get("matmul_gflops")),
               "jax_matmul_gflops": result.get("jax_matmul_gflops"),
               "reference_below_speed": result.get("reference_below_speed")}
    if "speed" in result:  # smollm2_reference nests its speed check
        figures.update({k: v for k, v in result["speed"].items() if k != "threads"})
    return figures


def compare(mgpt: dict, reference: dict) -> dict:
    """The side-by-side summary: both rows and mgpt's speed-up per epoch (reference seconds / mgpt seconds)."""
    return {"mgpt": mgpt, "pytorch": reference,
            "speedup_per_epoch": reference["seconds_per_epoch"] / mgpt["seconds_per_epoch"]}


def table(summary: dict) -> str:
    """A plain-text table of :func:`compare`'s result."""
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [f"{'':8} {'s/epoch':>9} {'real tok/s':>11} {'real frac':>9} {'compile s':>9}"]
    for name in ("mgpt", "pytorch"):
        row = summary[name]
        lines.append(f"{name:8} {cell(row['seconds_per_epoch'], '9.1f')} {cell(row['real_tokens_per_second'], '11.0f')} "
                     f"{cell(row['real_token_fraction'], '9.2f')} {cell(row.get('compile_seconds'), '9.1f')}")
    lines.append(f"mgpt speed-up per epoch: {summary['speedup_per_epoch']:.2f}x")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--group-by-length", action="store_true", help="length-grouped batches in both runs")
    parser.add_argument("--pack", action="store_true", help="mgpt trains on packed rows (data.pack)")
    parser.add_argument("--pack-rows", type=int, default=8, help="rows per batch with --pack")
    parser.add_argument("--extra", action="append", default=[], help="further KEY=VALUE overrides for mgpt")
    parser.add_argument("--workdir", default="bench_results/epoch_compare")
    args = parser.parse_args()
    task = TASKS[args.task]
    os.makedirs(args.workdir, exist_ok=True)
    run_dir = os.path.join(args.workdir, f"{args.task}_mgpt")
    reference_json = os.path.join(args.workdir, f"{args.task}_pytorch.json")
    command = [os.path.join(os.path.dirname(sys.executable), "mgpt"), "train", os.path.join(ROOT, task["experiment"]), "--workdir", run_dir,
               "--set", f"train.num_epochs={args.epochs}"]
    if args.group_by_length:
        command += ["--set", "data.group_by_length=true"]
    if args.pack:
        command += ["--set", "data.pack=true", "--set", f"train.batch_size={args.pack_rows}"]
    for override in args.extra:
        command += ["--set", override]
    subprocess.run(command, check=True)
    command = [sys.executable, os.path.join(BENCH, task["reference"][0]), *task["reference"][1:],
               task["epochs_flag"], str(args.epochs), "--output", reference_json]
    if args.group_by_length and task["group_flag"]:
        command.append(task["group_flag"])
    subprocess.run(command, check=True)
    with open(reference_json) as f:
        summary = compare(mgpt_figures(final_event(run_dir)), reference_figures(json.load(f), args.epochs))
    summary.update(task=args.task, epochs=args.epochs, group_by_length=args.group_by_length, pack=args.pack,
                   pack_rows=args.pack_rows if args.pack else None, extra=args.extra, cpu_count=os.cpu_count())
    print(table(summary))
    with open(os.path.join(args.workdir, f"{args.task}.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
