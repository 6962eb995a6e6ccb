"""From records (every field of a row: a TFDS example, or a file row) to task examples.

A record is a plain dict of field values (strings, numbers, lists). The data config names which
fields are the text, the pair, the label or the tokens and tags; for causal language modelling a
prompt template may combine several fields. The examples have the same shape the file readers
produce: ``{"text", "text_pair"?, "label"?}`` or ``{"tokens", "tags"?}``.
"""

from __future__ import annotations

import string
from typing import Any

from mgpt.data import conll, sources
from mgpt.data.sources import DataError


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


def _field(record: dict, name: str, what: str, where: str, optional: bool = False):
    if name not in record:
        if optional:
            return None
        raise DataError(f"{where}: missing field {name!r} (for {what}); the record has {sorted(record)}")
    return record[name]


def _strings(value: Any, field: str, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field {field!r} must be a list of strings, got {value!r:.80}")
    return list(value)


def example_from_record(record: dict, data_cfg, task_kind: str, where: str, labels_optional: bool = False) -> dict:
    """One record -> one example for ``task_kind``, using the data config's field names.

    A label of ``None`` (TFDS's -1: "no label", as in GLUE test sets) counts as missing.
    """
    if task_kind == "token_classification":
        tokens = _strings(_field(record, data_cfg.text_column, "tokens", where), data_cfg.text_column, where)
        tags = _field(record, data_cfg.label_column, "tags", where, optional=labels_optional)
        if tags is None:
            return {"tokens": tokens}
        tags = _strings(tags, data_cfg.label_column, where)
        if len(tags) != len(tokens):
            raise DataError(f"{where}: {len(tokens)} tokens ({data_cfg.text_column!r}) but {len(tags)} tags "
                            f"({data_cfg.label_column!r})")
        for tag in tags:
            try:
                conll.split_tag(tag)
            except ValueError as e:
                raise DataError(f"{where}: {e}") from None
        return {"tokens": tokens, "tags": tags}
    if task_kind == "causal_lm":
        if data_cfg.prompt_template:
            example = {"text": render(data_cfg.prompt_template, record, where)}
        else:
            example = {"text": _text(_field(record, data_cfg.text_column, "text", where), data_cfg.text_column, where)}
        target = data_cfg.target_column or data_cfg.text_pair_column
        if target:
            value = _field(record, target, "the target", where, optional=labels_optional)
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
                # Several targets (e.g. SciTLDR's author and reviewer TLDRs): train on, and score against, the first.
                value = value[0]
            if value is not None:
                example["text_pair"] = _text(value, target, where)
        return example
    example = {"text": _text(_field(record, data_cfg.text_column, "text", where), data_cfg.text_column, where)}
    if data_cfg.text_pair_column:
        pair = _field(record, data_cfg.text_pair_column, "text_pair", where)
        example["text_pair"] = _text(pair, data_cfg.text_pair_column, where)
    label = _field(record, data_cfg.label_column, "label", where, optional=True)
    if label is None:
        if not labels_optional:
            raise DataError(f"{where}: no label in field {data_cfg.label_column!r} (a split to train or evaluate on "
                            "needs labels; TFDS marks hidden labels, e.g. GLUE test sets, as -1)")
        return example
    kind = sources.label_kind_for(task_kind)
    example["label"] = sources.convert_label(label, kind, where, data_cfg.label_delimiter)
    return example


def examples_from_records(records: list[tuple[str, dict]], data_cfg, task_kind: str, source: str,
                          labels_optional: bool = False) -> list[dict]:
    """``[(where, record), ...]`` read from ``source`` -> examples; tags are brought to IOB2 as a whole."""
    if not records:
        raise DataError(f"{source}: no examples")
    examples = [example_from_record(r, data_cfg, task_kind, where, labels_optional) for where, r in records]
    if task_kind == "token_classification":
        conll.normalise_tags(examples, source)
    return examples
