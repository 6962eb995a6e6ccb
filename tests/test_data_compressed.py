"""Compressed data files (.gz, .bz2, .xz) read exactly like the files they compress, in every file format."""

import bz2
import gzip
import json
import lzma

import pytest

from mgpt.config import DataConfig
from mgpt.data import DataError, reading

COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}

CHAT = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "h\u00e9llo"}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
# (format, file name, contents, config): every format a file is read in, with quoting, blank lines and non-ASCII text.
FILES = {
    "csv": ("data.csv", 'text,label\n"a, quoted\nfield",pos\n\ncaf\u00e9 noir,neg\n', {}),
    "tsv": ("data.tsv", 'text\tlabel\na "stray quote\tpos\ncaf\u00e9\tneg\n', {}),
    "jsonl": ("data.jsonl", '{"text": "caf\u00e9", "label": "pos"}\n\n{"text": "b", "label": "neg"}\n', {}),
    "chat": ("data.jsonl", "".join(json.dumps(c) + "\n" for c in CHAT), {}),
    "conll": ("data.conll", "-DOCSTART- -X- O\n\nAlice NNP B-PER\nvisited VBD O\n\nRome NNP B-LOC\n", {}),
    # latin-1, the lines format's default encoding: decoding is the reader's, after decompression
    "lines": ("data.txt", "caf\u00e9 is fine@positive\nprices fell@negative\n", {"line_encoding": "latin-1"}),
}


def _write(path, text: str, encoding: str) -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


def _compressed(tmp_path, plain: str, suffix: str) -> str:
    with open(plain, "rb") as f:
        data = f.read()
    path = tmp_path / f"{plain.rsplit('/', 1)[-1]}.{suffix}"
    path.write_bytes(COMPRESSORS[suffix](data))
    return str(path)


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
@pytest.mark.parametrize("fmt", sorted(FILES))
def test_each_format_reads_each_compression_as_the_plain_file(tmp_path, fmt, suffix):
    name, text, settings = FILES[fmt]
    encoding = settings.get("line_encoding", "utf-8")
    plain = _write(tmp_path / name, text, encoding)
    packed = _compressed(tmp_path, plain, suffix)
    config = DataConfig(format=fmt, **settings)
    expected = reading.read_file(plain, config).rows
    got = reading.read_file(packed, config).rows
    assert len(got) == len(expected) > 1
    # same records, and the same line numbers (of the decompressed text) under the compressed file's name
    assert got == [(where.replace(plain, packed), record) for where, record in expected]


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_byte_that_does_not_decode_names_the_compressed_file_and_line(tmp_path, suffix):
    plain = _write(tmp_path / "bad.csv", "text,label\nfine,pos\ncaf\u00e9,neg\n", "latin-1")
    packed = _compressed(tmp_path, plain, suffix)
    with pytest.raises(DataError) as plain_error:
        reading.read_file(plain, DataConfig())
    with pytest.raises(DataError) as packed_error:
        reading.read_file(packed, DataConfig())
    assert str(packed_error.value) == str(plain_error.value).replace(plain, packed)
    assert str(packed_error.value).startswith(f"{packed}:3: bytes e9 ")


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_malformed_row_names_its_line_inside_the_compressed_file(tmp_path, suffix):
    plain = _write(tmp_path / "short.csv", "text,label\nfine,pos\nno label here\n", "utf-8")
    packed = _compressed(tmp_path, plain, suffix)
    with pytest.raises(DataError, match=rf"^{packed}:3: expected 2 columns"):
        reading.read_file(packed, DataConfig())


def _long_csv() -> str:
    return "text,label\n" + "".join(f"review number {i} of many,{'pos' if i % 2 else 'neg'}\n" for i in range(5000))


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_truncated_compressed_file_fails_naming_it(tmp_path, suffix):
    data = COMPRESSORS[suffix](_long_csv().encode())
    path = tmp_path / f"cut.csv.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as error:
        reading.read_file(str(path), DataConfig())
    message = str(error.value)
    assert message.startswith(f"{path}: cannot decompress this ")
    assert "is it truncated" in message and "\n" not in message


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_file_that_is_not_what_its_suffix_says_fails_naming_it(tmp_path, suffix):
    path = tmp_path / f"plain.csv.{suffix}"
    path.write_text(_long_csv())  # not compressed at all
    with pytest.raises(DataError, match=rf"^{path}: cannot decompress this (gzip|bzip2|xz) file"):
        reading.read_file(str(path), DataConfig())


def test_examples_and_splits_read_from_a_compressed_train_file(tmp_path):
    plain = _write(tmp_path / "train.csv", _long_csv(), "utf-8")
    packed = _compressed(tmp_path, plain, "gz")
    config = DataConfig(train_file=packed)
    examples, files, _ = reading.read_splits(config, "string")
    assert files == {"train": packed}
    assert examples["train"] == reading.read_examples(plain, config, "string")
    assert len(examples["train"]) == 5000
