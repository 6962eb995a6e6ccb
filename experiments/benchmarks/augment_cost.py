"""Where on-the-fly text augmentation's step cost goes: host time to make a batch, and longer batches.

    python experiments/benchmarks/augment_cost.py --methods plain typos_half typos eda --batches 200 \
        --output bench_results/augment_cost.json

Makes the training batches of robust_compare.py's ``full`` setting (Banking77's training file, batch 32, batches
of like lengths cut to bucket lengths) for each method's ``data.augment``, the way a run makes them
(``Run.batches``, then ``batch_at(step)`` for the first ``--batches`` steps; no model is loaded). Per method:
the host milliseconds to make one batch (median; augmented batches are re-tokenized), the mean padded width (the
tokens per row the step computes on), the mean real tokens per row, and the padded tokens per batch relative to
plain. Typos split words into more sub-word pieces, so a batch with typos is longer than its clean self, and the
device's share of a step grows with it. Writes the rows as JSON.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), HERE]  # the checkout (mgpt) and robust_compare beside

import robust_compare  # noqa: E402
from mgpt import config as config_lib  # noqa: E402
from mgpt.data import build_datasets, lengths  # noqa: E402
from mgpt.models.hf import load_tokenizer  # noqa: E402
from mgpt.tasks import get_task  # noqa: E402
from mgpt.train.setup import Run  # noqa: E402


def method_config(method: str, overrides=()) -> config_lib.ExperimentConfig:
    """What robust_compare's full setting trains for ``method`` (its data and augmentation), plus ``overrides``."""
    full = robust_compare.SETTINGS["full"]
    base = config_lib.load_experiment(os.path.join(robust_compare.ROOT, "experiments", full.experiment))
    return config_lib.apply_overrides(base, [*full.overrides, *robust_compare.METHODS[method], *overrides])


def batch_figures(config: config_lib.ExperimentConfig, batches: int) -> dict:
    """Make the first ``batches`` training batches of ``config`` as its run would; time them and measure them."""
    task = get_task(config.task.kind, config.task.loss_chunk_size, config.task.label_smoothing)
    tokenizer = load_tokenizer(config.model.name_or_path)
    data = build_datasets(config.data, task, tokenizer)
    run = Run(config, None, None, None, tokenizer, data, task, None)  # the data half of a run: no model needed
    train = run.batches("train", config.train.batch_size, shuffle=True)
    seconds, widths, real = [], [], []
    for step in range(batches):
        start = time.perf_counter()
        batch = train.batch_at(step)
        seconds.append(time.perf_counter() - start)
        mask = batch["attention_mask"]
        widths.append(mask.shape[1])
        real.append(float(mask.sum(axis=1).mean()))
    return {"batches": batches, "augment": list(config.data.augment),
            "augment_probability": config.data.augment_probability,
            "bucket_lengths": list(lengths.bucket_ladder(config.data.max_length, config.data.bucket_lengths)),
            "host_ms_per_batch": 1000 * statistics.median(seconds),
            "padded_width": statistics.mean(widths), "real_tokens_per_row": statistics.mean(real),
            "padded_tokens_per_batch": config.train.batch_size * statistics.mean(widths)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["plain", "typos_half", "typos", "eda"],
                        choices=sorted(robust_compare.METHODS))
    parser.add_argument("--batches", type=int, default=200, help="training steps' batches made per method")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="a config override for every method (e.g. data.train_file=...)")
    parser.add_argument("--output", default="bench_results/augment_cost.json")
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        row = {"method": method, **batch_figures(method_config(method, args.overrides), args.batches)}
        rows.append(row)
    plain = next((r for r in rows if r["method"] == "plain"), None)
    print("| method | host ms / batch | padded width | real tokens / row | padded tokens vs plain |")
    print("|---|---|---|---|---|")
    for row in rows:
        if plain is not None:
            row["padded_tokens_vs_plain"] = row["padded_tokens_per_batch"] / plain["padded_tokens_per_batch"]
        ratio = f"{row['padded_tokens_vs_plain']:.2f}x" if plain is not None else "-"
        print(f"| {row['method']} | {row['host_ms_per_batch']:.1f} | {row['padded_width']:.1f} | "
              f"{row['real_tokens_per_row']:.1f} | {ratio} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
