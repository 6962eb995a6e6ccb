"""Readers for text-classification and regression files: CSV, TSV and JSON Lines.

Every reader returns a list of ``{"text": str, "text_pair": str (only when a pair column is
configured), "label": str | float (only when labels are read)}``. Errors name the file, the line
and what was expected, so a broken row in a 100k-line file is found at once.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

# Label kinds a reader can produce.
LABEL_STRING = "string"  # classification: labels are kept verbatim as strings
LABEL_FLOAT = "float"  # regression: labels must parse as finite numbers
LABEL_NONE = "none"  # causal LM: no label column is read
LABEL_MULTI = "multi"  # multi-label: a list of strings, from "a|b" (see label_delimiter) or a JSON list

FORMATS = ("csv", "tsv", "jsonl", "lines", "parallel")


class DataError(ValueError):
    """A data file is missing, empty or malformed; the message names the file and line."""


def read_examples(
    path: str | os.PathLike,
    fmt: str,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str = "",
    label_kind: str = LABEL_STRING,
    labels_optional: bool = False,
    label_delimiter: str = "|",
    line_separator: str = "@",
    line_encoding: str = "latin-1",
) -> list[dict]:
    """Read a CSV, TSV, JSONL or ``lines`` (``text@label``) file into ``{"text", "text_pair"?, "label"?}`` dicts.

    ``label_kind`` is ``"string"`` (classification), ``"float"`` (regression), ``"multi"``
    (multi-label: a list of strings, written ``"a|b"`` with ``label_delimiter`` or as a JSON
    list) or ``"none"`` (no labels, e.g. causal language modelling). With ``labels_optional``
    (files to predict on) a missing label column (CSV/TSV) or key (JSONL) leaves examples
    without ``"label"``.
    """
    args = (text_column, label_column, text_pair_column, label_kind, labels_optional, label_delimiter)
    if fmt == "csv":
        return read_delimited(path, ",", *args)
    if fmt == "tsv":
        return read_delimited(path, "\t", *args)
    if fmt == "jsonl":
        return read_jsonl(path, *args)
    if fmt == "parallel":
        raise DataError(f"{path}: data.format='parallel' gives source/target records for a prompt template; "
                        "use it with data.prompt_template (task kinds generation or causal_lm)")
    if fmt == "lines":
        return read_lines(path, line_separator, line_encoding, label_kind=label_kind,
                          labels_optional=labels_optional, label_delimiter=label_delimiter)
    raise DataError(f"unknown data format {fmt!r}: expected one of {', '.join(FORMATS)} (or conll)")


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path}: data file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: data file is empty")


def _wanted_columns(text_column: str, label_column: str, text_pair_column: str, label_kind: str):
    wanted = [("text", text_column)]
    if text_pair_column:
        wanted.append(("text_pair", text_pair_column))
    if label_kind != LABEL_NONE:
        wanted.append(("label", label_column))
    return wanted


def _multi_label(value: Any, delimiter: str, where: str) -> list[str]:
    """A multi-label value -> list of label strings; an empty string or list is the empty set."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: multi-label value {value!r} looks like JSON but is not ({e.msg})") from None
    if isinstance(value, str):
        value = value.split(delimiter) if delimiter else [value]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    labels = []
    for item in value:
        if isinstance(item, (dict, list)) or item is None:
            raise DataError(f"{where}: a multi-label entry must be a string or number, got {item!r}")
        text = str(int(item) if isinstance(item, float) and item.is_integer() else item).strip()
        if text and text not in labels:
            labels.append(text)
    return labels


def convert_label(value: Any, label_kind: str, where: str, delimiter: str = "|") -> Any:
    """A raw label value -> a float (regression), a string (classification) or a list of strings
    (multi-label, split on ``delimiter``); a bad value fails naming ``where``."""
    if label_kind == LABEL_MULTI:
        return _multi_label(value, delimiter, where)
    if label_kind == LABEL_FLOAT:
        if isinstance(value, bool):  # bool is an int subclass; True is not a regression target
            raise DataError(f"{where}: regression label {value!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: regression label {value!r} is not a number") from None
        if not math.isfinite(number):
            raise DataError(f"{where}: regression label {value!r} is not a finite number")
        return number
    if isinstance(value, (dict, list)) or value is None:
        raise DataError(f"{where}: classification label must be a string or number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 and 1 name the same class
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: empty label")
    return text


def read_delimited(
    path: str | os.PathLike,
    delimiter: str,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str = "",
    label_kind: str = LABEL_STRING,
    labels_optional: bool = False,
    label_delimiter: str = "|",
) -> list[dict]:
    """Read a CSV (``delimiter=","``) or TSV (``"\\t"``) file whose first row names the columns."""
    path = os.fspath(path)
    _check_file(path)
    wanted = _wanted_columns(text_column, label_column, text_pair_column, label_kind)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            examples = _delimited_rows(path, reader, wanted, label_kind, labels_optional, label_delimiter)
        except csv.Error as e:  # e.g. an unterminated quote or a field over csv.field_size_limit()
            kind = "TSV" if delimiter == "\t" else "CSV"
            raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({e})") from None
    if not examples:
        raise DataError(f"{path}: no examples (only a header)")
    return examples


def _delimited_rows(path: str, reader, wanted, label_kind: str, labels_optional: bool,
                    label_delimiter: str) -> list[dict]:
    """Rows of an open csv.reader (header first) -> example dicts."""
    examples = []
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}:1: expected a header row naming the columns")
    header = [name.strip() for name in header]
    if labels_optional:
        wanted = [(key, column) for key, column in wanted if key != "label" or column in header]
    positions = {}
    for key, column in wanted:
        if column not in header:
            raise DataError(
                f"{path}:1: missing column {column!r} (for {key}); the header has columns {header}"
            )
        positions[key] = header.index(column)
    for row in reader:
        line = reader.line_num  # the last physical line of this record
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: expected {len(header)} columns {header}, got {len(row)}"
            )
        example = {}
        for key, _ in wanted:
            value = row[positions[key]]
            where = f"{path}:{line}"
            example[key] = convert_label(value, label_kind, where, label_delimiter) if key == "label" else value
        examples.append(example)
    return examples


def _text_value(value: Any, column: str, where: str) -> str:
    if isinstance(value, str):
        return value
    # A list of strings (e.g. the sentences of an abstract) is joined with spaces.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    raise DataError(f"{where}: field {column!r} must be a string or a list of strings, got {type(value).__name__}")


def read_jsonl(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str = "",
    label_kind: str = LABEL_STRING,
    labels_optional: bool = False,
    label_delimiter: str = "|",
) -> list[dict]:
    """Read a JSON Lines file: one JSON object per line; blank lines are skipped."""
    path = os.fspath(path)
    _check_file(path)
    wanted = _wanted_columns(text_column, label_column, text_pair_column, label_kind)
    examples = []
    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: expected one JSON object per line ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            example = {}
            for key, column in wanted:
                if key == "label" and labels_optional and column not in record:
                    continue
                if column not in record:
                    raise DataError(f"{where}: missing key {column!r} (for {key}); the object has keys {sorted(record)}")
                value = record[column]
                if key == "label":
                    example[key] = convert_label(value, label_kind, where, label_delimiter)
                else:
                    example[key] = _text_value(value, column, where)
            examples.append(example)
    if not examples:
        raise DataError(f"{path}: no examples (the file has only blank lines)")
    return examples


def read_records(path: str | os.PathLike, fmt: str) -> list[tuple[str, dict]]:
    """Every field of every row: ``[(where, {column: value}), ...]`` with ``where`` = "file:line".

    For prompt templates, which may name any column. CSV / TSV values are strings; JSONL values
    are whatever the JSON holds.
    """
    path = os.fspath(path)
    if fmt == "parallel":  # a prefix naming two files, not a file
        return read_parallel(path)
    _check_file(path)
    records = []
    if fmt in ("csv", "tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter="," if fmt == "csv" else "\t")
            header = [name.strip() for name in next(reader, None) or []]
            if not header:
                raise DataError(f"{path}:1: expected a header row naming the columns")
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    where = f"{path}:{reader.line_num}"
                    raise DataError(f"{where}: expected {len(header)} columns {header}, got {len(row)}")
                records.append((f"{path}:{reader.line_num}", dict(zip(header, row))))
    elif fmt == "jsonl":
        with open(path, encoding="utf-8-sig") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{line_number}: expected one JSON object per line ({e.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
                records.append((f"{path}:{line_number}", record))
    else:
        raise DataError(f"unknown data format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not records:
        raise DataError(f"{path}: no examples")
    return records


def read_lines(path: str | os.PathLike, separator: str = "@", encoding: str = "latin-1",
               label_kind: str = LABEL_STRING, labels_optional: bool = False, label_delimiter: str = "|") -> list[dict]:
    """One example per line, ``text<separator>label``, no header (the Financial PhraseBank format).

    The label follows the *last* separator, so the text may contain it. The PhraseBank files are
    latin-1, hence the default encoding. Without labels (``labels_optional``) a line with no
    separator is all text.
    """
    path = os.fspath(path)
    _check_file(path)
    examples = []
    with open(path, encoding=encoding) as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            text, found, label = line.rpartition(separator)
            if not found:
                if labels_optional or label_kind == LABEL_NONE:
                    examples.append({"text": line})
                    continue
                raise DataError(f"{where}: expected 'text{separator}label', found no {separator!r}")
            example = {"text": text.strip()}
            if label_kind != LABEL_NONE:
                example["label"] = convert_label(label.strip(), label_kind, where, label_delimiter)
            examples.append(example)
    if not examples:
        raise DataError(f"{path}: no examples (the file has only blank lines)")
    return examples


def read_parallel(prefix: str | os.PathLike) -> list[tuple[str, dict]]:
    """A translation pair: ``PREFIX`` names ``PREFIX.SRC-TGT.SRC`` style files, written ``path/train.de->en``.

    ``"data/train.de->en"`` reads ``data/train.de`` and ``data/train.en`` line by line into records
    ``{"source", "target", "source_lang", "target_lang"}`` for a prompt template. The two files
    must have the same number of lines.
    """
    prefix = os.fspath(prefix)
    base, _, pair = prefix.rpartition(".")
    source_lang, arrow, target_lang = pair.partition("->")
    if not base or not arrow or not source_lang or not target_lang:
        raise DataError(f"{prefix}: a parallel data path looks like 'dir/train.de->en' (reads dir/train.de, dir/train.en)")
    paths = [f"{base}.{source_lang}", f"{base}.{target_lang}"]
    for path in paths:
        _check_file(path)
    with open(paths[0], encoding="utf-8-sig") as f:
        sources_ = f.read().splitlines()
    with open(paths[1], encoding="utf-8-sig") as f:
        targets = f.read().splitlines()
    if len(sources_) != len(targets):
        raise DataError(f"{paths[0]} has {len(sources_)} lines but {paths[1]} has {len(targets)}: they must align")
    return [
        (f"{paths[0]}:{i}", {"source": s, "target": t, "source_lang": source_lang, "target_lang": target_lang})
        for i, (s, t) in enumerate(zip(sources_, targets), start=1)
        if s.strip() or t.strip()
    ]


def label_kind_for(task_kind: str) -> str:
    """Which label kind a task reads from a file."""
    if task_kind == "regression":
        return LABEL_FLOAT
    if task_kind == "multi_label_classification":
        return LABEL_MULTI
    if task_kind == "causal_lm":
        return LABEL_NONE
    return LABEL_STRING

