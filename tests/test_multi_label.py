"""Multi-label classification: reading label sets, multi-hot arrays, sigmoid BCE loss, sklearn report, heads."""

import jax
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mgpt.config import DataConfig
from mgpt.data import build_datasets
from mgpt.data.reading import read_examples
from mgpt.tasks import TASKS, get_task


def tokenizer():
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "x": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def test_heads():
    assert {kind: get_task(kind).head for kind in TASKS} == {
        "sequence_classification": "sequence_classification",
        "multi_label_classification": "sequence_classification",
        "token_classification": "token_classification", "regression": "regression", "causal_lm": "causal_lm",
        "generation": "causal_lm"}


def test_label_sets_from_delimited_strings_and_json_lists(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('text,tags\nx,sports|news\nx,\nx,"[""arts"", ""news""]"\n')
    val = tmp_path / "val.csv"
    val.write_text('text,tags\nx,sports\nx,arts | sports\n')
    cfg = DataConfig(train_file=str(train), validation_file=str(val), label_column="tags", max_length=3)
    bundle = build_datasets(cfg, get_task("multi_label_classification"), tokenizer())
    assert bundle.label_names == ("arts", "news", "sports")
    assert [e["label"] for e in bundle.examples["train"]] == [["sports", "news"], [], ["arts", "news"]]
    labels = bundle.splits["train"]["labels"]
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, [[0, 1, 1], [0, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(bundle.references("validation"), [[0, 0, 1], [1, 0, 1]])
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "x", "tags": ["news", 3]}\n{"text": "x", "tags": "a|b"}\n')
    examples = read_examples(jsonl, DataConfig(format="jsonl", label_column="tags"), "multi")
    assert [e["label"] for e in examples] == [["news", "3"], ["a", "b"]]
    semicolons = DataConfig(train_file=str(train), label_column="tags", label_delimiter=";")
    assert build_datasets(semicolons, get_task("multi_label_classification"), tokenizer()).label_names == (
        "arts", "news", "sports|news")


def test_loss_matches_numpy_and_predict_thresholds_at_half():
    task = get_task("multi_label_classification")
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.25, 1.5], [9.0, 9.0, 9.0]], np.float32)
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], np.float32)
    batch = {"labels": labels, "example_weight": np.array([1, 1, 0], np.float32)}
    total, count = jax.jit(task.loss)(logits, batch)
    x = logits[:2].astype(np.float64)
    y = labels[:2]
    p = 1 / (1 + np.exp(-x))
    expected = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))  # summed over labels and real examples
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    assert float(count) == 2.0  # per example, not per label
    np.testing.assert_array_equal(jax.jit(task.predict)(logits, batch), [[1, 0, 1], [0, 1, 1], [1, 1, 1]])


def test_report_by_hand():
    task = get_task("multi_label_classification")
    ref = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    report = task.report(pred, ref, ("a", "b", "c"))
    assert report["subset_accuracy"] == pytest.approx(1 / 3)
    # a: tp 2; b: tp 1, fn 1; c: fp 1, fn 1 -> micro P 3/4, R 3/5
    assert report["micro_f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert report["per_label"]["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert report["hamming_loss"] == pytest.approx(3 / 9)
    assert task.headline(report) == pytest.approx({"subset_accuracy": 1 / 3, "micro_f1": 2 / 3, "macro_f1": 5 / 9})
    assert task.describe(pred[2], ("a", "b", "c")) == ["a", "c"]
