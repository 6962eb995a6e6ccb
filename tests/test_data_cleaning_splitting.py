"""Cleaning (normalisation, drops by reason, label maps) and seeded, stratified splitting."""

import logging
from collections import Counter

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mgpt.config import DataConfig
from mgpt.data import DataError, build_datasets
from mgpt.data.cleaning import clean_examples, normalize_text
from mgpt.data.labels import LABEL_STRING
from mgpt.data.splitting import split_examples, split_indices
from mgpt.tasks import get_task


def tokenizer():
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def test_normalize_text_nfkc_and_whitespace():
    assert normalize_text("\uff27ood\u00a0 \tfilm ") == "Good film"  # full-width G, no-break space
    assert normalize_text(" line one \n\n  line two\r\n") == "line one\nline two"
    assert normalize_text("\ufb01ne") == "fine"  # the "fi" ligature


def test_cleaning_counts_every_reason(caplog):
    examples = [
        {"text": "\uff27ood\u00a0 film", "label": "pos"},
        {"text": "   ", "label": "neg"},  # empty
        {"text": "Good film", "label": "pos"},  # the first one again, once normalised
        {"text": "bad", "label": "neg"},  # too short: 1 word
        {"text": "one two three four five", "label": "neg"},  # too long: 5 words
        {"text": "so so", "label": "meh"},  # label mapped to "": dropped
        {"text": "line one \n\n line two", "label": "0"},  # label renamed
    ]
    cfg = DataConfig(normalize_text=True, drop_empty=True, drop_duplicates=True, min_words=2, max_words=4,
                     label_map={"meh": "", "0": "neg"})
    with caplog.at_level(logging.INFO, logger="mgpt"):
        kept, counts = clean_examples(examples, cfg, where="train (t.csv)")
    assert kept == [{"text": "Good film", "label": "pos"}, {"text": "line one\nline two", "label": "neg"}]
    assert counts == {"label_dropped": 1, "empty": 1, "too_short": 1, "too_long": 1, "duplicate": 1}
    message = [r.getMessage() for r in caplog.records if "cleaning" in r.getMessage()][0]
    assert message == ("cleaning train (t.csv): 7 examples read, 2 kept; dropped 1 label_dropped, 1 empty, "
                       "1 too_short, 1 too_long, 1 duplicate")
    # Character limits; defaults drop nothing; a predict file keeps every row.
    chars = [{"text": t} for t in ("ab", "abc", "abcdef")]
    assert clean_examples(chars, DataConfig(min_chars=3, max_chars=5))[1]["too_short"] == 1
    assert clean_examples(chars, DataConfig(min_chars=3, max_chars=5))[1]["too_long"] == 1
    assert clean_examples(examples, DataConfig())[0] == examples
    assert len(clean_examples(examples, cfg, keep_all=True)[0]) == 7


def test_label_map_for_multi_labels_and_tags():
    kept, _ = clean_examples([{"text": "x", "label": ["a", "b", "c"]}], DataConfig(label_map={"a": "", "b": "c"}))
    assert kept[0]["label"] == ["c"]
    kept, _ = clean_examples([{"tokens": ["EU"], "tags": ["B-ORGANIZATION"]}],
                             DataConfig(label_map={"B-ORGANIZATION": "B-ORG"}))
    assert kept[0]["tags"] == ["B-ORG"]


def test_build_datasets_returns_cleaning_counts_and_unknown_label_names_the_file(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood film,1\ngood film,1\nbad film,0\n\"\",0\nfine,2\n")
    cfg = DataConfig(train_file=str(train), drop_empty=True, drop_duplicates=True, label_map={1: "pos", "0": "neg"},
                     labels=("neg", "pos"))
    with pytest.raises(DataError, match=rf"{train}: label '2' \(train split\) is not in the label list"):
        build_datasets(cfg, get_task("sequence_classification"), tokenizer())
    cfg = DataConfig(train_file=str(train), drop_empty=True, drop_duplicates=True,
                     label_map={"1": "pos", "0": "neg", "2": "pos"})
    bundle = build_datasets(cfg, get_task("sequence_classification"), tokenizer())
    assert bundle.cleaning == {"train": {"label_dropped": 0, "empty": 1, "too_short": 0, "too_long": 0,
                                         "duplicate": 1}}
    assert [e["label"] for e in bundle.examples["train"]] == ["pos", "neg", "pos"]


def test_seeded_stratified_split_proportions_and_disjointness():
    labels = ["a"] * 12 + ["b"] * 8
    parts = split_indices(20, validation_ratio=0.25, test_ratio=0.25, seed=3, labels=labels)
    assert {k: len(v) for k, v in parts.items()} == {"train": 10, "validation": 5, "test": 5}
    # Stratified: every part keeps 12:8 = 3:2.
    assert Counter(labels[i] for i in parts["test"]) == {"a": 3, "b": 2}
    assert Counter(labels[i] for i in parts["validation"]) == {"a": 3, "b": 2}
    assert Counter(labels[i] for i in parts["train"]) == {"a": 6, "b": 4}
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(20))  # disjoint, and nothing lost
    assert all((np.diff(v) > 0).all() for v in parts.values())  # original order kept
    again = split_indices(20, 0.25, 0.25, seed=3, labels=labels)
    assert all((again[k] == parts[k]).all() for k in parts)
    other = split_indices(20, 0.25, 0.25, seed=4, labels=labels)
    assert any((other[k] != parts[k]).any() for k in parts)


def test_existing_split_is_never_mixed(caplog):
    train = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    test = [{"text": "held out", "label": "a"}]
    cfg = DataConfig(validation_ratio=0.2, test_ratio=0.3, split_seed=1)
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        examples, sources = split_examples({"train": train, "test": test}, {"train": "tr.csv", "test": "te.csv"},
                                           cfg, LABEL_STRING)
    assert examples["test"] == test and sources["test"] == "te.csv"
    assert len(examples["validation"]) == 2 and len(examples["train"]) == 8
    assert Counter(e["label"] for e in examples["validation"]) == {"a": 1, "b": 1}
    assert not {e["text"] for e in examples["validation"]} & {e["text"] for e in examples["train"]}
    assert sources["validation"] == "tr.csv (0.2 of it, split_seed=1)"
    assert any("data.test_ratio=0.3 ignored" in r.getMessage() for r in caplog.records)


def test_split_errors_and_unstratifiable_labels(caplog):
    with pytest.raises(DataError, match="leave no training example"):
        split_indices(4, 0.5, 0.5, seed=0)
    with pytest.raises(DataError, match="less than one example"):
        split_indices(4, 0.1, 0.0, seed=0)
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        parts = split_indices(6, 0.5, 0.0, seed=0, labels=["a", "a", "a", "a", "a", "b"])
    assert len(parts["validation"]) == 3 and "without stratification" in caplog.text
