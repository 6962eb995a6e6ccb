"""One reader per file format, each returning :class:`~mgpt.data.records.Records` with every field.

``READERS[format](path, data_cfg, labels_optional)`` is the registry the data path reads through
(:func:`mgpt.data.reading.read_file`); TFDS, which reads a data set by name rather than a file,
lives in :mod:`mgpt.data.tfds_source`. Errors name the file, the line and what was expected, so a
broken row in a 100k-line file is found at once.
"""

from __future__ import annotations

import csv
import json

from mgpt.data import chat, conll
from mgpt.data.errors import DataError
from mgpt.data.records import Records, check_file, missing_field


def read_delimited(path: str, delimiter: str) -> Records:
    """A CSV (``delimiter=","``) or TSV (``"\\t"``) file whose first row names the columns; values are strings.

    Blank lines are skipped; ``where`` is the last physical line of each row.
    """
    check_file(path)
    kind = "TSV" if delimiter == "\t" else "CSV"
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header, rows = _delimited_rows(path, reader)
        except csv.Error as e:  # e.g. an unterminated quote or a field over csv.field_size_limit()
            raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({e})") from None
    if not rows:
        raise DataError(f"{path}: no examples (only a header)")

    def missing(where, name, what, record):  # every row has the header's columns: the header lacks it
        return f"{path}:1: missing column {name!r} (for {what}); the header has columns {header}"

    return Records(path, rows, missing)


def _delimited_rows(path: str, reader) -> tuple[list[str], list[tuple[str, dict]]]:
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}:1: expected a header row naming the columns")
    header = [name.strip() for name in header]
    rows = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(f"{path}:{reader.line_num}: expected {len(header)} columns {header}, got {len(row)}")
        rows.append((f"{path}:{reader.line_num}", dict(zip(header, row))))
    return header, rows


def _missing_key(where: str, name: str, what: str, record: dict) -> str:
    return f"{where}: missing key {name!r} (for {what}); the object has keys {sorted(record)}"


def read_jsonl(path: str) -> Records:
    """A JSON Lines file: one JSON object per line (values as the JSON holds them); blank lines are skipped."""
    check_file(path)
    rows = []
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
            rows.append((where, record))
    if not rows:
        raise DataError(f"{path}: no examples (the file has only blank lines)")
    return Records(path, rows, _missing_key)


def read_lines(path: str, separator: str = "@", encoding: str = "latin-1", text_field: str = "text",
               label_field: str = "label") -> Records:
    """One example per line, ``text<separator>label``, no header (the Financial PhraseBank format).

    The label follows the *last* separator, so the text may contain it; a line without one is all
    text (and fails only where a label is needed). The PhraseBank files are latin-1, hence the
    default encoding. Fields are named like the data config's text and label columns.
    """
    check_file(path)
    rows = []
    with open(path, encoding=encoding) as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, found, label = line.rpartition(separator)
            record = {text_field: text.strip(), label_field: label.strip()} if found else {text_field: line}
            rows.append((f"{path}:{line_number}", record))
    if not rows:
        raise DataError(f"{path}: no examples (the file has only blank lines)")

    def missing(where, name, what, record):
        if name == label_field:
            return f"{where}: expected 'text{separator}label', found no {separator!r}"
        return missing_field(where, name, what, record)

    return Records(path, rows, missing)


def read_parallel(prefix: str) -> Records:
    """A translation pair: ``"data/train.de->en"`` reads ``data/train.de`` and ``data/train.en``.

    Line by line into records ``{"source", "target", "source_lang", "target_lang"}`` for a prompt
    template; the two files must have the same number of lines.
    """
    base, _, pair = prefix.rpartition(".")
    source_lang, arrow, target_lang = pair.partition("->")
    if not base or not arrow or not source_lang or not target_lang:
        raise DataError(f"{prefix}: a parallel data path looks like 'dir/train.de->en' "
                        "(reads dir/train.de, dir/train.en)")
    paths = [f"{base}.{source_lang}", f"{base}.{target_lang}"]
    for path in paths:
        check_file(path)
    with open(paths[0], encoding="utf-8-sig") as f:
        sources = f.read().splitlines()
    with open(paths[1], encoding="utf-8-sig") as f:
        targets = f.read().splitlines()
    if len(sources) != len(targets):
        raise DataError(f"{paths[0]} has {len(sources)} lines but {paths[1]} has {len(targets)}: they must align")
    rows = [
        (f"{paths[0]}:{i}", {"source": s, "target": t, "source_lang": source_lang, "target_lang": target_lang})
        for i, (s, t) in enumerate(zip(sources, targets), start=1)
        if s.strip() or t.strip()
    ]
    return Records(prefix, rows)


READERS = {
    "csv": lambda path, cfg, labels_optional: read_delimited(path, ","),
    "tsv": lambda path, cfg, labels_optional: read_delimited(path, "\t"),
    "jsonl": lambda path, cfg, labels_optional: read_jsonl(path),
    # JSONL conversations (OpenAI / TRL "messages"), rendered later with the tokenizer's chat template
    "chat": lambda path, cfg, labels_optional: chat.chat_records(read_jsonl(path), cfg.messages_column,
                                                                 labels_optional),
    "lines": lambda path, cfg, labels_optional: read_lines(path, cfg.line_separator, cfg.line_encoding,
                                                           cfg.text_column, cfg.label_column),
    "parallel": lambda path, cfg, labels_optional: read_parallel(path),
    "conll": lambda path, cfg, labels_optional: conll.read_conll_records(
        path, cfg.conll_token_column, cfg.conll_label_column, labels_optional, cfg.text_column, cfg.label_column),
}
FORMATS = tuple(READERS) + ("tfds",)
