"""WNUT-17 NER with all-MiniLM-L6-v2: full fine-tuning against LoRA, bottleneck adapters and prefix tuning.

    python experiments/benchmarks/peft_compare.py --output bench_results/peft_compare.json
    python experiments/benchmarks/peft_compare.py --methods full lora --set train.max_steps=3   # a smoke run

Runs each method in its own fresh Python process, one after the other (never at the same time, so none
steals another's cores), with the settings of experiments/wnut17_minilm.py (full) and
experiments/wnut17_peft.py (``peft.method`` and its learning rate from ``LEARNING_RATES`` there). Writes the
rows as JSON and a markdown table next to it (``.md``): test entity F1, trainable parameters (as the run
logs them at start-up), seconds per step (median over logged windows after the first, which holds
compilation) and the process's peak resident set size. ``--set`` overrides apply to every run.
"""

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = {"full": "experiments/wnut17_minilm.py", "peft": "experiments/wnut17_peft.py"}


def child(method: str, workdir: str, overrides: list[str], output: str) -> None:
    """In a fresh process: train one method, then write its row (with this process's peak RSS) to ``output``."""
    sys.path.insert(0, ROOT)
    from mgpt import config as config_lib
    from mgpt.train import loop

    counts = []

    class Grab(logging.Handler):  # the loop logs "parameters: X total, Y trainable" at start-up
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("parameters:"):
                counts.append([int(word) for word in message.replace(",", " ").split() if word.isdigit()])

    logger = logging.getLogger("mgpt")
    logger.addHandler(Grab())
    logger.setLevel(logging.INFO)
    if method == "full":
        config = config_lib.load_experiment(os.path.join(ROOT, EXPERIMENTS["full"]))
    else:
        path = os.path.join(ROOT, EXPERIMENTS["peft"])
        rates = _experiment_module(path).LEARNING_RATES
        config = config_lib.apply_overrides(config_lib.load_experiment(path), [
            f"peft.method={method}", f"optimizer.learning_rate={rates[method]}"])
    config = config_lib.apply_overrides(config, ["train.progress_bar=false"] + overrides)
    reports = loop.train(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    windows = [e["seconds_per_step"] for e in events if e["kind"] == "train"]
    total, trainable = counts[0]
    row = {
        "method": method,
        "test_f1": reports["test"]["f1"] if "test" in reports else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "seconds_per_step_median": statistics.median(windows[1:] or windows),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "steps": max((e["step"] for e in events if e["kind"] == "train"), default=0),
    }
    with open(output, "w") as f:
        json.dump(row, f, indent=2)


def _experiment_module(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("peft_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(rows: list[dict]) -> str:
    lines = ["| method | test entity F1 | trainable params | % of total | s / step | peak RSS (GiB) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        f1 = "n/a" if row["test_f1"] is None else f"{100 * row['test_f1']:.2f}"
        share = 100 * row["trainable_parameters"] / row["total_parameters"]
        lines.append(f"| {row['method']} | {f1} | {row['trainable_parameters']:,} | {share:.2f}% | "
                     f"{row['seconds_per_step_median']:.3f} | {row['peak_rss_bytes'] / 2**30:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["full", "lora", "adapter", "prefix"])
    parser.add_argument("--output", default="bench_results/peft_compare.json")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="config override for every run, e.g. train.max_steps=3")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.overrides, args.output)
        return
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for method in args.methods:
        workdir = os.path.join(out_dir, f"peft_compare_{method}")
        row_file = os.path.join(out_dir, f"peft_compare_{method}.json")
        if os.path.exists(workdir):  # a run there would resume from its checkpoint, not start afresh
            raise SystemExit(f"{workdir} exists; delete it or pass another --output directory")
        command = [sys.executable, os.path.abspath(__file__), "--child", method, workdir, "--output", row_file]
        for item in args.overrides:
            command += ["--set", item]
        subprocess.run(command, cwd=ROOT, check=True)
        with open(row_file) as f:
            rows.append(json.load(f))
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)
    markdown = table(rows)
    with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
        f.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
