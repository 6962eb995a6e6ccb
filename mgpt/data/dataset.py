"""From the data config to encoded train / validation / test arrays."""

from __future__ import annotations

import dataclasses
import logging
import numpy as np

from mgpt.data import conll, encode, sources
from mgpt.data.sources import DataError

logger = logging.getLogger("mgpt")

TASK_KINDS = ("sequence_classification", "token_classification", "regression", "causal_lm")
SPLIT_FILES = (
    ("train", "train_file"),
    ("validation", "validation_file"),
    ("test", "test_file"),
    ("predict", "predict_file"),  # labels optional: examples to label with a trained model
)
UNLABELLED_OK = ("predict",)


@dataclasses.dataclass
class DatasetBundle:
    """Encoded splits plus what is needed to turn predictions back into labels.

    ``splits[name]`` holds Batch-contract arrays (input_ids, attention_mask, [token_type_ids],
    labels); only the splits whose files were given are present: "train", "validation", "test",
    and "predict" (whose examples may lack labels; theirs are -100, or 0.0 for regression).
    ``examples[name]`` are the raw examples in file order. For token classification ``word_index[name]`` (N, max_words) gives
    each word's first sub-word position (-1 = cut off) and ``num_words[name]`` (N,) the word counts.
    """

    task_kind: str
    splits: dict[str, dict[str, np.ndarray]]
    label_names: tuple[str, ...]
    examples: dict[str, list[dict]]
    files: dict[str, str]
    word_index: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_words: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_truncated: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def references(self, split: str):
        """What ``task.report`` compares predictions with: label ids (N,), float targets (N,),
        per-example word tag lists (token classification), or None (causal LM)."""
        if self.task_kind == "token_classification":
            return [list(e["tags"]) for e in self.examples[split]]
        if self.task_kind in ("sequence_classification", "regression"):
            return np.asarray(self.splits[split]["labels"])
        return None


def _read_split(data_cfg, task_kind: str, path: str, labels_optional: bool) -> list[dict]:
    if data_cfg.format == "conll":
        if task_kind != "token_classification":
            raise DataError(f"data.format='conll' is only for token_classification, not {task_kind}")
        return conll.read_conll(path, data_cfg.conll_token_column, data_cfg.conll_label_column, labels_optional)
    if task_kind == "token_classification":
        raise DataError(f"token_classification reads data.format='conll', got {data_cfg.format!r}")
    return sources.read_examples(
        path,
        data_cfg.format,
        text_column=data_cfg.text_column,
        label_column=data_cfg.label_column,
        text_pair_column=data_cfg.text_pair_column,
        label_kind=sources.label_kind_for(task_kind),
        labels_optional=labels_optional,
    )


def _labels_of(example: dict, task_kind: str) -> list[str]:
    """The labels an example carries (none for unlabelled examples of a predict file)."""
    if task_kind == "token_classification":
        return list(example.get("tags", ()))
    return [example["label"]] if "label" in example else []


def _label_names(data_cfg, task_kind: str, examples: dict[str, list[dict]]) -> tuple[str, ...]:
    """data.labels when given, else the sorted labels seen in training ("O" first for tags)."""
    if task_kind in ("regression", "causal_lm"):
        return ()
    if data_cfg.labels:
        names = tuple(str(label) for label in data_cfg.labels)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DataError(f"data.labels has duplicates: {duplicates}")
        if task_kind == "token_classification":
            for name in names:
                try:
                    conll.split_tag(name)
                except ValueError as e:
                    raise DataError(f"data.labels: {e} (tags are IOB2)") from None
        return names
    if "train" not in examples:
        raise DataError("data.labels must be given when there is no data.train_file to read the labels from")
    seen = {label for e in examples["train"] for label in _labels_of(e, task_kind)}
    if task_kind != "token_classification":
        return tuple(sorted(seen))
    if data_cfg.label_all_subwords:  # non-first sub-words of a B-X word are labelled I-X
        seen |= {"I-" + tag[2:] for tag in seen if tag.startswith("B-")}
    return ("O",) + tuple(sorted(seen - {"O"}))


def _check_labels(label_names, task_kind, examples, files, from_config: bool) -> None:
    known = set(label_names)
    origin = "data.labels" if from_config else f"the labels of {files.get('train')}"
    for split, split_examples in examples.items():
        for example in split_examples:
            for label in _labels_of(example, task_kind):
                if label not in known:
                    raise DataError(
                        f"{files[split]}: label {label!r} ({split} split) is not in the label list "
                        f"{list(label_names)} (from {origin}); list every label in data.labels"
                    )


def build_datasets(data_cfg, task_kind: str, tokenizer) -> DatasetBundle:
    """Read, check and encode the splits named in ``data_cfg`` for ``task_kind``."""
    if task_kind not in TASK_KINDS:
        raise DataError(f"unknown task kind {task_kind!r}: expected one of {', '.join(TASK_KINDS)}")
    if data_cfg.format not in sources.FORMATS + ("conll",):
        raise DataError(f"data.format {data_cfg.format!r}: expected one of csv, tsv, jsonl, conll")
    if data_cfg.max_length <= 0:
        raise DataError(f"data.max_length must be positive, got {data_cfg.max_length}")
    files = {split: getattr(data_cfg, key) for split, key in SPLIT_FILES if getattr(data_cfg, key)}
    if not files:
        raise DataError("no data files: set data.train_file (and optionally data.validation_file, data.test_file)")
    examples = {
        split: _read_split(data_cfg, task_kind, path, labels_optional=split in UNLABELLED_OK)
        for split, path in files.items()
    }
    label_names = _label_names(data_cfg, task_kind, examples)
    has_labels = bool(label_names)
    if has_labels:
        _check_labels(label_names, task_kind, examples, files, bool(data_cfg.labels))
    label_to_id = {name: i for i, name in enumerate(label_names)}

    bundle = DatasetBundle(task_kind=task_kind, splits={}, label_names=label_names, examples=examples, files=files)
    for split, split_examples in examples.items():
        where = f"{split} ({files[split]})"
        if task_kind == "token_classification":
            encoded = encode.encode_tokens(
                split_examples, tokenizer, data_cfg.max_length, label_to_id,
                label_all_subwords=data_cfg.label_all_subwords, where=where,
            )
            bundle.word_index[split] = encoded.word_index
            bundle.num_words[split] = encoded.num_words
        elif task_kind == "causal_lm":
            encoded = encode.encode_causal_lm(split_examples, tokenizer, data_cfg.max_length, where=where)
        else:
            encoded = encode.encode_sequences(
                split_examples, tokenizer, data_cfg.max_length,
                label_to_id=label_to_id if has_labels else None,
                regression=task_kind == "regression", where=where,
            )
        bundle.splits[split] = encoded.arrays
        bundle.num_truncated[split] = encoded.num_truncated
        logger.info("%s: %d examples", where, len(split_examples))
    return bundle

