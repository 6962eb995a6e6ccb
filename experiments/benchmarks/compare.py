"""mgpt against a plain transformers + PyTorch loop on a real data set, seed by seed.

    python experiments/benchmarks/compare.py wnut17 --seeds 0 1
    python experiments/benchmarks/compare.py banking77 --seeds 0

For each seed, runs `mgpt train <experiment>` and then the PyTorch reference with the same
hyperparameters, one after the other (never at the same time, so neither steals the other's
cores), writes bench_results/<name>.json and prints a markdown table. mgpt's seconds per step is
the median over logged windows after the first (which holds compilation).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> experiment, reference script, {result key (as the reference script writes it): (split, key in
# mgpt's eval_<split>.json)}; mgpt's eval_validation.json scores the best checkpoint, as the references do.
BENCHMARKS = {
    "wnut17": ("experiments/wnut17_minilm.py", "experiments/benchmarks/wnut17_torch.py",
               {"test_f1": ("test", "f1"), "best_dev_f1": ("validation", "f1")}),
    "banking77": ("experiments/banking77_intent.py", "experiments/benchmarks/banking77_torch.py",
                  {"test_accuracy": ("test", "accuracy"), "test_macro_f1": ("test", "macro_f1"),
                   "best_validation_macro_f1": ("validation", "macro_f1")}),
}


def run_mgpt(experiment: str, metrics: dict, seed: int, workdir: str) -> dict:
    subprocess.run([sys.executable, "-m", "mgpt.cli", "train", experiment, "--workdir", workdir,
                    "--set", f"train.seed={seed}", "--set", "train.progress_bar=false"], cwd=ROOT, check=True)
    reports = {}
    for split in {split for split, _ in metrics.values()}:
        with open(os.path.join(workdir, f"eval_{split}.json")) as f:
            reports[split] = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        windows = [e["seconds_per_step"] for e in map(json.loads, f) if e["kind"] == "train"][1:]
    return {"framework": "mgpt (JAX)", "seed": seed, **{k: reports[split][key] for k, (split, key) in metrics.items()},
            "seconds_per_step_median": statistics.median(windows)}


def run_torch(script: str, seed: int, output: str) -> dict:
    subprocess.run([sys.executable, script, "--seed", str(seed), "--output", output], cwd=ROOT, check=True)
    with open(output) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out-dir", default="bench_results")
    parser.add_argument("--frameworks", nargs="+", default=["mgpt", "torch"])
    args = parser.parse_args()
    experiment, script, metrics = BENCHMARKS[args.benchmark]
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for seed in args.seeds:
        if "mgpt" in args.frameworks:
            rows.append(run_mgpt(experiment, metrics, seed, os.path.join(out_dir, f"{args.benchmark}_mgpt_seed{seed}")))
        if "torch" in args.frameworks:
            rows.append(run_torch(script, seed, os.path.join(out_dir, f"{args.benchmark}_torch_seed{seed}.json")))
        with open(os.path.join(out_dir, f"{args.benchmark}.json"), "w") as f:
            json.dump(rows, f, indent=2)
    names = list(metrics)
    print("| framework | seed | " + " | ".join(names) + " | s / step |")
    print("|---" * (len(names) + 3) + "|")
    for row in rows:
        values = " | ".join(f"{100 * row[k]:.2f}" for k in names)
        print(f"| {row['framework']} | {row['seed']} | {values} | {row['seconds_per_step_median']:.3f} |")


if __name__ == "__main__":
    main()
