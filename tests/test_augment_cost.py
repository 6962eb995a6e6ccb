"""experiments/benchmarks/augment_cost.py: it measures the batches a run would train on, for each method's
augmentation, and its figures match the split's own arrays (tiny BERT, tiny CSV; no timing is asserted)."""

import csv
import json
import os
import sys

import numpy as np
import pytest

from fixtures_tiny import sentiment_csv, tiny_bert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


sys.path.insert(0, os.path.join(ROOT, "experiments", "benchmarks"))
import augment_cost as bench  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Overrides that point the full setting at a tiny BERT and a 64-query CSV of varied lengths."""
    directory = tmp_path_factory.mktemp("augment_cost")
    model = tiny_bert(directory / "model")
    source = sentiment_csv(directory / "raw.csv", 64, 0, max_filler=6)
    with open(source) as f, open(directory / "train.csv", "w", newline="") as g:
        reader, writer = csv.reader(f), csv.writer(g)
        next(reader)
        writer.writerow(["text", "category"])
        writer.writerows(reader)
    return [f"model.name_or_path={model}", f"data.train_file={directory / 'train.csv'}", "data.test_file=",
            "train.batch_size=8", "data.max_length=16"]


def test_the_config_is_what_robust_compare_trains():
    config = bench.method_config("typos_half")
    assert config.data.augment == ("char:0.05",)
    assert config.data.augment_probability == 0.5
    assert config.data.group_by_length
    assert config.optimizer.learning_rate == 1e-3


def test_plain_figures_are_the_split_rows_of_each_step(tiny):
    config = bench.method_config("plain", tiny)
    figures = bench.batch_figures(config, 4)
    # the same batches, rebuilt: each step's rows of the encoded split, cut to their bucket
    from mgpt.data import build_datasets, lengths
    from mgpt.models.hf import load_tokenizer
    from mgpt.tasks import get_task
    from mgpt.train.setup import Run

    task = get_task(config.task.kind)
    tokenizer = load_tokenizer(config.model.name_or_path)
    data = build_datasets(config.data, task, tokenizer)
    train = Run(config, None, None, None, tokenizer, data, task, None).batches("train", 8, shuffle=True)
    mask = data.splits["train"]["attention_mask"]
    real = [mask[train.indices_at(step)].sum(axis=1).mean() for step in range(4)]
    assert figures["real_tokens_per_row"] == pytest.approx(float(np.mean(real)))
    # each batch is cut to the smallest bucket that holds its longest row
    ladder = lengths.bucket_ladder(config.data.max_length, config.data.bucket_lengths)
    widths = [lengths.bucket_for(int(mask[train.indices_at(step)].sum(axis=1).max()), ladder) for step in range(4)]
    assert figures["padded_width"] == pytest.approx(float(np.mean(widths)))
    assert figures["padded_tokens_per_batch"] == pytest.approx(8 * figures["padded_width"])
    assert figures["augment"] == [] and figures["host_ms_per_batch"] > 0


def test_word_deletion_shortens_the_batches_and_main_writes_the_rows(tiny, tmp_path, monkeypatch, capsys):
    output = tmp_path / "cost.json"
    monkeypatch.setattr(sys, "argv", ["augment_cost.py", "--methods", "plain", "eda", "--batches", "4",
                                      "--output", str(output), *[a for o in tiny for a in ("--set", o)]])
    bench.main()
    rows = {r["method"]: r for r in json.loads(output.read_text())}
    assert rows["eda"]["augment"] == ["swap:0.1", "delete:0.1"]
    # deletion removes words from the same examples (same order, same seed), so their rows hold fewer tokens
    assert rows["eda"]["real_tokens_per_row"] < rows["plain"]["real_tokens_per_row"]
    assert rows["plain"]["padded_tokens_vs_plain"] == 1.0
    assert rows["eda"]["padded_tokens_vs_plain"] == pytest.approx(
        rows["eda"]["padded_tokens_per_batch"] / rows["plain"]["padded_tokens_per_batch"])
    assert "| eda |" in capsys.readouterr().out
