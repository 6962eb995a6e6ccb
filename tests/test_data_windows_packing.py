"""Sliding windows for long token-classification documents; prompt templates and packing for causal LM."""

import dataclasses
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from mgpt.config import DataConfig
from mgpt.data import DataError, build_datasets
from mgpt.data.packing import pack_rows
from mgpt.data.windows import assign_owners, plan_windows
from mgpt.tasks import get_task

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "d", "e", "f", "g", "h", "i", "play", "##ing"]
ID = {w: i for i, w in enumerate(VOCAB)}
L = -100


def bert_wordpiece():
    tok = Tokenizer(models.WordPiece(vocab=ID, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


GPT_VOCAB = ["[PAD]", "[UNK]", "</s>", "question", ":", "answer", "the", "cat", "is", "new", "york"]
G = {w: i for i, w in enumerate(GPT_VOCAB)}


def gpt_words():
    tok = Tokenizer(models.WordLevel(G, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


# Ten words; "playing" is two sub-words (play ##ing).
DOC = ["a", "b", "c", "d", "playing", "e", "f", "g", "h", "i"]
PIECES = [1, 1, 1, 1, 2, 1, 1, 1, 1, 1]


def test_window_plan_and_owners_by_hand():
    # max_length 6 minus [CLS] [SEP] leaves 4 sub-words a window; overlap at most 2.
    windows = plan_windows(PIECES, budget=4, stride=2)
    assert windows == [(0, 4), (2, 5), (4, 7), (5, 9), (7, 10)]
    # Each word goes to the window where min(sub-words before, after) is largest; ties: earlier.
    assert assign_owners(PIECES, windows).tolist() == [0, 0, 0, 1, 1, 2, 3, 3, 4, 4]
    assert plan_windows([1, 1, 1], budget=4, stride=2) == [(0, 3)]
    assert plan_windows([], budget=4, stride=2) == [(0, 0)]


def test_long_document_every_word_predicted_once_from_its_window(tmp_path):
    tags = ["O", "O", "O", "O", "B-X", "O", "O", "O", "O", "B-X"]
    train = tmp_path / "doc.conll"
    train.write_text("".join(f"{w} {t}\n" for w, t in zip(DOC, tags)))
    cfg = DataConfig(format="conll", train_file=str(train), max_length=6, stride=2)
    bundle = build_datasets(cfg, get_task("token_classification"), bert_wordpiece())
    arrays = bundle.splits["train"]
    assert bundle.row_example["train"].tolist() == [0, 0, 0, 0, 0]
    assert bundle.word_offset["train"].tolist() == [0, 2, 4, 5, 7]
    assert bundle.num_words["train"].tolist() == [10]
    P, ING = ID["play"], ID["##ing"]
    np.testing.assert_array_equal(arrays["input_ids"], [
        [2, ID["a"], ID["b"], ID["c"], ID["d"], 3],
        [2, ID["c"], ID["d"], P, ING, 3],
        [2, P, ING, ID["e"], ID["f"], 3],
        [2, ID["e"], ID["f"], ID["g"], ID["h"], 3],
        [2, ID["g"], ID["h"], ID["i"], 3, 0],
    ])
    # A row indexes (and is trained on) only the words it owns.
    np.testing.assert_array_equal(bundle.word_index["train"], [
        [1, 2, 3, -1], [-1, 2, 3, -1], [-1, 3, -1, -1], [-1, 2, 3, -1], [-1, 2, 3, -1]])
    O, B = bundle.label_names.index("O"), bundle.label_names.index("B-X")
    np.testing.assert_array_equal(arrays["labels"], [
        [L, O, O, O, L, L], [L, L, O, B, L, L], [L, L, L, O, L, L], [L, L, O, O, L, L], [L, L, O, B, L, L]])
    assert int((arrays["labels"] != L).sum()) == 10  # each word once
    # Evaluation maps the rows back to the document: a row "predicts" its own number everywhere.
    data = dataclasses.replace(bundle, label_names=tuple(f"window{r}" for r in range(5)))
    words = get_task("token_classification").decode(np.repeat(np.arange(5)[:, None], 6, axis=1), data, "train")
    assert words == [["window0", "window0", "window0", "window1", "window1", "window2", "window3", "window3",
                      "window4", "window4"]]


def test_stride_must_leave_room():
    with pytest.raises(DataError, match=r"data.stride=4 must be in \[0, 4\)"):
        from mgpt.data.windows import encode_token_windows

        encode_token_windows([{"tokens": DOC}], bert_wordpiece(), 6, {"O": 0}, stride=4)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompt_template_scores_only_the_answer(tmp_path):
    train = write_jsonl(tmp_path / "qa.jsonl", [{"question": "the cat", "answer": "new york", "id": 7}])
    cfg = DataConfig(format="jsonl", train_file=train, prompt_template="question: {question} answer:",
                     target_column="answer", max_length=10)
    bundle = build_datasets(cfg, get_task("causal_lm"), gpt_words())
    assert bundle.examples["train"] == [{"text": "question: the cat answer:", "text_pair": "new york"}]
    a = bundle.splits["train"]
    q, c, ans, EOS = G["question"], G[":"], G["answer"], G["</s>"]
    np.testing.assert_array_equal(a["input_ids"], [[q, c, G["the"], G["cat"], ans, c, G["new"], G["york"], EOS, 0]])
    np.testing.assert_array_equal(a["labels"], [[L, L, L, L, L, L, G["new"], G["york"], EOS, L]])
    np.testing.assert_array_equal(a["attention_mask"], [[1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])
    bad = DataConfig(format="jsonl", train_file=train, prompt_template="question: {query}", target_column="answer")
    with pytest.raises(DataError, match=rf"{train}:1: data.prompt_template needs field\(s\) \['query'\]"):
        build_datasets(bad, get_task("causal_lm"), gpt_words())


def test_packing_arrays_by_hand():
    the, cat, new, york, is_, EOS = G["the"], G["cat"], G["new"], G["york"], G["is"], G["</s>"]
    arrays = {  # three examples of 3, 5 and 2 tokens (answer-only labels in the first), max_length 8
        "input_ids": np.array([[the, cat, EOS, 0, 0, 0, 0, 0], [new, york, is_, new, EOS, 0, 0, 0],
                               [cat, EOS, 0, 0, 0, 0, 0, 0]]),
        "attention_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]),
        "labels": np.array([[L, cat, EOS, L, L, L, L, L], [new, york, is_, new, EOS, L, L, L],
                            [cat, EOS, L, L, L, L, L, L]]),
    }
    packed = pack_rows(arrays, 8, pad_id=0)
    np.testing.assert_array_equal(packed["input_ids"], [[the, cat, EOS, new, york, is_, new, EOS],
                                                        [cat, EOS, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(packed["attention_mask"], [[1] * 8, [1, 1, 0, 0, 0, 0, 0, 0]])
    # Each segment's first token is not scored (nothing of its own predicts it).
    np.testing.assert_array_equal(packed["labels"], [[L, cat, EOS, L, york, is_, new, EOS], [L, EOS, L, L, L, L, L, L]])
    np.testing.assert_array_equal(packed["segment_ids"], [[1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(packed["position_ids"], [[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 0, 0, 0, 0, 0, 0]])
    assert all(v.dtype == np.int32 for v in packed.values())


def test_pack_only_the_training_split(tmp_path):
    rows = [{"text": "the cat"}, {"text": "new york is new"}, {"text": "cat"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", rows)
    cfg = DataConfig(format="jsonl", train_file=train, validation_file=val, max_length=8, pack=True)
    bundle = build_datasets(cfg, get_task("causal_lm"), gpt_words())
    assert bundle.splits["train"]["input_ids"].shape == (2, 8)
    assert sorted(bundle.splits["train"]) == ["attention_mask", "input_ids", "labels", "position_ids", "segment_ids"]
    assert bundle.splits["validation"]["input_ids"].shape == (3, 8)  # one example per row for evaluation

