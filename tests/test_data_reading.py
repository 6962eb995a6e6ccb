"""The one data path: one reader per format into records, one conversion to examples, the task encodes."""

import ast
import pathlib

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import mgpt
from mgpt import constants, losses
from mgpt.config import DataConfig
from mgpt.data import DataError, build_datasets, errors
from mgpt.data.encode import class_ids, encode_texts
from mgpt.data.formats import FORMATS, READERS
from mgpt.data.labels import LABEL_KINDS, LABEL_NONE, LABEL_STRING
from mgpt.data.reading import read_examples, read_file
from mgpt.tasks import TASKS, get_task

PACKAGE = pathlib.Path(mgpt.__file__).parent


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def tokenizer():
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", "good", "bad", "film", "plot", "a", "b"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def test_every_format_the_config_names_has_one_reader():
    assert set(FORMATS) == {"csv", "tsv", "jsonl", "conll", "tfds", "lines", "parallel", "chat"}
    assert set(READERS) == set(FORMATS) - {"tfds"}  # TFDS reads a data set by name, not a file


def test_each_format_reads_into_records_with_file_and_line(tmp_path):
    cfg = DataConfig()
    csv_path = write(tmp_path, "a.csv", 'text,label\n"good, film",pos\n\nbad,neg\n')
    assert read_file(csv_path, cfg, fmt="csv").rows == [
        (f"{csv_path}:2", {"text": "good, film", "label": "pos"}), (f"{csv_path}:4", {"text": "bad", "label": "neg"})]
    tsv_path = write(tmp_path, "a.tsv", "label\ttext\npos\tgood, film\n")
    assert read_file(tsv_path, cfg, fmt="tsv").rows == [(f"{tsv_path}:2", {"label": "pos", "text": "good, film"})]
    jsonl_path = write(tmp_path, "a.jsonl", '{"text": ["good", "film"], "n": 1}\n\n{"text": "bad", "n": null}\n')
    assert read_file(jsonl_path, cfg, fmt="jsonl").rows == [
        (f"{jsonl_path}:1", {"text": ["good", "film"], "n": 1}), (f"{jsonl_path}:3", {"text": "bad", "n": None})]
    lines_path = write(tmp_path, "a.txt", "good film@pos\nno label\n")
    named = DataConfig(text_column="sentence", label_column="y")  # lines fields take the configured names
    assert read_file(lines_path, named, fmt="lines").rows == [
        (f"{lines_path}:1", {"sentence": "good film", "y": "pos"}), (f"{lines_path}:2", {"sentence": "no label"})]
    conll_path = write(tmp_path, "a.conll", "-DOCSTART- O\n\nJohn B-PER\nran O\n\nParis B-LOC\n")
    assert read_file(conll_path, cfg, fmt="conll").rows == [
        (f"{conll_path}:3", {"text": ["John", "ran"], "label": ["B-PER", "O"]}),
        (f"{conll_path}:6", {"text": ["Paris"], "label": ["B-LOC"]})]
    (tmp_path / "p.de").write_text("Hallo\n")
    (tmp_path / "p.en").write_text("Hello\n")
    assert read_file(f"{tmp_path}/p.de->en", cfg, fmt="parallel").rows == [
        (f"{tmp_path}/p.de:1", {"source": "Hallo", "target": "Hello", "source_lang": "de", "target_lang": "en"})]
    with pytest.raises(DataError, match="unknown data format 'xml'"):
        read_file(csv_path, cfg, fmt="xml")


def test_one_conversion_whatever_the_format(tmp_path):
    expected = [{"text": "good film", "label": "pos"}, {"text": "bad plot", "label": "neg"}]
    files = {
        "csv": write(tmp_path, "t.csv", "text,label\ngood film,pos\nbad plot,neg\n"),
        "tsv": write(tmp_path, "t.tsv", "text\tlabel\ngood film\tpos\nbad plot\tneg\n"),
        "jsonl": write(tmp_path, "t.jsonl",
                       '{"text": "good film", "label": "pos"}\n{"text": "bad plot", "label": "neg"}\n'),
        "lines": write(tmp_path, "t.txt", "good film@pos\nbad plot@neg\n"),
    }
    for fmt, path in files.items():
        assert read_examples(path, DataConfig(format=fmt), LABEL_STRING) == expected, fmt
    # A prompt template reads any format's fields, the lines format's too.
    lm = DataConfig(format="lines", prompt_template="Review: {text}\nSentiment:", target_column="label")
    assert read_examples(files["lines"], lm, LABEL_NONE)[1] == {"text": "Review: bad plot\nSentiment:",
                                                                  "text_pair": "neg"}


def test_errors_and_ignore_index_have_one_home():
    classes, assignments = [], []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == "DataError":
                classes.append(path.relative_to(PACKAGE).as_posix())
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "IGNORE_INDEX" for t in node.targets):
                assignments.append(path.relative_to(PACKAGE).as_posix())
    assert classes == ["data/errors.py"]
    assert assignments == ["constants.py"]
    assert DataError is errors.DataError and issubclass(DataError, ValueError)
    assert losses.IGNORE_INDEX == constants.IGNORE_INDEX == -100


def test_data_layer_never_imports_tasks_nor_compares_task_names():
    kinds = set(TASKS)
    for path in (PACKAGE / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith(("mgpt.tasks", "mgpt.train")) for n in names), path.name
            if isinstance(node, ast.Compare):
                constants_ = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                assert not kinds & set(constants_), f"{path.name}:{node.lineno} compares a task kind"


def test_every_task_declares_its_labels_and_encodes():
    for kind in TASKS:
        task = get_task(kind)
        assert task.label_kind in LABEL_KINDS and callable(task.encode), kind
    assert get_task("generation").label_kind == get_task("causal_lm").label_kind == LABEL_NONE


class _RecordingTask:
    """A task the data layer knows only by its protocol: name, label_kind, encode."""

    name = "my_classifier"
    label_kind = LABEL_STRING

    def __init__(self):
        self.calls = []

    def encode(self, examples, tokenizer, data_cfg, label_to_id, *, split, where):
        self.calls.append((split, where, dict(label_to_id)))
        encoded = encode_texts(examples, tokenizer, data_cfg.max_length, where=where)
        encoded.arrays["labels"] = class_ids(examples, label_to_id, where)
        return encoded


def test_build_datasets_asks_the_task_how_its_labels_look_and_lets_it_encode(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\ngood film,pos\nbad plot,neg\ngood plot,pos\n")
    cfg = DataConfig(train_file=train, max_length=4)
    task = _RecordingTask()
    bundle = build_datasets(cfg, task, tokenizer())
    assert task.calls == [("train", f"train ({train})", {"neg": 0, "pos": 1})]
    np.testing.assert_array_equal(bundle.splits["train"]["labels"], [1, 0, 1])
    np.testing.assert_array_equal(bundle.splits["train"]["input_ids"], [[3, 5, 0, 0], [4, 6, 0, 0], [3, 6, 0, 0]])
    reference = build_datasets(cfg, get_task("sequence_classification"), tokenizer())
    for key, value in reference.splits["train"].items():
        np.testing.assert_array_equal(bundle.splits["train"][key], value)
    with pytest.raises(DataError, match=r"data.stride \(sliding windows\) is for token_classification, not my_clas"):
        build_datasets(DataConfig(train_file=train, stride=2), task, tokenizer())
    with pytest.raises(DataError, match=r"takes a task object \(mgpt.tasks.get_task\('sequence_classification'\)\)"):
        build_datasets(cfg, "sequence_classification", tokenizer())
    task.label_kind = "bag_of_labels"
    with pytest.raises(DataError, match="label kind 'bag_of_labels' is not one of none, string"):
        build_datasets(cfg, task, tokenizer())


def test_generation_encodes_its_data_as_causal_lm(tmp_path):
    train = write(tmp_path, "qa.jsonl", '{"q": "good film", "a": "a"}\n{"q": "bad plot", "a": "b"}\n')
    cfg = DataConfig(format="jsonl", train_file=train, prompt_template="{q}", target_column="a", max_length=6)
    generation = build_datasets(cfg, get_task("generation"), tokenizer())
    causal = build_datasets(cfg, get_task("causal_lm"), tokenizer())
    assert generation.label_kind == causal.label_kind == LABEL_NONE
    for key, value in causal.splits["train"].items():
        np.testing.assert_array_equal(generation.splits["train"][key], value)
    # Only the completion (and its end-of-text token) is scored.
    np.testing.assert_array_equal(causal.splits["train"]["labels"][0], [-100, -100, 7, 2, -100, -100])
