"""data.max_examples: a seeded, stratified sample of the training source, taken before splits are carved out."""

from collections import Counter

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mgpt.config import DataConfig
from mgpt.data import build_datasets
from mgpt.data.labels import LABEL_STRING
from mgpt.data.splitting import sample_train
from mgpt.tasks import get_task


def _examples(n_pos: int, n_neg: int, n_plot: int = 0) -> list[dict]:
    labels = ["pos"] * n_pos + ["neg"] * n_neg + ["plot"] * n_plot
    return [{"text": f"example {i}", "label": label} for i, label in enumerate(labels)]


def test_sample_is_seeded_stratified_and_in_file_order():
    train = _examples(600, 400)
    config = DataConfig(max_examples=100, split_seed=3)
    sampled, sources = sample_train({"train": train}, {"train": "t.csv"}, config, LABEL_STRING)
    kept = sampled["train"]
    assert len(kept) == 100
    assert Counter(e["label"] for e in kept) == {"pos": 60, "neg": 40}  # the 60/40 of the source
    positions = [int(e["text"].split()[1]) for e in kept]
    assert positions == sorted(positions) and len(set(positions)) == 100
    assert sources["train"] == "t.csv (a sample of 100 of 1000, split_seed=3)"
    again, _ = sample_train({"train": train}, {"train": "t.csv"}, config, LABEL_STRING)
    assert again["train"] == kept
    other, _ = sample_train({"train": train}, {"train": "t.csv"}, DataConfig(max_examples=100, split_seed=4),
                            LABEL_STRING)
    assert other["train"] != kept


def test_no_sample_when_off_or_when_train_is_small_enough():
    train = _examples(6, 4)
    for size in (0, 10, 50):
        sampled, sources = sample_train({"train": train}, {"train": "t.csv"}, DataConfig(max_examples=size),
                                        LABEL_STRING)
        assert sampled["train"] == train and sources == {"train": "t.csv"}


def _tokenizer():
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def test_validation_and_test_are_carved_out_of_the_sample_after_cleaning(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"review {e['text']},{e['label']}\n" for e in _examples(700, 500, 300)))
    config = DataConfig(train_file=str(path), label_map={"plot": ""}, max_examples=240, validation_ratio=0.125,
                        test_ratio=0.25, split_seed=0)
    bundle = build_datasets(config, get_task("sequence_classification"), _tokenizer())
    sizes = {split: len(examples) for split, examples in bundle.examples.items()}
    assert sizes == {"train": 150, "validation": 30, "test": 60}
    assert bundle.cleaning["train"]["label_dropped"] == 300  # the plot rows go before sampling
    assert bundle.label_names == ("neg", "pos")
    texts = [e["text"] for split in sizes for e in bundle.examples[split]]
    assert len(set(texts)) == 240  # disjoint parts of one sample
    assert Counter(e["label"] for e in bundle.examples["test"]) == {"pos": 35, "neg": 25}  # 7:5 kept
