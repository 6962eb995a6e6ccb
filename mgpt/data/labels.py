"""How a task's labels look, and turning a raw label value (a file cell, a JSON value) into one.

A task object declares its ``label_kind`` (see :class:`mgpt.data.dataset.EncodingTask`); the data
layer reads, checks and lists labels by that kind and never by the task's name.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mgpt.data.errors import DataError

LABEL_NONE = "none"  # no label (causal LM, generation): an optional text pair is the scored completion
LABEL_STRING = "string"  # one class per example, kept verbatim as a string
LABEL_MULTI = "multi"  # any subset of classes: a list of strings, from "a|b" (data.label_delimiter) or a JSON list
LABEL_FLOAT = "float"  # one finite number per example (regression)
LABEL_TAGS = "tags"  # one IOB2 tag per word (token classification)
LABEL_KINDS = (LABEL_NONE, LABEL_STRING, LABEL_MULTI, LABEL_FLOAT, LABEL_TAGS)


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
    """A raw label value -> a float (``LABEL_FLOAT``), a string (``LABEL_STRING``) or a list of
    strings (``LABEL_MULTI``, split on ``delimiter``); a bad value fails naming ``where``."""
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


def check_label_kind(label_kind: str, owner: str) -> str:
    """``label_kind`` itself when it is one of :data:`LABEL_KINDS`; else a DataError naming ``owner``."""
    if label_kind not in LABEL_KINDS:
        raise DataError(f"{owner}: label kind {label_kind!r} is not one of {', '.join(LABEL_KINDS)}")
    return label_kind
