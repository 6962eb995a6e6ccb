"""Read every configured split into examples, from files or from TensorFlow Datasets."""

from __future__ import annotations

from mgpt.data import conll, records, sources
from mgpt.data.sources import DataError

SPLIT_FILES = (
    ("train", "train_file"),
    ("validation", "validation_file"),
    ("test", "test_file"),
    ("predict", "predict_file"),  # labels optional: examples to label with a trained model
)
UNLABELLED_OK = ("predict",)
FORMATS = sources.FORMATS + ("conll", "tfds")


def _uses_records(data_cfg, task_kind: str) -> bool:
    """Causal LM with a prompt template or target column reads every field of a row."""
    return task_kind == "causal_lm" and bool(data_cfg.prompt_template or data_cfg.target_column)


def _read_file(data_cfg, task_kind: str, path: str, labels_optional: bool) -> list[dict]:
    if data_cfg.format == "conll":
        if task_kind != "token_classification":
            raise DataError(f"data.format='conll' is only for token_classification, not {task_kind}")
        return conll.read_conll(path, data_cfg.conll_token_column, data_cfg.conll_label_column, labels_optional)
    if task_kind == "token_classification":
        raise DataError(f"token_classification reads data.format='conll' or 'tfds', got {data_cfg.format!r}")
    if _uses_records(data_cfg, task_kind):
        rows = sources.read_records(path, data_cfg.format)
        return records.examples_from_records(rows, data_cfg, task_kind, path, labels_optional)
    return sources.read_examples(
        path,
        data_cfg.format,
        text_column=data_cfg.text_column,
        label_column=data_cfg.label_column,
        text_pair_column=data_cfg.text_pair_column,
        label_kind=sources.label_kind_for(task_kind),
        labels_optional=labels_optional,
        label_delimiter=data_cfg.label_delimiter,
        line_separator=data_cfg.line_separator,
        line_encoding=data_cfg.line_encoding,
    )


def read_splits(data_cfg, task_kind: str) -> tuple[dict[str, list[dict]], dict[str, str], tuple[str, ...]]:
    """``(examples, sources, label_names_hint)``: the examples of each configured split, where each
    split came from (a file, or e.g. ``tfds:glue/sst2[train]``), and the label names a TFDS
    ClassLabel feature declares (empty for files)."""
    if data_cfg.format not in FORMATS:
        raise DataError(f"data.format {data_cfg.format!r}: expected one of {', '.join(FORMATS)}")
    files = {split: getattr(data_cfg, key) for split, key in SPLIT_FILES if getattr(data_cfg, key)}
    if data_cfg.format == "tfds":
        if files:
            raise DataError(f"data.format='tfds' reads data.tfds_name, but data files are set too: {files}")
        from mgpt.data import tfds_source  # TFDS is imported only when asked for

        rows, places, hint = tfds_source.read_tfds(data_cfg)
        examples = {
            split: records.examples_from_records(split_rows, data_cfg, task_kind, places[split],
                                                 labels_optional=split in UNLABELLED_OK)
            for split, split_rows in rows.items()
        }
        return examples, places, hint
    if data_cfg.tfds_name:
        raise DataError(f"data.tfds_name={data_cfg.tfds_name!r} is set but data.format is {data_cfg.format!r}; "
                        "set data.format='tfds' to read it")
    if not files:
        raise DataError("no data files: set data.train_file (and optionally data.validation_file, data.test_file)")
    examples = {
        split: _read_file(data_cfg, task_kind, path, labels_optional=split in UNLABELLED_OK)
        for split, path in files.items()
    }
    return examples, files, ()
