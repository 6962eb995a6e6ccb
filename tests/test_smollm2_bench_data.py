"""experiments/benchmarks/smollm2_data.py: both sides of the SmolLM2 benchmarks see the same examples and prompts.

The subsets are a fixed function of the files (not of a seed, the row order or the library versions),
Banking77's training subset never repeats a test text, and a SciTLDR example renders exactly as the
tokenizer's own chat template renders it, with the loss on the assistant turn only.
"""

import csv
import json
import os
import sys

import pytest
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments", "benchmarks"))
import smollm2_data as sd  # noqa: E402

LABELS = ["card_arrival", "exchange_rate", "top_up"]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    path = sd.gguf_path()
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def write_banking77(directory, train_rows, test_rows):
    os.makedirs(directory / "banking77", exist_ok=True)
    for name, rows in (("train", train_rows), ("test", test_rows)):
        with open(directory / "banking77" / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["text", "category"]] + rows)
    (directory / "banking77" / "categories.json").write_text(json.dumps(LABELS))


def banking_rows(count):
    return [[f"query number {i} about {LABELS[i % 3]}", LABELS[i % 3]] for i in range(count)]


def test_banking77_subsets_are_fixed_balanced_and_disjoint_from_test(tmp_path):
    train_rows, test_rows = banking_rows(30), [[f"test query {i}", LABELS[i % 3]] for i in range(12)]
    test_rows[0] = ["Query number 4  about exchange_rate", "exchange_rate"]  # a train text again (case, spaces)
    write_banking77(tmp_path / "a", train_rows, test_rows)
    write_banking77(tmp_path / "b", train_rows[::-1], test_rows[::-1])  # same records, other file order

    train, test = sd.banking77_subsets(str(tmp_path / "a"), 9, 6)
    assert (train, test) == sd.banking77_subsets(str(tmp_path / "a"), 9, 6)
    train_b, test_b = sd.banking77_subsets(str(tmp_path / "b"), 9, 6)
    assert train_b == train and test_b == test
    assert [sum(r["label"] == name for r in train) for name in LABELS] == [3, 3, 3]
    assert [sum(r["label"] == name for r in test) for name in LABELS] == [2, 2, 2]
    test_texts = {" ".join(r[0].lower().split()) for r in test_rows}
    assert not {" ".join(r["text"].lower().split()) for r in train} & test_texts
    assert all(r["text"] != "query number 4 about exchange_rate" for r in sd.banking77_subsets(
        str(tmp_path / "a"), 29, 6)[0])  # the whole pool but the one repeated text
    # The first N of the fixed shuffle: a larger subset contains the smaller one.
    assert all(r in sd.banking77_subsets(str(tmp_path / "a"), 15, 6)[0] for r in train)
    assert sd.banking77_labels(str(tmp_path / "a")) == LABELS
    with pytest.raises(ValueError, match="asked for 30 examples, the pool holds 29"):
        sd.banking77_subsets(str(tmp_path / "a"), 30, 6)


def write_scitldr(directory, split, count, words=12):
    os.makedirs(directory / "scitldr", exist_ok=True)
    with open(directory / "scitldr" / f"{split}.jsonl", "w") as f:
        for i in range(count):
            source = [" ".join(f"{split}{i}word{k}" for k in range(words)) + ".", "  Second sentence.\n\n"]
            f.write(json.dumps({"paper_id": f"{split}{i}", "source": source, "target": [f"TLDR {i}.", "other"],
                                "title": "t", "source_labels": [0, 1], "rouge_scores": [0.1, 0.2]}) + "\n")


def test_scitldr_records_subsets_and_fitting(tmp_path, smollm2_tokenizer):
    write_scitldr(tmp_path, "train", 10)
    write_scitldr(tmp_path, "test", 6, words=200)
    record = sd.read_scitldr(str(tmp_path), "train")[3]
    assert record == {"paper_id": "train3", "target": "TLDR 3.",
                      "source": " ".join(f"train3word{k}" for k in range(12)) + ". Second sentence."}
    train, test = sd.scitldr_subsets(str(tmp_path), smollm2_tokenizer, 4, 3, max_length=160, max_new_tokens=64)
    assert (train, test) == sd.scitldr_subsets(str(tmp_path), smollm2_tokenizer, 4, 3, 160, 64)
    assert [r["paper_id"] for r in train] == [r["paper_id"] for r in sd.shuffled(
        sd.read_scitldr(str(tmp_path), "train"), "paper_id")[:4]]
    assert train[0]["source"].endswith("Second sentence.")  # short enough: untouched

    def prompt_length(source):
        return len(smollm2_tokenizer.apply_chat_template(sd.chat_messages(source), add_generation_prompt=True,
                                                         return_dict=False))

    full = {r["paper_id"]: r["source"] for r in sd.read_scitldr(str(tmp_path), "test")}
    for r in test:  # cut at whole words, as long as fits in 160 - 64 tokens
        kept = r["source"].split(" ")
        assert full[r["paper_id"]].startswith(r["source"]) and prompt_length(r["source"]) <= 96
        assert prompt_length(" ".join(full[r["paper_id"]].split(" ")[:len(kept) + 1])) > 96


def test_chat_rendering_equals_the_template_and_scores_the_answer_only(smollm2_tokenizer, tmp_path):
    write_scitldr(tmp_path, "train", 1)
    record = sd.read_scitldr(str(tmp_path), "train")[0]
    messages = sd.chat_messages(record["source"], record["target"])
    assert messages == [{"role": "user", "content": "Summarize in one sentence:\n\n" + record["source"]},
                        {"role": "assistant", "content": "TLDR 0."}]
    ids, labels = sd.render_chat(smollm2_tokenizer, messages)
    assert ids == smollm2_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    prompt = smollm2_tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, return_dict=False)
    assert len(labels) == len(ids) and labels[:len(prompt)] == [-100] * len(prompt)
    scored = labels[len(prompt):]
    assert scored == ids[len(prompt):] and smollm2_tokenizer.decode(scored) == "TLDR 0.<|im_end|>\n"
    text = smollm2_tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>assistant\nTLDR 0.<|im_end|>" in text


def test_chat_jsonl_and_csv_for_the_mgpt_side(tmp_path):
    records = [{"paper_id": "p", "source": "An abstract.", "target": "A TLDR."}]
    path = sd.write_chat_jsonl(str(tmp_path / "out" / "train.jsonl"), records)
    assert json.loads(open(path).read()) == {"messages": sd.chat_messages("An abstract.", "A TLDR.")}
    path = sd.write_banking77_csv(str(tmp_path / "out" / "train.csv"), [{"text": "a, b", "label": "top_up"}])
    assert list(csv.reader(open(path))) == [["text", "category"], ["a, b", "top_up"]]
