"""From the data config to encoded train / validation / test arrays.

read (files or TFDS) -> clean -> split (carve validation / test out of train) -> label list ->
encode (sliding windows for long token-classification documents; packing for causal LM).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from mgpt.data import cleaning, conll, encode, packing, reading, splitting, windows
from mgpt.data.sources import DataError

logger = logging.getLogger("mgpt")

TASK_KINDS = ("sequence_classification", "multi_label_classification", "token_classification", "regression",
              "causal_lm", "generation")
# Task kinds whose data is read and encoded as another kind's: generation trains as causal LM on the target.
ENCODED_AS = {"generation": "causal_lm"}
SPLIT_FILES = reading.SPLIT_FILES
UNLABELLED_OK = reading.UNLABELLED_OK


@dataclasses.dataclass
class DatasetBundle:
    """Encoded splits plus what is needed to turn predictions back into labels.

    ``splits[name]`` holds Batch-contract arrays (input_ids, attention_mask, [token_type_ids],
    labels); only the splits whose files were given (or carved out of train) are present:
    "train", "validation", "test", and "predict" (whose examples may lack labels; theirs are
    -100, or 0.0 for regression). ``examples[name]`` are the raw examples in file order, after
    cleaning. For token classification ``word_index[name]`` (N, max_words) gives each word's first
    sub-word position (-1 = cut off) and ``num_words[name]`` (N,) the word counts; with sliding
    windows (``data.stride``) rows are windows and ``row_example`` / ``word_offset`` place them
    (see mgpt.data.windows). ``cleaning[name]`` counts the examples cleaning dropped, by reason.
    A packed causal-LM train split also has ``segment_ids`` / ``position_ids`` (mgpt.data.packing).
    """

    task_kind: str
    splits: dict[str, dict[str, np.ndarray]]
    label_names: tuple[str, ...]
    examples: dict[str, list[dict]]
    files: dict[str, str]
    word_index: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_words: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    row_example: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    word_offset: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cleaning: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def references(self, split: str):
        """What ``task.report`` compares predictions with: label ids (N,), float targets (N,),
        multi-hot labels (N, C), per-example word tag lists (token classification), or None (causal LM)."""
        if self.task_kind == "token_classification":
            return [list(e["tags"]) for e in self.examples[split]]
        if self.task_kind == "multi_label_classification":
            return np.asarray(self.splits[split]["labels"]).astype(np.int64)
        if self.task_kind in ("sequence_classification", "regression"):
            return np.asarray(self.splits[split]["labels"])
        return None


def _labels_of(example: dict, task_kind: str) -> list[str]:
    """The labels an example carries (none for unlabelled examples of a predict file)."""
    if task_kind == "token_classification":
        return list(example.get("tags", ()))
    if task_kind == "multi_label_classification":
        return list(example.get("label", ()))
    return [example["label"]] if "label" in example else []


def _hint_names(data_cfg, hint: tuple[str, ...]) -> tuple[str, ...]:
    """A TFDS ClassLabel's names, renamed by data.label_map (a name mapped to "" leaves)."""
    label_map = {str(k): str(v) for k, v in dict(data_cfg.label_map).items()}
    return tuple(dict.fromkeys(n for n in (label_map.get(h, h) for h in hint) if n))


def _label_names(data_cfg, task_kind: str, examples: dict[str, list[dict]], hint=()) -> tuple[str, ...]:
    """data.labels when given, else the names of a TFDS ClassLabel feature (``hint``), else the
    sorted labels seen in training ("O" first for tags)."""
    if task_kind in ("regression", "causal_lm"):
        return ()
    if data_cfg.labels or hint:
        names = tuple(str(label) for label in data_cfg.labels) or _hint_names(data_cfg, hint)
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
        raise DataError("data.labels must be given when there is no training data to read the labels from")
    seen = {label for e in examples["train"] for label in _labels_of(e, task_kind)}
    if task_kind != "token_classification":
        return tuple(sorted(seen))
    if data_cfg.label_all_subwords:  # non-first sub-words of a B-X word are labelled I-X
        seen |= {"I-" + tag[2:] for tag in seen if tag.startswith("B-")}
    return ("O",) + tuple(sorted(seen - {"O"}))


def _check_labels(label_names, task_kind, examples, files, origin: str) -> None:
    known = set(label_names)
    for split, split_examples in examples.items():
        for example in split_examples:
            for label in _labels_of(example, task_kind):
                if label not in known:
                    raise DataError(
                        f"{files[split]}: label {label!r} ({split} split) is not in the label list "
                        f"{list(label_names)} (from {origin}); list every label in data.labels"
                    )


def _encode_split(data_cfg, task_kind: str, split: str, split_examples: list[dict], tokenizer, label_to_id,
                  bundle: DatasetBundle, where: str) -> encode.Encoded:
    if task_kind == "token_classification":
        if data_cfg.stride > 0:
            encoded = windows.encode_token_windows(
                split_examples, tokenizer, data_cfg.max_length, label_to_id, data_cfg.stride,
                label_all_subwords=data_cfg.label_all_subwords, where=where,
            )
            bundle.row_example[split] = encoded.row_example
            bundle.word_offset[split] = encoded.word_offset
        else:
            encoded = encode.encode_tokens(
                split_examples, tokenizer, data_cfg.max_length, label_to_id,
                label_all_subwords=data_cfg.label_all_subwords, where=where,
            )
        bundle.word_index[split] = encoded.word_index
        bundle.num_words[split] = encoded.num_words
        return encoded
    if task_kind == "causal_lm":
        encoded = encode.encode_causal_lm(split_examples, tokenizer, data_cfg.max_length, where=where)
        if data_cfg.pack and split == "train":  # evaluation stays one example per row
            rows = len(split_examples)
            encoded.arrays = packing.pack_rows(encoded.arrays, data_cfg.max_length, encode.pad_id(tokenizer))
            logger.info("%s: packed %d examples into %d rows of %d tokens", where, rows,
                        len(encoded.arrays["input_ids"]), data_cfg.max_length)
        return encoded
    return encode.encode_sequences(
        split_examples, tokenizer, data_cfg.max_length,
        label_to_id=label_to_id if label_to_id else None,
        regression=task_kind == "regression", multi_label=task_kind == "multi_label_classification", where=where,
    )


def build_datasets(data_cfg, task_kind: str, tokenizer) -> DatasetBundle:
    """Read, clean, split, check and encode the splits named in ``data_cfg`` for ``task_kind``."""
    if task_kind not in TASK_KINDS:
        raise DataError(f"unknown task kind {task_kind!r}: expected one of {', '.join(TASK_KINDS)}")
    task_kind = ENCODED_AS.get(task_kind, task_kind)
    if data_cfg.max_length <= 0:
        raise DataError(f"data.max_length must be positive, got {data_cfg.max_length}")
    if data_cfg.stride < 0:
        raise DataError(f"data.stride must be >= 0 (0: no sliding windows), got {data_cfg.stride}")
    if data_cfg.stride and task_kind != "token_classification":
        raise DataError(f"data.stride (sliding windows) is for token_classification, not {task_kind}")
    if data_cfg.pack and task_kind != "causal_lm":
        raise DataError(f"data.pack is for causal_lm, not {task_kind}")
    examples, files, hint = reading.read_splits(data_cfg, task_kind)
    counts = {}
    for split in list(examples):
        examples[split], counts[split] = cleaning.clean_examples(
            examples[split], data_cfg, where=f"{split} ({files[split]})", keep_all=split in UNLABELLED_OK
        )
    examples, files = splitting.split_examples(examples, files, data_cfg, task_kind)
    label_names = _label_names(data_cfg, task_kind, examples, hint)
    if task_kind == "multi_label_classification" and not label_names:
        raise DataError(f"no labels in {files.get('train')}: every label set is empty; list them in data.labels")
    if label_names:
        origin = ("data.labels" if data_cfg.labels else "the TFDS label feature" if hint
                  else f"the labels of {files.get('train')}")
        _check_labels(label_names, task_kind, examples, files, origin)
    label_to_id = {name: i for i, name in enumerate(label_names)}

    bundle = DatasetBundle(task_kind=task_kind, splits={}, label_names=label_names, examples=examples, files=files,
                           cleaning=counts)
    for split, split_examples in examples.items():
        where = f"{split} ({files[split]})"
        encoded = _encode_split(data_cfg, task_kind, split, split_examples, tokenizer, label_to_id, bundle, where)
        bundle.splits[split] = encoded.arrays
        bundle.num_truncated[split] = encoded.num_truncated
        logger.info("%s: %d examples", where, len(split_examples))
    return bundle
