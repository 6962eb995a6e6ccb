"""CoNLL-style token/tag files, normalised to the IOB2 tag scheme.

A file holds one token per line in whitespace-separated columns; a blank line ends a sentence and
``-DOCSTART-`` lines are skipped. The tag scheme (IOB1, IOB2 or BIOES/IOBES) is detected per file
and every sentence is converted to IOB2, the scheme the metrics (seqeval, strict mode) expect.
"""

from __future__ import annotations

import logging
import os
import re

from mgpt.data.sources import DataError

logger = logging.getLogger("mgpt")

_TAG = re.compile(r"^([BIES])-(\S+)$")

SCHEMES = ("IOB1", "IOB2", "BIOES")


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``; anything else raises ValueError."""
    if tag == "O":
        return "O", ""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(f"invalid tag {tag!r}: expected 'O' or B-/I-/E-/S- followed by an entity type")
    return match.group(1), match.group(2)


def _continues(previous: str, kind: str) -> bool:
    """Whether a tag after ``previous`` may continue an entity of type ``kind``."""
    prefix, prev_kind = split_tag(previous) if previous else ("O", "")
    return prev_kind == kind and prefix in ("B", "I")


def detect_scheme(tag_sequences: list[list[str]]) -> str:
    """Guess a file's scheme: BIOES if any S-/E- tag, IOB1 if an I- tag starts an entity, else IOB2."""
    starts_with_inside = False
    for tags in tag_sequences:
        previous = ""
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix in ("S", "E"):
                return "BIOES"
            if prefix == "I" and not _continues(previous, kind):
                starts_with_inside = True
            previous = tag
    return "IOB1" if starts_with_inside else "IOB2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """Convert one sentence's tags to IOB2.

    IOB1: an I-X that starts an entity becomes B-X. BIOES: S-X -> B-X, E-X -> I-X (an I-/E- that
    does not continue an entity of its type starts a new one, so the result is always valid IOB2).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}: expected one of {SCHEMES}")
    out = []
    previous = ""  # the previous tag in the *input* scheme
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "O":
            out.append("O")
        elif prefix in ("B", "S"):
            out.append(f"B-{kind}")
        else:  # I or E: inside, unless nothing of this type is open
            open_entity = _continues(previous, kind)
            out.append(f"I-{kind}" if open_entity else f"B-{kind}")
        previous = tag
    return out


def _column_index(index: int, num_columns: int) -> int:
    return index if index >= 0 else num_columns + index


def read_conll(
    path: str | os.PathLike, token_column: int = 0, label_column: int = -1, tags_optional: bool = False
) -> list[dict]:
    """Read a CoNLL file into ``[{"tokens": [...], "tags": [...]}, ...]`` with IOB2 tags.

    ``token_column`` / ``label_column`` pick columns by index (negative counts from the end).
    With ``tags_optional`` (files to predict on) a sentence whose lines have no tag column is
    returned as ``{"tokens": [...]}``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: data file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: data file is empty")
    # The fewest columns a line needs so both indices exist (and differ).
    needed = max(
        token_column + 1 if token_column >= 0 else -token_column,
        label_column + 1 if label_column >= 0 else -label_column,
    )
    if (token_column >= 0) != (label_column >= 0) and abs(token_column - label_column) == needed:
        needed += 1  # e.g. token 0 / label -1: one column would serve as both
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    untagged: list[int] = []  # line numbers of token-only lines in the current sentence

    def flush():
        if tokens:
            if untagged and tags:
                raise DataError(f"{path}:{untagged[0]}: a sentence mixes tagged and untagged lines")
            sentences.append({"tokens": list(tokens), "tags": list(tags)} if tags else {"tokens": list(tokens)})
            tokens.clear()
            tags.clear()
            untagged.clear()

    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            columns = line.split()
            if not columns:
                flush()
                continue
            if columns[0] == "-DOCSTART-":
                flush()
                continue
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
    return normalise_tags(sentences, path)


def normalise_tags(sentences: list[dict], source: str) -> list[dict]:
    """Detect the tag scheme of ``sentences`` (dicts with optional ``"tags"``) and convert them,
    in place, to IOB2; ``source`` names where they came from in the log."""
    tagged = [s for s in sentences if "tags" in s]
    scheme = detect_scheme([s["tags"] for s in tagged])
    if scheme != "IOB2":
        logger.info("%s: converting %s tags to IOB2", source, scheme)
    for sentence in tagged:
        sentence["tags"] = to_iob2(sentence["tags"], scheme)
    return sentences
