"""WNUT-17 NER with all-MiniLM-L6-v2: mgpt against a plain transformers + PyTorch loop, seed by seed.

    python experiments/benchmarks/wnut17_compare.py --seeds 0 1 --output bench_results/wnut17.json

For each seed, runs `mgpt train experiments/wnut17_minilm.py` and then
experiments/benchmarks/wnut17_torch.py one after the other (never at the same time, so neither
steals the other's cores), and prints a markdown table of test entity F1 and seconds per step.
mgpt's seconds per step is the median over logged windows after the first (which holds compilation).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_mgpt(seed: int, workdir: str) -> dict:
    subprocess.run(
        [sys.executable, "-m", "mgpt.cli", "train", "experiments/wnut17_minilm.py", "--workdir", workdir,
         "--set", f"train.seed={seed}", "--set", "train.progress_bar=false"],
        cwd=ROOT, check=True,
    )
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    windows = [e["seconds_per_step"] for e in events if e["kind"] == "train"][1:]
    return {"framework": "mgpt (JAX)", "seed": seed, "test_f1": report["f1"],
            "seconds_per_step_median": statistics.median(windows)}


def run_torch(seed: int, output: str) -> dict:
    subprocess.run([sys.executable, "experiments/benchmarks/wnut17_torch.py", "--seed", str(seed), "--output", output],
                   cwd=ROOT, check=True)
    with open(output) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output", default="bench_results/wnut17.json")
    parser.add_argument("--frameworks", nargs="+", default=["mgpt", "torch"])
    args = parser.parse_args()
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for seed in args.seeds:
        if "mgpt" in args.frameworks:
            rows.append(run_mgpt(seed, os.path.join(out_dir, f"wnut17_mgpt_seed{seed}")))
        if "torch" in args.frameworks:
            rows.append(run_torch(seed, os.path.join(out_dir, f"wnut17_torch_seed{seed}.json")))
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)
    print("| framework | seed | test entity F1 | s / step |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['framework']} | {row['seed']} | {100 * row['test_f1']:.2f} | {row['seconds_per_step_median']:.3f} |")


if __name__ == "__main__":
    main()
