"""File readers: CSV / TSV / JSONL and CoNLL with tag-scheme normalisation."""

import pytest

from mgpt.config import DataConfig
from mgpt.data.conll import read_conll
from mgpt.data.errors import DataError
from mgpt.data.labels import LABEL_STRING
from mgpt.data.reading import read_examples
from mgpt.data.tags import detect_scheme, to_iob2


def read(path, fmt, label_kind=LABEL_STRING, labels_optional=False, **columns):
    """The examples of one file, through the data path's one entry point."""
    return read_examples(path, DataConfig(format=fmt, **columns), label_kind, labels_optional)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- CSV / TSV / JSONL


def test_csv_custom_columns_with_pair_and_quoted_commas(tmp_path):
    path = write(
        tmp_path,
        "train.csv",
        'id,sentence1,sentence2,gold\n1,"Hello, world",Hi there,yes\n2,Bye,"See you, later",no\n',
    )
    rows = read(path, "csv", text_column="sentence1", text_pair_column="sentence2", label_column="gold")
    assert rows == [
        {"text": "Hello, world", "text_pair": "Hi there", "label": "yes"},
        {"text": "Bye", "text_pair": "See you, later", "label": "no"},
    ]


def test_tsv_regression_labels_are_floats(tmp_path):
    path = write(tmp_path, "train.tsv", "score\tsent\n0.5\ta, b\n3\tc\n")
    rows = read(path, "tsv", text_column="sent", label_column="score", label_kind="float")
    assert rows == [{"text": "a, b", "label": 0.5}, {"text": "c", "label": 3.0}]
    assert all(isinstance(r["label"], float) for r in rows)


def test_jsonl_custom_keys_numeric_class_label_becomes_string(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"q": "what?", "y": 1}\n\n{"q": ["two", "parts"], "y": "neg"}\n')
    rows = read(path, "jsonl", text_column="q", label_column="y")
    assert rows == [{"text": "what?", "label": "1"}, {"text": "two parts", "label": "neg"}]


def test_no_label_kind_reads_text_only(tmp_path):
    path = write(tmp_path, "lm.jsonl", '{"text": "a b c"}\n')
    assert read(path, "jsonl", label_kind="none") == [{"text": "a b c"}]


def test_csv_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.csv", "text,label\ngood,a\nbad,a,extra\n")
    with pytest.raises(DataError, match=rf"{path}:3: expected 2 columns"):
        read(path, "csv")


def test_csv_missing_column_names_it(tmp_path):
    path = write(tmp_path, "bad.csv", "sentence,label\nx,a\n")
    with pytest.raises(DataError, match=rf"{path}:1: missing column 'text'"):
        read(path, "csv")


def test_regression_label_not_a_number(tmp_path):
    path = write(tmp_path, "r.tsv", "text\tlabel\nfine\t1.5\nbroken\thigh\n")
    with pytest.raises(DataError, match=rf"{path}:3: regression label 'high' is not a number"):
        read(path, "tsv", label_kind="float")


def test_jsonl_bad_json_and_missing_key_name_the_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match=rf"{path}:2: expected one JSON object per line"):
        read(path, "jsonl")
    path = write(tmp_path, "missing.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b"}\n')
    with pytest.raises(DataError, match=rf"{path}:3: missing key 'label'"):
        read(path, "jsonl")


def test_empty_files_fail(tmp_path):
    for name, fmt in (("e.csv", "csv"), ("e.jsonl", "jsonl")):
        path = write(tmp_path, name, "")
        with pytest.raises(DataError, match="empty"):
            read(path, fmt)
    with pytest.raises(DataError, match="no examples"):
        read(write(tmp_path, "h.csv", "text,label\n"), "csv")
    with pytest.raises(DataError, match="empty"):
        read_conll(write(tmp_path, "e.conll", ""))


# ---------------------------------------------------------------- CoNLL


def test_conll_two_columns_docstart_and_blank_lines(tmp_path):
    path = write(
        tmp_path,
        "two.conll",
        "-DOCSTART- O\n\nJohn B-PER\nlives O\n \t\nin O\nNew B-LOC\nYork I-LOC\n\n\n",
    )
    assert read_conll(path) == [
        {"tokens": ["John", "lives"], "tags": ["B-PER", "O"]},
        {"tokens": ["in", "New", "York"], "tags": ["O", "B-LOC", "I-LOC"]},
    ]


def test_conll_four_columns_choose_columns(tmp_path):
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n"
    path = write(tmp_path, "four.conll", text)
    expected = [{"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]}]
    assert read_conll(path) == expected  # default: token 0, label -1
    assert read_conll(path, token_column=0, label_column=3) == expected
    # The chunk column is itself an IOB column; tokens can come from another column too.
    assert read_conll(path, token_column=1, label_column=2) == [
        {"tokens": ["NNP", "VBZ", "JJ"], "tags": ["B-NP", "B-VP", "B-NP"]}
    ]


def test_conll_too_few_columns_names_line(tmp_path):
    path = write(tmp_path, "short.conll", "EU NNP B-ORG\nrejects O\n")
    with pytest.raises(DataError, match=rf"{path}:2: expected at least 3"):
        read_conll(path, token_column=0, label_column=2)
    path = write(tmp_path, "one.conll", "EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=rf"{path}:2: expected at least 2"):
        read_conll(path)  # token 0 and label -1 need two columns


def test_conll_invalid_tags_name_line(tmp_path):
    path = write(tmp_path, "x.conll", "John B-PER\nSmith X-PER\n")
    with pytest.raises(DataError, match=rf"{path}:2: invalid tag 'X-PER'"):
        read_conll(path)
    path = write(tmp_path, "b.conll", "a O\n\nJohn B\n")
    with pytest.raises(DataError, match=rf"{path}:3: invalid tag 'B'"):
        read_conll(path)


def test_iob1_to_iob2_by_hand():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-PER", "I-ORG"]
    assert detect_scheme([tags]) == "IOB1"
    assert to_iob2(tags, "IOB1") == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-PER", "B-ORG"]


def test_bioes_to_iob2_by_hand():
    tags = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-MISC", "S-MISC", "B-ORG", "E-ORG"]
    assert detect_scheme([["O"], tags]) == "BIOES"
    assert to_iob2(tags, "BIOES") == ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-MISC", "B-MISC", "B-ORG", "I-ORG"]


def test_iob2_is_detected_and_unchanged():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert detect_scheme([tags]) == "IOB2"
    assert to_iob2(tags, "IOB2") == tags


def test_scheme_detected_per_file(tmp_path):
    iob1 = write(tmp_path, "iob1.conll", "Mr O\nJohn I-PER\nSmith I-PER\n\nParis I-LOC\n")
    bioes = write(tmp_path, "bioes.conll", "John S-PER\nsaw O\nNew B-LOC\nYork E-LOC\n")
    assert [s["tags"] for s in read_conll(iob1)] == [["O", "B-PER", "I-PER"], ["B-LOC"]]
    assert [s["tags"] for s in read_conll(bioes)] == [["B-PER", "O", "B-LOC", "I-LOC"]]


def test_csv_with_byte_order_mark_reads_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\nnice,pos\n".encode("utf-8-sig"))
    assert read(str(path), "csv") == [{"text": "nice", "label": "pos"}]
