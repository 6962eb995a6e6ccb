"""The one entry point from the data config to examples: every format through one reader, then one conversion.

``read_file`` reads a file with its format's reader (:data:`mgpt.data.formats.READERS`) into
records; ``read_examples`` turns them into examples for a task's label kind; ``read_splits``
does both for every configured split, from files or from TensorFlow Datasets.
"""

from __future__ import annotations

import os

from mgpt.data import formats, labels, records
from mgpt.data.errors import DataError

SPLIT_FILES = (
    ("train", "train_file"),
    ("validation", "validation_file"),
    ("test", "test_file"),
    ("predict", "predict_file"),  # labels optional: examples to label with a trained model
)
UNLABELLED_OK = ("predict",)
FORMATS = formats.FORMATS


def read_file(path: str | os.PathLike, data_cfg, labels_optional: bool = False, fmt: str = "") -> records.Records:
    """Every field of every row of ``path``, read by its format's reader (``fmt``, else ``data.format``)."""
    fmt = fmt or data_cfg.format
    if fmt not in formats.READERS:
        raise DataError(f"unknown data format {fmt!r}: expected one of {', '.join(formats.READERS)}")
    return formats.READERS[fmt](os.fspath(path), data_cfg, labels_optional)


def check_format(data_cfg, label_kind: str, task_name: str = "this task") -> None:
    """Fail when ``data.format`` cannot give examples of ``label_kind`` (named ``task_name`` in the message)."""
    fmt = data_cfg.format
    if fmt not in FORMATS:
        raise DataError(f"data.format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "conll" and label_kind != labels.LABEL_TAGS:  # CoNLL holds word tags only
        raise DataError(f"data.format='conll' is only for token_classification, not {task_name}")
    if fmt == "chat" and label_kind != labels.LABEL_NONE:  # conversations train causal LMs only
        raise DataError(f"data.format='chat' is only for causal_lm and generation, not {task_name}")
    if label_kind == labels.LABEL_TAGS and fmt not in ("conll", "tfds"):
        raise DataError(f"{task_name} reads data.format='conll' or 'tfds', got {fmt!r}")


def _check_parallel(path, data_cfg, label_kind: str) -> None:
    """A translation pair has no text or label column: only a prompt template (or a target) uses it."""
    if not (label_kind == labels.LABEL_NONE and (data_cfg.prompt_template or data_cfg.target_column)):
        raise DataError(f"{os.fspath(path)}: data.format='parallel' gives source/target records for a prompt "
                        "template; use it with data.prompt_template (task kinds generation or causal_lm)")


def read_examples(path: str | os.PathLike, data_cfg, label_kind: str, labels_optional: bool = False,
                  task_name: str = "this task") -> list[dict]:
    """The examples of one file for a task whose labels are ``label_kind`` (see :mod:`mgpt.data.records`).

    With ``labels_optional`` (files to predict on) examples may lack labels.
    """
    labels.check_label_kind(label_kind, task_name)
    check_format(data_cfg, label_kind, task_name)
    if data_cfg.format == "parallel":
        _check_parallel(path, data_cfg, label_kind)
    rows = read_file(path, data_cfg, labels_optional)
    return records.examples_from_records(rows, data_cfg, label_kind, labels_optional)


def read_splits(data_cfg, label_kind: str, task_name: str = "this task"
                ) -> tuple[dict[str, list[dict]], dict[str, str], tuple[str, ...]]:
    """``(examples, sources, label_names_hint)``: the examples of each configured split, where each
    split came from (a file, or e.g. ``tfds:glue/sst2[train]``), and the label names a TFDS
    ClassLabel feature declares (empty for files)."""
    labels.check_label_kind(label_kind, task_name)
    check_format(data_cfg, label_kind, task_name)
    files = {split: getattr(data_cfg, key) for split, key in SPLIT_FILES if getattr(data_cfg, key)}
    if data_cfg.format == "tfds":
        if files:
            raise DataError(f"data.format='tfds' reads data.tfds_name, but data files are set too: {files}")
        from mgpt.data import tfds_source  # TFDS is imported only when asked for

        rows, places, hint = tfds_source.read_tfds(data_cfg)
        examples = {split: records.examples_from_records(split_rows, data_cfg, label_kind,
                                                         labels_optional=split in UNLABELLED_OK)
                    for split, split_rows in rows.items()}
        return examples, places, hint
    if data_cfg.tfds_name:
        raise DataError(f"data.tfds_name={data_cfg.tfds_name!r} is set but data.format is {data_cfg.format!r}; "
                        "set data.format='tfds' to read it")
    if not files:
        raise DataError("no data files: set data.train_file (and optionally data.validation_file, data.test_file)")
    examples = {split: read_examples(path, data_cfg, label_kind, split in UNLABELLED_OK, task_name)
                for split, path in files.items()}
    return examples, files, ()
