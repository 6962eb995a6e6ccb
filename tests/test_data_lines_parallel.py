"""The `lines` (Financial PhraseBank) and `parallel` (translation pair) readers."""

import pytest

from mgpt.config import DataConfig
from mgpt.data.errors import DataError
from mgpt.data.labels import LABEL_STRING
from mgpt.data.reading import read_examples, read_file


def read(path, fmt, label_kind=LABEL_STRING, labels_optional=False, **columns):
    """The examples of one file, through the data path's one entry point."""
    return read_examples(path, DataConfig(format=fmt, **columns), label_kind, labels_optional)


def read_records(prefix, fmt):
    """Every field of every row, through the data path's one reader registry."""
    return read_file(prefix, DataConfig(format=fmt)).rows


def test_phrasebank_lines_latin1_label_after_last_separator(tmp_path):
    path = tmp_path / "Sentences_AllAgree.txt"
    path.write_bytes("Operating profit rose to EUR 13.1 mn@positive\r\nThe e-mail a@b.com price is \xa35@neutral\n\n"
                     .encode("latin-1"))
    examples = read(path, "lines")
    assert examples == [{"text": "Operating profit rose to EUR 13.1 mn", "label": "positive"},
                        {"text": "The e-mail a@b.com price is \xa35", "label": "neutral"}]


def test_lines_without_separator_fail_with_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("fine@positive\nno label here\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"bad.txt:2: expected 'text@label'"):
        read(path, "lines")
    assert read(path, "lines", labels_optional=True)[1] == {"text": "no label here"}


def test_parallel_pair_reads_aligned_lines(tmp_path):
    (tmp_path / "train.de").write_text("Hallo Welt\nGuten Morgen\n")
    (tmp_path / "train.en").write_text("Hello world\nGood morning\n")
    records = read_records(f"{tmp_path}/train.de->en", "parallel")
    assert [r for _, r in records] == [
        {"source": "Hallo Welt", "target": "Hello world", "source_lang": "de", "target_lang": "en"},
        {"source": "Guten Morgen", "target": "Good morning", "source_lang": "de", "target_lang": "en"}]
    assert records[1][0].endswith("train.de:2")


def test_parallel_misaligned_or_malformed_fails(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(DataError, match="must align"):
        read_records(f"{tmp_path}/a.de->en", "parallel")
    with pytest.raises(DataError, match="looks like"):
        read_records(f"{tmp_path}/a.de", "parallel")
    with pytest.raises(DataError, match="prompt template"):
        read(f"{tmp_path}/a.de->en", "parallel")
