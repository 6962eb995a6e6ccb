"""CoNLL-style token/tag files: one token per line in whitespace-separated columns.

A blank line ends a sentence and ``-DOCSTART-`` lines are skipped. Each sentence is one record;
the tag scheme (IOB1, IOB2 or BIOES/IOBES) is detected for the file as a whole and converted to
IOB2 when the records become examples (:mod:`mgpt.data.tags`).
"""

from __future__ import annotations

import os
import types

from mgpt.data import labels, records
from mgpt.data.errors import DataError
from mgpt.data.records import Records, check_file, text_file
from mgpt.data.tags import split_tag


def _column_index(index: int, num_columns: int) -> int:
    return index if index >= 0 else num_columns + index


def _check_width(where: str, line: str, found: int, width: tuple[int, int]) -> None:
    """Fail unless a tagged line has the ``width[0]`` columns of the file's first tagged line (line ``width[1]``).

    A line with a column too few or too many would otherwise put another column (e.g. the chunk tag of
    ``bob NNP B-NP`` in a 4-column file) where the label column is, and train on it silently.
    """
    if found != width[0]:
        raise DataError(f"{where}: found {found} whitespace-separated columns {line.strip()!r}; expected {width[0]}, "
                        f"as on line {width[1]} (the file's first token line with a tag fixes the column count)")


def read_conll_records(path: str | os.PathLike, token_column: int = 0, label_column: int = -1,
                       tags_optional: bool = False, token_field: str = "tokens", tag_field: str = "tags",
                       encoding: str = "utf-8") -> Records:
    """Read a CoNLL file into one record per sentence, ``{token_field: [...], tag_field: [...]}``.

    ``token_column`` / ``label_column`` pick columns by index (negative counts from the end).
    With ``tags_optional`` (files to predict on) a sentence whose lines have no tag column is a
    record without ``tag_field``. Each record's place is the sentence's first line. The first
    tagged line fixes the number of columns; a tagged line with another number fails.
    """
    path = os.fspath(path)
    check_file(path)
    # The fewest columns a line needs so both indices exist (and differ).
    needed = max(
        token_column + 1 if token_column >= 0 else -token_column,
        label_column + 1 if label_column >= 0 else -label_column,
    )
    if (token_column >= 0) != (label_column >= 0) and abs(token_column - label_column) == needed:
        needed += 1  # e.g. token 0 / label -1: one column would serve as both
    sentences: list[tuple[str, dict]] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []  # line numbers of the current sentence
    untagged: list[int] = []  # line numbers of token-only lines in the current sentence
    width: tuple[int, int] | None = None  # (columns, line) of the file's first tagged line

    def flush():
        if tokens:
            if untagged and tags:
                raise DataError(f"{path}:{untagged[0]}: a sentence mixes tagged and untagged lines")
            record = {token_field: list(tokens), tag_field: list(tags)} if tags else {token_field: list(tokens)}
            sentences.append((f"{path}:{lines[0]}", record))
            for part in (tokens, tags, lines, untagged):
                part.clear()

    with text_file(path, encoding) as f:
        for line_number, line in enumerate(f, start=1):
            columns = line.split()
            if not columns or columns[0] == "-DOCSTART-":
                flush()
                continue
            lines.append(line_number)
            where = f"{path}:{line_number}"
            if tags_optional and len(columns) < needed and -len(columns) <= token_column < len(columns):
                tokens.append(columns[token_column])
                untagged.append(line_number)
                continue
            if len(columns) < needed:
                raise DataError(
                    f"{where}: expected at least {needed} whitespace-separated columns "
                    f"(token column {token_column}, label column {label_column}), got {len(columns)}: {line.strip()!r}"
                )
            width = width or (len(columns), line_number)
            _check_width(where, line, len(columns), width)
            t = _column_index(token_column, len(columns))
            c = _column_index(label_column, len(columns))
            if t == c:
                raise DataError(
                    f"{where}: token column {token_column} and label column {label_column} are the same column "
                    f"on a line with {len(columns)} columns"
                )
            tag = columns[c]
            try:
                split_tag(tag)
            except ValueError as e:
                raise DataError(f"{where}: {e}") from None
            tokens.append(columns[t])
            tags.append(tag)
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences (only blank or -DOCSTART- lines)")
    return Records(path, sentences)


# The fields read_conll's records use, in the shape of the data config's column names.
_FIELDS = types.SimpleNamespace(text_column="tokens", label_column="tags")


def read_conll(path: str | os.PathLike, token_column: int = 0, label_column: int = -1,
               tags_optional: bool = False) -> list[dict]:
    """A CoNLL file as examples ``[{"tokens": [...], "tags": [...]}, ...]`` with IOB2 tags.

    The same reader and conversion the data path uses (:func:`read_conll_records`, then
    :func:`mgpt.data.records.examples_from_records`), for scripts that want sentences without a data config.
    """
    sentences = read_conll_records(path, token_column, label_column, tags_optional)
    return records.examples_from_records(sentences, _FIELDS, labels.LABEL_TAGS, labels_optional=tags_optional)
