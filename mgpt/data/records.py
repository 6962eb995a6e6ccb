"""Records -- every field of every row of one source -- and turning them into task examples.

Every reader (one per format: :mod:`mgpt.data.formats`, :mod:`mgpt.data.conll`,
:mod:`mgpt.data.tfds_source`) returns :class:`Records`. The data config names which fields are
the text, the pair, the label or the tokens and tags; for causal language modelling a prompt
template may combine several fields. What an example holds follows the task's label kind
(:mod:`mgpt.data.labels`): ``{"text", "text_pair"?, "label"?}`` or ``{"tokens", "tags"?}``; chat
data (:mod:`mgpt.data.chat`) gives ``{"messages", "where"}``.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import os
import string
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from mgpt.data import compression
from mgpt.data import labels as label_kinds
from mgpt.data import tags as tag_schemes
from mgpt.data.errors import DataError


def missing_field(where: str, name: str, what: str, record: dict) -> str:
    """The message for a record without field ``name`` (needed for ``what``)."""
    return f"{where}: missing field {name!r} (for {what}); the record has {sorted(record)}"


@dataclasses.dataclass
class Records:
    """The rows of one source, ``[(where, {field: value}), ...]`` with ``where`` like ``"file:line"``.

    ``missing(where, name, what, record)`` words the error for a row without a needed field the
    way the format speaks (a CSV names its header, JSON Lines an object's keys).
    """

    source: str
    rows: list[tuple[str, dict]]
    missing: Callable[[str, str, str, dict], str] = missing_field


def check_file(path: str) -> None:
    """Fail naming ``path`` when it is not a file or is empty."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: data file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: data file is empty")


@contextlib.contextmanager
def text_file(path: str, encoding: str, option: str = "data.encoding", newline: str | None = None) -> Iterator[TextIO]:
    """``path`` opened for reading as ``encoding`` text (a UTF-8 byte order mark is skipped); a ``.gz``, ``.bz2``
    or ``.xz`` file is decompressed as it is read (:mod:`mgpt.data.compression`), a damaged one fails naming it.

    A byte that does not decode, while the body reads, fails as one DataError naming the file, the
    line and the config option ``option`` that sets the encoding, instead of a bare UnicodeDecodeError.
    """
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"{option}={encoding!r} is not a known text encoding; "
                        "expected a Python codec name such as 'utf-8' or 'latin-1'") from None
    compressed = bool(compression.compression_of(path))  # .gz, .bz2, .xz: decompressed as it is read
    with compression.open_text(path, "utf-8-sig" if codec == "utf-8" else encoding, newline) as f:
        try:
            yield f
        except UnicodeDecodeError as e:
            raise DataError(_decode_error(path, encoding, option, e)) from None
        except compression.READ_ERRORS as e:
            if not compressed:
                raise
            raise compression.damaged_file_error(path, e) from None


def _decode_error(path: str, encoding: str, option: str, error: UnicodeDecodeError) -> str:
    """The message for a file that is not ``encoding`` text, at the line of its first bad byte.

    A text file decodes in chunks, so ``error`` knows neither the line nor the offset in the file:
    decoding the whole file once more finds both (only on this failure path).
    """
    data = compression.read_bytes(path)
    place = path
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        error = e
        place = f"{path}:{line_of(data[: e.start].decode(encoding, errors='replace'))}"
    bad = error.object[error.start: error.end][:4].hex(" ")
    return (f"{place}: bytes {bad} are not valid {encoding} ({error.reason}); expected {encoding} text: "
            f"set {option} to the file's encoding, e.g. --set {option}=latin-1")


def line_of(prefix: str) -> int:
    """The line number at the end of ``prefix`` (text from the file's start); lines end at \\n, \\r\\n or \\r."""
    return prefix.count("\n") + prefix.count("\r") - prefix.count("\r\n") + 1


def template_fields(template: str) -> list[str]:
    """The field names a ``str.format`` template refers to, in order (``{a} {b}`` -> ["a", "b"])."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise DataError(f"data.prompt_template {template!r} is not a valid format string ({e})") from None
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise DataError(f"data.prompt_template {template!r}: fields must be plain names like {{question}}, got {bad}")
    return names


def render(template: str, record: dict, where: str) -> str:
    """Fill ``template`` from ``record``; a missing field fails naming it and the record's place."""
    fields = template_fields(template)
    missing = [name for name in fields if name not in record]
    if missing:
        raise DataError(f"{where}: data.prompt_template needs field(s) {missing}; the record has {sorted(record)}")
    return template.format_map({name: _text(record[name], name, where) for name in fields})


def _text(value: Any, field: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " ".join(value)  # e.g. the sentences of an abstract
    raise DataError(f"{where}: field {field!r} must be text (a string or a list of strings), got {value!r:.80}")


def _strings(value: Any, field: str, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field {field!r} must be a list of strings, got {value!r:.80}")
    return list(value)


class _Row:
    """One record with its place, and how its format words a missing field."""

    def __init__(self, record: dict, where: str, missing: Callable[[str, str, str, dict], str]):
        self.record, self.where, self.missing = record, where, missing

    def get(self, name: str, what: str, optional: bool = False):
        if name not in self.record:
            if optional:
                return None
            raise DataError(self.missing(self.where, name, what, self.record))
        return self.record[name]


def _tagged(row: _Row, data_cfg, labels_optional: bool) -> dict:
    tokens = _strings(row.get(data_cfg.text_column, "tokens"), data_cfg.text_column, row.where)
    tags = row.get(data_cfg.label_column, "tags", optional=labels_optional)
    if tags is None:
        return {"tokens": tokens}
    tags = _strings(tags, data_cfg.label_column, row.where)
    if len(tags) != len(tokens):
        raise DataError(f"{row.where}: {len(tokens)} tokens ({data_cfg.text_column!r}) but {len(tags)} tags "
                        f"({data_cfg.label_column!r})")
    for tag in tags:
        try:
            tag_schemes.split_tag(tag)
        except ValueError as e:
            raise DataError(f"{row.where}: {e}") from None
    return {"tokens": tokens, "tags": tags}


def _unlabelled(row: _Row, data_cfg, labels_optional: bool) -> dict:
    """A causal-LM example: the text (or the rendered prompt) and, when configured, the completion;
    or a conversation (data.format="chat", see mgpt.data.chat)."""
    if data_cfg.format == "chat":
        # the "chat" reader checked the messages; the place names the line in later errors (the template check)
        return {"messages": row.record["messages"], "where": row.where}
    if data_cfg.prompt_template:
        example = {"text": render(data_cfg.prompt_template, row.record, row.where)}
    else:
        example = {"text": _text(row.get(data_cfg.text_column, "text"), data_cfg.text_column, row.where)}
    target = data_cfg.target_column or data_cfg.text_pair_column
    if target:
        value = row.get(target, "the target", optional=labels_optional)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            # Several targets (e.g. SciTLDR's author and reviewer TLDRs): train on, and score against, the first.
            value = value[0]
        if value is not None:
            example["text_pair"] = _text(value, target, row.where)
    return example


def _labelled(row: _Row, data_cfg, label_kind: str, labels_optional: bool) -> dict:
    """A text (and pair) with one class, a set of classes or a number."""
    example = {"text": _text(row.get(data_cfg.text_column, "text"), data_cfg.text_column, row.where)}
    if data_cfg.text_pair_column:
        pair = row.get(data_cfg.text_pair_column, "text_pair")
        example["text_pair"] = _text(pair, data_cfg.text_pair_column, row.where)
    label = row.get(data_cfg.label_column, "label", optional=labels_optional)
    if label is None:  # absent from a file to predict on, or TFDS's -1 ("no label", as in GLUE test sets)
        if not labels_optional:
            raise DataError(f"{row.where}: no label in field {data_cfg.label_column!r} (a split to train or "
                            "evaluate on needs labels; TFDS marks hidden labels, e.g. GLUE test sets, as -1)")
        return example
    try:
        example["label"] = label_kinds.convert_label(label, label_kind, row.where, data_cfg.label_delimiter)
    except OverflowError:  # float() of a JSON integer with hundreds of digits
        raise DataError(f"{row.where}: regression label {label!r:.40} overflows a float; "
                        "expected a finite float32 number") from None
    if label_kind == label_kinds.LABEL_FLOAT:
        check_float32(example["label"], label, row.where)
    return example


def check_float32(number: float, raw: Any, where: str) -> None:
    """Fail naming ``where`` and ``raw`` when ``number`` is not finite as float32, the regression targets'
    dtype: 1e39 is a finite Python float but becomes inf (and the loss NaN) in float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bool(np.isfinite(np.float32(number)))
    if not finite:
        raise DataError(f"{where}: regression label {raw!r:.40} is not finite in float32; expected a finite "
                        f"number of magnitude at most {float(np.finfo(np.float32).max):.4g}")


def example_from_record(record: dict, data_cfg, label_kind: str, where: str, labels_optional: bool = False,
                        missing: Callable[[str, str, str, dict], str] = missing_field) -> dict:
    """One record -> one example for a task whose labels are ``label_kind``, by the data config's field names."""
    row = _Row(record, where, missing)
    if label_kind == label_kinds.LABEL_TAGS:
        return _tagged(row, data_cfg, labels_optional)
    if label_kind == label_kinds.LABEL_NONE:
        return _unlabelled(row, data_cfg, labels_optional)
    return _labelled(row, data_cfg, label_kind, labels_optional)


def examples_from_records(records: Records, data_cfg, label_kind: str, labels_optional: bool = False) -> list[dict]:
    """Every row of ``records`` -> an example; tags are brought to IOB2 for the source as a whole."""
    if not records.rows:
        raise DataError(f"{records.source}: no examples")
    examples = [example_from_record(r, data_cfg, label_kind, where, labels_optional, records.missing)
                for where, r in records.rows]
    if label_kind == label_kinds.LABEL_TAGS:
        tag_schemes.normalise_tags(examples, records.source)
    return examples
