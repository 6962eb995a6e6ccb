"""Tokenization into fixed-length arrays, sub-word label alignment, truncation warnings, build_datasets."""

import logging

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from mgpt.config import DataConfig
from mgpt.data import DataError, build_datasets
from mgpt.data.encode import encode_causal_lm, encode_tokens
from mgpt.tasks import get_task

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "play", "##ing", "##s", "new", "york", "is", "un",
         "##believ", "##able", "</s>"]
ID = {piece: i for i, piece in enumerate(VOCAB)}
PAD, CLS, SEP = ID["[PAD]"], ID["[CLS]"], ID["[SEP]"]


def wordpiece(bert_style=True, token_type_ids=True):
    """A tiny lower-casing WordPiece tokenizer; BERT-style adds [CLS] ... [SEP]."""
    tok = Tokenizer(models.WordPiece(vocab=ID, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = dict(unk_token="[UNK]", pad_token="[PAD]")
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
        )
        kwargs.update(cls_token="[CLS]", sep_token="[SEP]")
    else:
        kwargs.update(eos_token="</s>")
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_type_ids else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=names, **kwargs)


TAGS = ("O", "B-LOC", "B-MISC", "I-LOC", "I-MISC")
TAG_ID = {t: i for i, t in enumerate(TAGS)}
NER = [{"tokens": ["New", "York", "is", "unbelievable"], "tags": ["B-LOC", "I-LOC", "O", "B-MISC"]},
       {"tokens": ["cats"], "tags": ["O"]}]


def encode_with(kind, examples, tokenizer, max_length, label_to_id=None, where=""):
    """A split encoded the way build_datasets has the task encode it."""
    return get_task(kind).encode(examples, tokenizer, DataConfig(max_length=max_length), label_to_id or {},
                                 split="train", where=where)


def test_sequence_encoding_right_padded_with_labels():
    enc = encode_with("sequence_classification",
                      [{"text": "the cat", "label": "b"}, {"text": "Playing", "label": "a"}],
                      wordpiece(), 6, {"a": 0, "b": 1})
    a = enc.arrays
    np.testing.assert_array_equal(a["input_ids"], [[CLS, 4, 5, SEP, PAD, PAD], [CLS, 6, 7, SEP, PAD, PAD]])
    np.testing.assert_array_equal(a["attention_mask"], [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(a["token_type_ids"], np.zeros((2, 6)))
    np.testing.assert_array_equal(a["labels"], [1, 0])
    assert a["input_ids"].dtype == np.int32 and a["labels"].dtype == np.int32
    assert enc.num_truncated == 0


def test_pair_encoding_token_types_and_regression_labels():
    enc = encode_with("regression", [{"text": "the cat", "text_pair": "new york", "label": 0.25}], wordpiece(), 8)
    np.testing.assert_array_equal(enc.arrays["input_ids"], [[CLS, 4, 5, SEP, 9, 10, SEP, PAD]])
    np.testing.assert_array_equal(enc.arrays["token_type_ids"], [[0, 0, 0, 0, 1, 1, 1, 0]])
    assert enc.arrays["labels"].dtype == np.float32 and enc.arrays["labels"].tolist() == [0.25]


def test_no_token_type_ids_when_tokenizer_does_not_return_them():
    enc = encode_with("sequence_classification", [{"text": "the cat", "label": "a"}], wordpiece(token_type_ids=False),
                      5, {"a": 0})
    assert sorted(enc.arrays) == ["attention_mask", "input_ids", "labels"]


def test_sequence_truncation_warns_with_count(caplog):
    examples = [{"text": "the cat is new", "label": "a"}, {"text": "cat", "label": "a"},
                {"text": "unbelievable", "label": "a"}]
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        enc = encode_with("sequence_classification", examples, wordpiece(), 4, {"a": 0}, where="train")
    np.testing.assert_array_equal(enc.arrays["input_ids"][0], [CLS, 4, 5, SEP])
    assert enc.num_truncated == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 3 examples in train" in warnings[0] and "max_length=4" in warnings[0]


def test_first_subword_alignment():
    enc = encode_tokens(NER, wordpiece(), 10, TAG_ID)
    # [CLS] new york is un ##believ ##able [SEP] [PAD] [PAD]
    np.testing.assert_array_equal(enc.arrays["input_ids"][0], [CLS, 9, 10, 11, 12, 13, 14, SEP, PAD, PAD])
    L, B, I, O, BM = -100, TAG_ID["B-LOC"], TAG_ID["I-LOC"], TAG_ID["O"], TAG_ID["B-MISC"]
    np.testing.assert_array_equal(enc.arrays["labels"][0], [L, B, I, O, BM, L, L, L, L, L])
    # cats -> cat ##s: only the first piece is labelled.
    np.testing.assert_array_equal(enc.arrays["labels"][1], [L, O, L, L, L, L, L, L, L, L])
    np.testing.assert_array_equal(enc.word_index, [[1, 2, 3, 4], [1, -1, -1, -1]])
    np.testing.assert_array_equal(enc.num_words, [4, 1])


def test_label_all_subwords_turns_b_into_i():
    enc = encode_tokens(NER, wordpiece(), 10, TAG_ID, label_all_subwords=True)
    L, IM, O = -100, TAG_ID["I-MISC"], TAG_ID["O"]
    np.testing.assert_array_equal(
        enc.arrays["labels"][0], [L, TAG_ID["B-LOC"], TAG_ID["I-LOC"], O, TAG_ID["B-MISC"], IM, IM, L, L, L]
    )
    np.testing.assert_array_equal(enc.arrays["labels"][1], [L, O, O, L, L, L, L, L, L, L])


def test_token_truncation_warns_and_marks_lost_words(caplog):
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        enc = encode_tokens(NER, wordpiece(), 5, TAG_ID, where="validation")
    # [CLS] new york is [SEP]: "unbelievable" is gone.
    np.testing.assert_array_equal(enc.arrays["input_ids"][0], [CLS, 9, 10, 11, SEP])
    np.testing.assert_array_equal(enc.word_index[0], [1, 2, 3, -1])
    assert enc.num_truncated == 1 and enc.words_lost == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1 of 2 examples in validation" in warnings[0]
    assert "max_length=5" in warnings[0] and "1 words past the cut" in warnings[0]


def test_causal_lm_appends_eos_and_masks_prompt():
    tok = wordpiece(bert_style=False, token_type_ids=False)
    EOS = ID["</s>"]
    enc = encode_causal_lm([{"text": "the cat"}, {"text": "new york is new york"}], tok, 5)
    np.testing.assert_array_equal(enc.arrays["input_ids"], [[4, 5, EOS, PAD, PAD], [9, 10, 11, 9, 10]])
    np.testing.assert_array_equal(enc.arrays["labels"], [[4, 5, EOS, -100, -100], [9, 10, 11, 9, 10]])
    np.testing.assert_array_equal(enc.arrays["attention_mask"], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert enc.num_truncated == 1  # the second lost its end-of-text token
    pair = encode_causal_lm([{"text": "the new cat", "text_pair": "is new"}], tok, 5)
    # The prompt is shortened to keep the scored completion "is new </s>".
    np.testing.assert_array_equal(pair.arrays["input_ids"], [[4, 9, 11, 9, EOS]])
    np.testing.assert_array_equal(pair.arrays["labels"], [[-100, -100, 11, 9, EOS]])


# ---------------------------------------------------------------- build_datasets


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_build_datasets_classification(tmp_path):
    train = write(tmp_path, "train.csv", "sentence,y\nthe cat,pos\nnew york,neg\ncat,pos\n")
    test = write(tmp_path, "test.csv", "sentence,y\nplaying,neg\n")
    cfg = DataConfig(format="csv", train_file=train, test_file=test, text_column="sentence", label_column="y",
                     max_length=6)
    bundle = build_datasets(cfg, get_task("sequence_classification"), wordpiece())
    assert bundle.label_names == ("neg", "pos") and bundle.num_labels == 2
    assert sorted(bundle.splits) == ["test", "train"]
    np.testing.assert_array_equal(bundle.splits["train"]["labels"], [1, 0, 1])
    np.testing.assert_array_equal(bundle.splits["test"]["input_ids"], [[CLS, 6, 7, SEP, PAD, PAD]])
    assert bundle.examples["test"] == [{"text": "playing", "label": "neg"}]
    np.testing.assert_array_equal(bundle.references("train"), [1, 0, 1])
    # A fixed label order from the config wins.
    fixed = build_datasets(
        DataConfig(format="csv", train_file=train, text_column="sentence", label_column="y", labels=("pos", "neg")),
        get_task("sequence_classification"), wordpiece(),
    )
    np.testing.assert_array_equal(fixed.splits["train"]["labels"], [0, 1, 0])


def test_eval_label_not_in_training_labels_fails(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\nthe cat,pos\n")
    val = write(tmp_path, "val.csv", "text,label\ncat,neutral\n")
    cfg = DataConfig(format="csv", train_file=train, validation_file=val)
    with pytest.raises(DataError, match=rf"{val}: label 'neutral' \(validation split\) is not in the label list"):
        build_datasets(cfg, get_task("sequence_classification"), wordpiece())


def test_build_datasets_ner(tmp_path):
    train = write(tmp_path, "train.conll", "New B-LOC\nYork I-LOC\nis O\nunbelievable B-MISC\n\ncats O\n")
    val = write(tmp_path, "dev.conll", "cats S-MISC\n")  # BIOES in this file: S- becomes B-
    cfg = DataConfig(format="conll", train_file=train, validation_file=val, max_length=10)
    bundle = build_datasets(cfg, get_task("token_classification"), wordpiece())
    assert bundle.label_names == ("O", "B-LOC", "B-MISC", "I-LOC")
    np.testing.assert_array_equal(bundle.word_index["train"], [[1, 2, 3, 4], [1, -1, -1, -1]])
    np.testing.assert_array_equal(bundle.num_words["validation"], [1])
    np.testing.assert_array_equal(bundle.splits["validation"]["labels"][0, :3], [-100, 2, -100])
    assert bundle.references("validation") == [["B-MISC"]]
    # Labelling every sub-word needs I-MISC, which is added for the B-MISC seen in training.
    cfg_all = DataConfig(format="conll", train_file=train, max_length=10, label_all_subwords=True)
    assert build_datasets(cfg_all, get_task("token_classification"), wordpiece()).label_names == (
        "O", "B-LOC", "B-MISC", "I-LOC", "I-MISC")


def test_build_datasets_rejects_wrong_format_for_task(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\nthe cat,pos\n")
    with pytest.raises(DataError, match="token_classification reads data.format='conll'"):
        build_datasets(DataConfig(format="csv", train_file=train), get_task("token_classification"), wordpiece())
    with pytest.raises(DataError, match="no data files"):
        build_datasets(DataConfig(format="csv"), get_task("sequence_classification"), wordpiece())


def test_predict_split_labels_optional(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\nthe cat,pos\nnew york,neg\n")
    unlabelled = write(tmp_path, "new.csv", "text\nplaying\n")
    cfg = DataConfig(format="csv", train_file=train, predict_file=unlabelled, max_length=6)
    bundle = build_datasets(cfg, get_task("sequence_classification"), wordpiece())
    assert bundle.examples["predict"] == [{"text": "playing"}]
    np.testing.assert_array_equal(bundle.splits["predict"]["labels"], [-100])
    # Token classification: a token-only CoNLL file to tag.
    ner_train = write(tmp_path, "train.conll", "New B-LOC\nYork I-LOC\n")
    tokens_only = write(tmp_path, "new.conll", "the\ncats\n\nnew\n")
    cfg = DataConfig(format="conll", train_file=ner_train, predict_file=tokens_only, max_length=6)
    bundle = build_datasets(cfg, get_task("token_classification"), wordpiece())
    assert bundle.examples["predict"] == [{"tokens": ["the", "cats"]}, {"tokens": ["new"]}]
    np.testing.assert_array_equal(bundle.word_index["predict"], [[1, 2], [1, -1]])
    assert (bundle.splits["predict"]["labels"] == -100).all()
