"""From the data config to encoded train / validation / test arrays.

read (one reader per format -> records -> examples) -> clean -> split (carve validation / test out
of train) -> label list -> the task encodes (sliding windows for long token-classification
documents; packing). The data layer asks the task object how its labels look and
lets it encode; it never imports mgpt.tasks nor compares task names.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Protocol

import numpy as np

from mgpt.data import cleaning, labels, reading, splitting
from mgpt.data.encode import Encoded
from mgpt.data.errors import DataError
from mgpt.data.tags import split_tag

logger = logging.getLogger("mgpt")

SPLIT_FILES = reading.SPLIT_FILES
UNLABELLED_OK = reading.UNLABELLED_OK
# Per-split arrays an encoder may return besides the Batch arrays, kept on the bundle under the same name.
_EXTRAS = ("word_index", "num_words", "row_example", "word_offset", "prompt_ids")


class EncodingTask(Protocol):
    """What :func:`build_datasets` needs of a task object (every task in mgpt.tasks has it)."""

    name: str  # named in error messages
    label_kind: str  # how its labels look: one of mgpt.data.labels.LABEL_KINDS

    def encode(self, examples: list[dict], tokenizer, data_cfg, label_to_id: Mapping[str, int], *, split: str,
               where: str) -> Encoded:
        """The Batch-contract arrays of one split's examples (see mgpt.data.encode)."""


@dataclasses.dataclass
class DatasetBundle:
    """Encoded splits plus what is needed to turn predictions back into labels.

    ``label_kind`` is the task's (mgpt.data.labels): it says what :meth:`references` returns.
    ``splits[name]`` holds Batch-contract arrays (input_ids, attention_mask, [token_type_ids],
    labels); only the splits whose files were given (or carved out of train) are present:
    "train", "validation", "test", and "predict" (whose examples may lack labels; theirs are
    -100, or 0.0 for regression). ``examples[name]`` are the raw examples in file order, after
    cleaning. For token classification ``word_index[name]`` (N, max_words) gives each word's first
    sub-word position (-1 = cut off) and ``num_words[name]`` (N,) the word counts; with sliding
    windows (``data.stride``) rows are windows and ``row_example`` / ``word_offset`` place them
    (see mgpt.data.windows). ``cleaning[name]`` counts the examples cleaning dropped, by reason.
    A packed train split also has ``segment_ids`` (causal LM: ``position_ids``; sequence-level tasks: per-segment
    labels and ``segment_weight``; see mgpt.data.packing).
    Chat data (mgpt.data.chat) gives ``prompt_ids[name]``: each example's rendered generation prompt.
    ``perturbed[name]`` maps a robustness-evaluation spec (``"char:0.05"``, ``train.eval_perturbations``) to the
    split holding the perturbed copy of split ``name`` (``"name@char:0.05"``, added by :func:`add_split`).
    """

    label_kind: str
    splits: dict[str, dict[str, np.ndarray]]
    label_names: tuple[str, ...]
    examples: dict[str, list[dict]]
    files: dict[str, str]
    word_index: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_words: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    row_example: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    word_offset: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    prompt_ids: dict[str, list[list[int]]] = dataclasses.field(default_factory=dict)
    cleaning: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    perturbed: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def references(self, split: str):
        """What ``task.report`` compares predictions with: label ids (N,), float targets (N,),
        multi-hot labels (N, C), per-example word tag lists (token classification), or None (causal LM)."""
        if self.label_kind == labels.LABEL_TAGS:
            return [list(e["tags"]) for e in self.examples[split]]
        if self.label_kind == labels.LABEL_MULTI:
            return np.asarray(self.splits[split]["labels"]).astype(np.int64)
        if self.label_kind in (labels.LABEL_STRING, labels.LABEL_FLOAT):
            return np.asarray(self.splits[split]["labels"])
        return None


def _labels_of(example: dict, label_kind: str) -> list[str]:
    """The labels an example carries (none for unlabelled examples of a predict file)."""
    if label_kind == labels.LABEL_TAGS:
        return list(example.get("tags", ()))
    if label_kind == labels.LABEL_MULTI:
        return list(example.get("label", ()))
    return [example["label"]] if "label" in example else []


def _hint_names(data_cfg, hint: tuple[str, ...]) -> tuple[str, ...]:
    """A TFDS ClassLabel's names, renamed by data.label_map (a name mapped to "" leaves)."""
    label_map = {str(k): str(v) for k, v in dict(data_cfg.label_map).items()}
    return tuple(dict.fromkeys(n for n in (label_map.get(h, h) for h in hint) if n))


def _label_names(data_cfg, label_kind: str, examples: dict[str, list[dict]], hint=()) -> tuple[str, ...]:
    """data.labels when given, else the names of a TFDS ClassLabel feature (``hint``), else the
    sorted labels seen in training ("O" first for tags)."""
    if label_kind in (labels.LABEL_FLOAT, labels.LABEL_NONE):
        return ()
    if data_cfg.labels or hint:
        names = tuple(str(label) for label in data_cfg.labels) or _hint_names(data_cfg, hint)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DataError(f"data.labels has duplicates: {duplicates}")
        if label_kind == labels.LABEL_TAGS:
            for name in names:
                try:
                    split_tag(name)
                except ValueError as e:
                    raise DataError(f"data.labels: {e} (tags are IOB2)") from None
        return names
    if "train" not in examples:
        raise DataError("data.labels must be given when there is no training data to read the labels from")
    seen = {label for e in examples["train"] for label in _labels_of(e, label_kind)}
    if label_kind != labels.LABEL_TAGS:
        return tuple(sorted(seen))
    if data_cfg.label_all_subwords:  # non-first sub-words of a B-X word are labelled I-X
        seen |= {"I-" + tag[2:] for tag in seen if tag.startswith("B-")}
    return ("O",) + tuple(sorted(seen - {"O"}))


def _check_labels(label_names, label_kind, examples, files, origin: str) -> None:
    known = set(label_names)
    for split, split_examples in examples.items():
        for example in split_examples:
            for label in _labels_of(example, label_kind):
                if label not in known:
                    raise DataError(
                        f"{files[split]}: label {label!r} ({split} split) is not in the label list "
                        f"{list(label_names)} (from {origin}); list every label in data.labels"
                    )


def _task_label_kind(task) -> str:
    if isinstance(task, str):
        raise DataError(f"build_datasets takes a task object (mgpt.tasks.get_task({task!r})), not the kind name")
    return labels.check_label_kind(getattr(task, "label_kind", None), f"task {getattr(task, 'name', task)!r}")


def build_datasets(data_cfg, task: EncodingTask, tokenizer) -> DatasetBundle:
    """Read, clean, split, check and encode the splits named in ``data_cfg`` for ``task``.

    ``task`` tells how its labels look (``task.label_kind``) and encodes each split (``task.encode``).
    """
    label_kind = _task_label_kind(task)
    if data_cfg.max_length <= 0:
        raise DataError(f"data.max_length must be positive, got {data_cfg.max_length}")
    if data_cfg.stride < 0:
        raise DataError(f"data.stride must be >= 0 (0: no sliding windows), got {data_cfg.stride}")
    if data_cfg.stride and label_kind != labels.LABEL_TAGS:
        raise DataError(f"data.stride (sliding windows) is for token_classification, not {task.name}")
    examples, files, hint = reading.read_splits(data_cfg, label_kind, task.name)
    counts = {}
    for split in list(examples):
        examples[split], counts[split] = cleaning.clean_examples(
            examples[split], data_cfg, where=f"{split} ({files[split]})", keep_all=split in UNLABELLED_OK
        )
    examples, files = splitting.sample_train(examples, files, data_cfg, label_kind)  # data.max_examples
    examples, files = splitting.split_examples(examples, files, data_cfg, label_kind)
    label_names = _label_names(data_cfg, label_kind, examples, hint)
    if label_kind == labels.LABEL_MULTI and not label_names:
        raise DataError(f"no labels in {files.get('train')}: every label set is empty; list them in data.labels")
    if label_names:
        origin = ("data.labels" if data_cfg.labels else "the TFDS label feature" if hint
                  else f"the labels of {files.get('train')}")
        _check_labels(label_names, label_kind, examples, files, origin)
    label_to_id = {name: i for i, name in enumerate(label_names)}

    bundle = DatasetBundle(label_kind=label_kind, splits={}, label_names=label_names, examples=examples,
                           files=files, cleaning=counts)
    for split, split_examples in examples.items():
        where = f"{split} ({files[split]})"
        _store(bundle, split, task.encode(split_examples, tokenizer, data_cfg, label_to_id, split=split, where=where))
        logger.debug("%s: %d examples", where, len(split_examples))  # the run's start-up summary counts them
    return bundle


def add_split(bundle: DatasetBundle, name: str, examples: list[dict], task: EncodingTask, tokenizer, data_cfg,
              source: str) -> None:
    """Encode ``examples`` (derived from split ``source``, e.g. a perturbed copy) as split ``name`` of ``bundle``,
    exactly as :func:`build_datasets` encodes a split read from a file (word indices and windows included)."""
    label_to_id = {label: i for i, label in enumerate(bundle.label_names)}
    where = f"{name} (from {bundle.files.get(source, source)})"
    _store(bundle, name, task.encode(examples, tokenizer, data_cfg, label_to_id, split=name, where=where))
    bundle.examples[name] = examples
    bundle.files[name] = bundle.files.get(source, source)


def _store(bundle: DatasetBundle, split: str, encoded: Encoded) -> None:
    bundle.splits[split] = encoded.arrays
    bundle.num_truncated[split] = encoded.num_truncated
    for name in _EXTRAS:
        if getattr(encoded, name) is not None:
            getattr(bundle, name)[split] = getattr(encoded, name)
