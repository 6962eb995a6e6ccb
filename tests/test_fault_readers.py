"""Hostile input to the data readers: stray quotes, ragged CoNLL columns, wrong encodings, overflowing labels.

Each test feeds a file that used to be misread (or to fail with a bare exception) and checks the exact
rows read or the exact one-line DataError: file, line, what was wrong, what was expected.
"""

import csv
import json
import re

import numpy as np
import pytest

from mgpt.config import DataConfig
from mgpt.data.encode import float_targets
from mgpt.data.errors import DataError
from mgpt.data.labels import LABEL_FLOAT, LABEL_NONE, LABEL_STRING, LABEL_TAGS
from mgpt.data.reading import read_examples, read_file, read_splits


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def raises_exactly(message):
    """pytest.raises for a DataError whose whole message is ``message``."""
    return pytest.raises(DataError, match=f"^{re.escape(message)}$")


# ---------------------------------------------------------------- TSV / CSV quoting

# Six reviews whose text holds double quotes the way scraped text does: quoted titles, an opening quote
# never closed, a lone quote. Read with CSV quoting, the quotes merge rows and labels are lost.
STRAY_QUOTES = (
    "text\tlabel\n"
    '"the movie" was good\tpos\n'
    'he said "boring\tneg\n'
    '"unclosed start\tneg\n'
    "fine\tpos\n"
    '"\tneg\n'
    'ends with a quote"\tpos\n'
)


def test_tsv_reads_quotes_as_ordinary_characters_by_default(tmp_path):
    path = write(tmp_path, "reviews.tsv", STRAY_QUOTES)
    assert read_file(path, DataConfig(format="tsv")).rows == [
        (f"{path}:2", {"text": '"the movie" was good', "label": "pos"}),
        (f"{path}:3", {"text": 'he said "boring', "label": "neg"}),
        (f"{path}:4", {"text": '"unclosed start', "label": "neg"}),
        (f"{path}:5", {"text": "fine", "label": "pos"}),
        (f"{path}:6", {"text": '"', "label": "neg"}),
        (f"{path}:7", {"text": 'ends with a quote"', "label": "pos"}),
    ]
    assert [e["label"] for e in read_examples(path, DataConfig(format="tsv"), LABEL_STRING)] == [
        "pos", "neg", "neg", "pos", "neg", "pos"]


def test_tsv_quoting_option_reads_csv_style_quotes(tmp_path):
    path = write(tmp_path, "quoted.tsv", 'text\tlabel\n"a\tb ""c"""\tpos\n"two\nlines"\tneg\n')
    assert read_file(path, DataConfig(format="tsv", tsv_quoting=True)).rows == [
        (f"{path}:2", {"text": 'a\tb "c"', "label": "pos"}),
        (f"{path}:4", {"text": "two\nlines", "label": "neg"}),  # a row's place is its last line
    ]
    # with quoting on, the quote opening line 4 closes on line 6: six reviews become four rows
    path = write(tmp_path, "reviews.tsv", STRAY_QUOTES)
    assert read_file(path, DataConfig(format="tsv", tsv_quoting=True)).rows == [
        (f"{path}:2", {"text": "the movie was good", "label": "pos"}),
        (f"{path}:3", {"text": 'he said "boring', "label": "neg"}),
        (f"{path}:6", {"text": "unclosed start\tneg\nfine\tpos\n", "label": "neg"}),
        (f"{path}:7", {"text": 'ends with a quote"', "label": "pos"}),
    ]
    path = write(tmp_path, "open.tsv", 'text\tlabel\nok\tpos\n"runs on\tneg\nmore\tpos\n')
    with raises_exactly(f"{path}:3: a double-quoted field opened on this line is never closed (it runs to the end "
                        "of the file, line 4); expected a closing double quote"):
        read_file(path, DataConfig(format="tsv", tsv_quoting=True))


def test_csv_keeps_standard_quoting(tmp_path):
    path = write(tmp_path, "q.csv", 'text,label\n"good, ""film""",pos\n"multi\r\nline",neg\nplain "inner" quote,pos\n')
    assert read_file(path, DataConfig(format="csv")).rows == [
        (f"{path}:2", {"text": 'good, "film"', "label": "pos"}),
        (f"{path}:4", {"text": "multi\r\nline", "label": "neg"}),
        (f"{path}:5", {"text": 'plain "inner" quote', "label": "pos"}),
    ]


def test_csv_unterminated_quote_is_reported_where_it_opened(tmp_path):
    path = write(tmp_path, "open.csv", 'text,label\ngood,pos\n"never closed,neg\nbad,neg\nok,pos\nfine,pos\n')
    with raises_exactly(f"{path}:3: a double-quoted field opened on this line is never closed (it runs to the end "
                        "of the file, line 6); expected a closing double quote"):
        read_file(path, DataConfig(format="csv"))


def test_csv_unterminated_quote_after_a_closed_multiline_field_and_no_final_newline(tmp_path):
    # the row starts on line 2 with a closed two-line field; its second field opens a quote on line 3
    path = write(tmp_path, "late.csv", 'text,label\n"two\nlines","open\nmore\nlast')
    with raises_exactly(f"{path}:3: a double-quoted field opened on this line is never closed (it runs to the end "
                        "of the file, line 5); expected a closing double quote"):
        read_file(path, DataConfig(format="csv"))
    path = write(tmp_path, "header.csv", '"text,label\nx,y\n')
    with raises_exactly(f"{path}:1: a double-quoted field opened on this line is never closed (it runs to the end "
                        "of the file, line 2); expected a closing double quote"):
        read_file(path, DataConfig(format="csv"))


def test_csv_runaway_quote_past_the_field_size_limit_names_the_rows_first_line(tmp_path):
    # in a big file the open field outgrows csv.field_size_limit() (131072 characters) before the end
    limit = csv.field_size_limit()
    filler = "".join(f"row {i:07d} {'x' * 33},pos\n" for i in range(4, limit // 50 + 10))  # 50 characters a line
    path = write(tmp_path, "big.csv", 'text,label\nok,pos\n"open,neg\n' + filler)
    # the field holds 'open,neg\n' (9 characters), then whole lines from line 4: which holds character limit + 1?
    overflow_line = 4 + (limit - 9) // 50
    with raises_exactly(f"{path}:3: malformed CSV row starting on this line (field larger than field limit ({limit}), "
                        f"at line {overflow_line}); expected well-formed CSV (is a double quote left open?)"):
        read_file(path, DataConfig(format="csv"))


def test_csv_quote_that_closes_late_names_the_rows_lines(tmp_path):
    path = write(tmp_path, "merged.csv", 'text,label\n"oops,pos\nfine,neg\nend",neg,extra\nok,pos\n')
    with raises_exactly(f"{path}:4: expected 2 columns ['text', 'label'], got 3 (the row spans lines 2-4)"):
        read_file(path, DataConfig(format="csv"))


# ---------------------------------------------------------------- CoNLL column count


def test_conll_line_with_a_column_missing_fails_naming_it(tmp_path):
    path = write(tmp_path, "ner.conll", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nbob NNP B-NP\n")
    with raises_exactly(f"{path}:4: found 3 whitespace-separated columns 'bob NNP B-NP'; expected 4, as on line 1 "
                        "(the file's first token line with a tag fixes the column count)"):
        read_examples(path, DataConfig(format="conll"), LABEL_TAGS)


def test_conll_line_with_an_extra_column_fails_and_docstart_does_not_count(tmp_path):
    path = write(tmp_path, "two.conll", "-DOCSTART- -X- -X- O\n\nJohn B-PER\nlives O\nin at O\n")
    with raises_exactly(f"{path}:5: found 3 whitespace-separated columns 'in at O'; expected 2, as on line 3 "
                        "(the file's first token line with a tag fixes the column count)"):
        read_examples(path, DataConfig(format="conll"), LABEL_TAGS)


def test_conll_file_to_predict_on_keeps_untagged_sentences(tmp_path):
    path = write(tmp_path, "predict.conll", "John B-PER\nran O\n\nParis\nsleeps\n")
    assert read_examples(path, DataConfig(format="conll"), LABEL_TAGS, labels_optional=True) == [
        {"tokens": ["John", "ran"], "tags": ["B-PER", "O"]}, {"tokens": ["Paris", "sleeps"]}]


# ---------------------------------------------------------------- encodings

LATIN1_HINT = "expected utf-8 text: set data.encoding to the file's encoding, e.g. --set data.encoding=latin-1"

# One latin-1 file per format whose third line holds "café" (byte e9): (name, text, format, label kind).
LATIN1_FILES = [
    ("a.csv", "text,label\nok,pos\ncafé,neg\n", "csv", LABEL_STRING),
    ("a.tsv", "text\tlabel\nok\tpos\ncafé\tneg\n", "tsv", LABEL_STRING),
    ("a.jsonl", '{"text": "ok", "label": "pos"}\n\n{"text": "café", "label": "neg"}\n', "jsonl", LABEL_STRING),
    ("a.conll", "ok O\n\ncafé B-LOC\n", "conll", LABEL_TAGS),
    ("a.chat", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n\n'
               '{"messages": [{"role": "user", "content": "café"}, {"role": "assistant", "content": "oui"}]}\n',
     "chat", LABEL_NONE),
]


@pytest.mark.parametrize("name, text, fmt, label_kind", LATIN1_FILES, ids=[f[2] for f in LATIN1_FILES])
def test_latin1_file_fails_naming_line_and_option_then_reads_with_data_encoding(tmp_path, name, text, fmt,
                                                                              label_kind):
    path = write(tmp_path, name, text, encoding="latin-1")
    with raises_exactly(f"{path}:3: bytes e9 are not valid utf-8 (invalid continuation byte); {LATIN1_HINT}"):
        read_examples(path, DataConfig(format=fmt), label_kind)
    rows = read_file(path, DataConfig(format=fmt, encoding="latin-1")).rows
    assert rows[-1][0] == f"{path}:3"
    assert "café" in json.dumps(rows[-1][1], ensure_ascii=False)


def test_parallel_pair_uses_data_encoding(tmp_path):
    (tmp_path / "p.de").write_bytes("Grüß Gott\n".encode("latin-1"))
    (tmp_path / "p.en").write_bytes("hello\n".encode("latin-1"))
    with raises_exactly(f"{tmp_path}/p.de:1: bytes fc are not valid utf-8 (invalid start byte); {LATIN1_HINT}"):
        read_file(f"{tmp_path}/p.de->en", DataConfig(format="parallel"))
    assert read_file(f"{tmp_path}/p.de->en", DataConfig(format="parallel", encoding="latin-1")).rows == [
        (f"{tmp_path}/p.de:1", {"source": "Grüß Gott", "target": "hello", "source_lang": "de", "target_lang": "en"})]


def test_decode_error_line_is_exact_far_into_a_file(tmp_path):
    # the bad byte lies well past the first chunk a text file decodes at once
    text = "text,label\n" + "".join(f"row {i},pos\r\n" for i in range(2, 3000)) + "naïve,neg\n"
    path = write(tmp_path, "long.csv", text, encoding="latin-1")
    with raises_exactly(f"{path}:3000: bytes ef are not valid utf-8 (invalid continuation byte); {LATIN1_HINT}"):
        read_file(path, DataConfig(format="csv"))


def test_lines_format_names_data_line_encoding(tmp_path):
    path = write(tmp_path, "p.txt", "good@positive\nprice \xa35@neutral\n", encoding="latin-1")
    with raises_exactly(f"{path}:2: bytes a3 are not valid utf-8 (invalid start byte); expected utf-8 text: "
                        "set data.line_encoding to the file's encoding, e.g. --set data.line_encoding=latin-1"):
        read_file(path, DataConfig(format="lines", line_encoding="utf-8"))
    assert read_file(path, DataConfig(format="lines")).rows[1] == (f"{path}:2", {"text": "price \xa35",
                                                                                 "label": "neutral"})


def test_file_to_predict_on_is_read_with_data_encoding(tmp_path):
    # `mgpt predict --input FILE` sets data.predict_file and reads it through read_splits
    path = write(tmp_path, "new.csv", "text\ncafé\n", encoding="latin-1")
    with raises_exactly(f"{path}:2: bytes e9 are not valid utf-8 (invalid continuation byte); {LATIN1_HINT}"):
        read_splits(DataConfig(format="csv", predict_file=path), LABEL_STRING)
    examples, _, _ = read_splits(DataConfig(format="csv", predict_file=path, encoding="latin-1"), LABEL_STRING)
    assert examples == {"predict": [{"text": "café"}]}


def test_unknown_encoding_name_fails_naming_the_option(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"text": "a"}\n')
    with raises_exactly("data.encoding='latin-9x' is not a known text encoding; "
                        "expected a Python codec name such as 'utf-8' or 'latin-1'"):
        read_file(path, DataConfig(format="jsonl", encoding="latin-9x"))


def test_utf16_file_reads_with_data_encoding(tmp_path):
    path = write(tmp_path, "u.tsv", "text\tlabel\nnaïve\t1\n", encoding="utf-16")
    assert read_file(path, DataConfig(format="tsv", encoding="utf-16")).rows == [
        (f"{path}:2", {"text": "naïve", "label": "1"})]


# ---------------------------------------------------------------- regression labels


@pytest.mark.parametrize("value", ["1e39", "-3.5e38"])
def test_regression_label_overflowing_float32_fails_when_read(tmp_path, value):
    path = write(tmp_path, "r.csv", f"text,label\nfine,3.4e38\nhuge,{value}\n")
    with raises_exactly(f"{path}:3: regression label {value!r} is not finite in float32; "
                        "expected a finite number of magnitude at most 3.403e+38"):
        read_examples(path, DataConfig(format="csv"), LABEL_FLOAT)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_regression_label_nan_or_inf_fails_when_read(tmp_path, value):
    path = write(tmp_path, "r.tsv", f"text\tlabel\nfine\t1\nbad\t{value}\n")
    with raises_exactly(f"{path}:3: regression label {value!r} is not a finite number"):
        read_examples(path, DataConfig(format="tsv"), LABEL_FLOAT)


def test_regression_labels_from_json_overflowing_float32_or_float(tmp_path):
    path = write(tmp_path, "r.jsonl", '{"text": "a", "label": 2.5}\n{"text": "b", "label": 1e39}\n')
    with raises_exactly(f"{path}:2: regression label 1e+39 is not finite in float32; "
                        "expected a finite number of magnitude at most 3.403e+38"):
        read_examples(path, DataConfig(format="jsonl"), LABEL_FLOAT)
    path = write(tmp_path, "big.jsonl", '{"text": "a", "label": 1' + "0" * 400 + "}\n")
    with raises_exactly(f"{path}:1: regression label 1{'0' * 39} overflows a float; "
                        "expected a finite float32 number"):
        read_examples(path, DataConfig(format="jsonl"), LABEL_FLOAT)


def test_largest_float32_label_is_read_and_encoded(tmp_path):
    path = write(tmp_path, "r.csv", "text,label\nfine,3.4e38\nsmall,-1e-50\n")
    examples = read_examples(path, DataConfig(format="csv"), LABEL_FLOAT)
    assert examples == [{"text": "fine", "label": 3.4e38}, {"text": "small", "label": -1e-50}]
    np.testing.assert_array_equal(float_targets(examples), np.array([3.4e38, -0.0], dtype=np.float32))


def test_float_targets_refuse_values_not_finite_in_float32():
    examples = [{"text": "a", "label": 1.0}, {"text": "b"}, {"text": "c", "label": 1e39}]
    with raises_exactly("train.csv: example 3 of 3: regression label 1e+39 is not finite in float32; "
                        "expected a finite number of magnitude at most 3.403e+38"):
        float_targets(examples, where="train.csv")
    with raises_exactly("data: example 1 of 1: regression label nan is not finite in float32; "
                        "expected a finite number of magnitude at most 3.403e+38"):
        float_targets([{"text": "a", "label": float("nan")}])
