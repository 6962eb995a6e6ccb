"""One reader per file format, each returning :class:`~mgpt.data.records.Records` with every field.

``READERS[format](path, data_cfg, labels_optional)`` is the registry the data path reads through
(:func:`mgpt.data.reading.read_file`); TFDS, which reads a data set by name rather than a file,
lives in :mod:`mgpt.data.tfds_source`. Errors name the file, the line and what was expected, so a
broken row in a 100k-line file is found at once. Files are decoded as ``data.encoding`` (``lines``:
``data.line_encoding``); a byte that does not decode fails at its line, naming the option to set.
"""

from __future__ import annotations

import csv
import json

from mgpt.data import chat, conll
from mgpt.data.errors import DataError
from mgpt.data.records import Records, check_file, line_of, missing_field, text_file


# Fed to the CSV reader after the file's last line: inside an open quote it becomes part of the runaway
# field (an unterminated quote), otherwise it is a row of its own. Private-use characters keep it unique.
_END_OF_DATA = "\ue000end of data\ue000\n"
_END_ROW = [_END_OF_DATA.rstrip("\n")]  # what the reader makes of it outside a quote


def read_delimited(path: str, delimiter: str, quoting: bool = True, encoding: str = "utf-8") -> Records:
    """A CSV (``delimiter=","``) or TSV (``"\\t"``) file whose first row names the columns; values are strings.

    With ``quoting`` (CSV; TSV with ``data.tsv_quoting``) double quotes work as in the csv module; without
    it (TSV's default) a quote is an ordinary character, so a stray one never merges rows. Blank lines are
    skipped; ``where`` is the last physical line of each row. An unterminated quote fails at the line
    where the quoted field opened.
    """
    check_file(path)
    kind = "TSV" if delimiter == "\t" else "CSV"
    with text_file(path, encoding, newline="") as f:
        lines = _Lines(f)
        reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
        try:
            header, rows = _delimited_rows(path, reader, lines)
        except csv.Error as e:  # e.g. a field over csv.field_size_limit(), as a runaway quoted field grows
            raise DataError(f"{path}:{lines.row_start}: malformed {kind} row starting on this line ({e}, at line "
                            f"{reader.line_num}); expected well-formed {kind} (is a double quote left open?)") from None
    if not rows:
        raise DataError(f"{path}: no examples (only a header)")

    def missing(where, name, what, record):  # every row has the header's columns: the header lacks it
        return f"{path}:1: missing column {name!r} (for {what}); the header has columns {header}"

    return Records(path, rows, missing)


class _Lines:
    """The physical lines of a file for the CSV reader, each ending in a newline, then :data:`_END_OF_DATA`.

    ``count`` is the number of the file's lines; ``row_start`` the first line of the row being read.
    """

    def __init__(self, f):
        self.f, self.count, self.row_start = f, 0, 1

    def __iter__(self):
        for line in self.f:
            self.count += 1
            yield line if line.endswith(("\n", "\r")) else line + "\n"
        yield _END_OF_DATA


def _delimited_rows(path: str, reader, lines: _Lines) -> tuple[list[str], list[tuple[str, dict]]]:
    header = next(reader, None)
    if not header or header == _END_ROW:
        raise DataError(f"{path}:1: expected a header row naming the columns")
    _check_closed(path, header, lines)
    header = [name.strip() for name in header]
    rows = []
    lines.row_start = reader.line_num + 1
    for row in reader:
        _check_closed(path, row, lines)
        if row == _END_ROW:
            break
        start, lines.row_start = lines.row_start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(f"{path}:{reader.line_num}: expected {len(header)} columns {header}, got {len(row)}"
                            + (f" (the row spans lines {start}-{reader.line_num})" if start < reader.line_num else ""))
        rows.append((f"{path}:{reader.line_num}", dict(zip(header, row))))
    return header, rows


def _check_closed(path: str, row: list[str], lines: _Lines) -> None:
    """Fail at the line where a quoted field opened when ``row`` ran into the end of the data."""
    if row and row[-1].endswith(_END_OF_DATA):
        # the runaway field holds the line ends of every line from the one its quote opened on
        opened = lines.count + 2 - line_of(row[-1][: -len(_END_OF_DATA)])
        raise DataError(f"{path}:{opened}: a double-quoted field opened on this line is never closed (it runs "
                        f"to the end of the file, line {lines.count}); expected a closing double quote")


def _missing_key(where: str, name: str, what: str, record: dict) -> str:
    return f"{where}: missing key {name!r} (for {what}); the object has keys {sorted(record)}"


def read_jsonl(path: str, encoding: str = "utf-8") -> Records:
    """A JSON Lines file: one JSON object per line (values as the JSON holds them); blank lines are skipped."""
    check_file(path)
    rows = []
    with text_file(path, encoding) as f:
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
    with text_file(path, encoding, "data.line_encoding") as f:
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


def read_parallel(prefix: str, encoding: str = "utf-8") -> Records:
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
    sources, targets = (_read_lines_of(path, encoding) for path in paths)
    if len(sources) != len(targets):
        raise DataError(f"{paths[0]} has {len(sources)} lines but {paths[1]} has {len(targets)}: they must align")
    rows = [
        (f"{paths[0]}:{i}", {"source": s, "target": t, "source_lang": source_lang, "target_lang": target_lang})
        for i, (s, t) in enumerate(zip(sources, targets), start=1)
        if s.strip() or t.strip()
    ]
    return Records(prefix, rows)


def _read_lines_of(path: str, encoding: str) -> list[str]:
    with text_file(path, encoding) as f:
        return f.read().splitlines()


# Every reader but "lines" (which has data.line_encoding) decodes its files as data.encoding.
READERS = {
    "csv": lambda path, cfg, labels_optional: read_delimited(path, ",", True, cfg.encoding),
    "tsv": lambda path, cfg, labels_optional: read_delimited(path, "\t", cfg.tsv_quoting, cfg.encoding),
    "jsonl": lambda path, cfg, labels_optional: read_jsonl(path, cfg.encoding),
    # JSONL conversations (OpenAI / TRL "messages"), rendered later with the tokenizer's chat template
    "chat": lambda path, cfg, labels_optional: chat.chat_records(read_jsonl(path, cfg.encoding),
                                                                 cfg.messages_column, labels_optional),
    "lines": lambda path, cfg, labels_optional: read_lines(path, cfg.line_separator, cfg.line_encoding,
                                                           cfg.text_column, cfg.label_column),
    "parallel": lambda path, cfg, labels_optional: read_parallel(path, cfg.encoding),
    "conll": lambda path, cfg, labels_optional: conll.read_conll_records(
        path, cfg.conll_token_column, cfg.conll_label_column, labels_optional, cfg.text_column, cfg.label_column,
        cfg.encoding),
}
FORMATS = tuple(READERS) + ("tfds",)
