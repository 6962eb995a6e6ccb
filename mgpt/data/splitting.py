"""Train / validation / test from one source: seeded, stratified for single-label classification.

Only the train split is ever divided. A split that has its own file (or TFDS split) is never mixed
with another: with a test file and ``data.validation_ratio``, train alone is divided into train and
validation, and ``data.test_ratio`` is ignored with a warning.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from mgpt.data.errors import DataError
from mgpt.data.labels import LABEL_STRING

logger = logging.getLogger("mgpt")


def _part_size(ratio: float, n: int, name: str) -> int:
    if not 0.0 <= ratio < 1.0:
        raise DataError(f"data.{name} must be in [0, 1), got {ratio}")
    size = int(round(ratio * n))
    if ratio > 0 and size == 0:
        raise DataError(f"data.{name}={ratio} of {n} training examples is less than one example")
    return size


def _carve(indices: np.ndarray, size: int, seed: int, labels: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (rest, part of ``size``), stratified by ``labels`` when given and possible."""
    from sklearn.model_selection import train_test_split

    if labels is not None:
        try:
            rest, part = train_test_split(indices, test_size=size, random_state=seed, stratify=labels[indices])
            return rest, part
        except ValueError as e:  # e.g. a class with a single example, or fewer rows than classes
            logger.warning("stratified split impossible (%s); splitting without stratification", e)
    rest, part = train_test_split(indices, test_size=size, random_state=seed)
    return rest, part


def split_indices(n: int, validation_ratio: float, test_ratio: float, seed: int,
                  labels: Optional[Sequence] = None) -> dict[str, np.ndarray]:
    """Indices of ``n`` examples for "train", and "validation" / "test" when their ratio is > 0.

    Sizes are ``round(ratio * n)``; the parts are disjoint and cover all ``n``; each is in the
    original order. With ``labels`` every part keeps the label proportions (sklearn's
    ``train_test_split(stratify=...)``); the same ``seed`` gives the same parts.
    """
    n_test = _part_size(test_ratio, n, "test_ratio")
    n_validation = _part_size(validation_ratio, n, "validation_ratio")
    if n - n_test - n_validation < 1:
        raise DataError(f"data.validation_ratio={validation_ratio} and data.test_ratio={test_ratio} leave no "
                        f"training example of {n}")
    label_array = None if labels is None else np.asarray(labels, dtype=object).astype(str)
    rest = np.arange(n)
    parts = {}
    if n_test:
        rest, parts["test"] = _carve(rest, n_test, seed, label_array)
    if n_validation:
        rest, parts["validation"] = _carve(rest, n_validation, seed, label_array)
    parts["train"] = rest
    return {name: np.sort(index) for name, index in parts.items()}


def _stratify_labels(train: list[dict], data_cfg, label_kind: str) -> Optional[list]:
    """The labels to stratify ``train`` by (``data.stratify``, single-label classification), else None."""
    if data_cfg.stratify and label_kind == LABEL_STRING and all("label" in e for e in train):
        return [e["label"] for e in train]
    return None


def sample_train(examples: dict[str, list[dict]], sources: dict[str, str], data_cfg, label_kind: str
                 ) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Keep a seeded sample of ``data.max_examples`` training examples (in file order), stratified like
    :func:`split_examples`; every split is returned as it was when train has that many or fewer."""
    size, train = data_cfg.max_examples, examples.get("train")
    if not size or train is None or len(train) <= size:
        return examples, sources
    labels = _stratify_labels(train, data_cfg, label_kind)
    label_array = None if labels is None else np.asarray(labels, dtype=object).astype(str)
    _, kept = _carve(np.arange(len(train)), size, data_cfg.split_seed, label_array)
    examples, sources = dict(examples), dict(sources)
    examples["train"] = [train[i] for i in np.sort(kept)]
    sources["train"] = f"{sources['train']} (a sample of {size} of {len(train)}, split_seed={data_cfg.split_seed})"
    logger.info("data.max_examples: kept a sample of %d of the %d training examples", size, len(train))
    return examples, sources


def split_examples(examples: dict[str, list[dict]], sources: dict[str, str], data_cfg, label_kind: str
                   ) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Carve the missing validation / test splits out of train as the data config asks.

    Stratified (``data.stratify``) when every example has one class (``label_kind`` LABEL_STRING).
    Returns the new examples and sources (a carved split's source says where it came from).
    """
    wanted = {}
    for split, name in (("validation", "validation_ratio"), ("test", "test_ratio")):
        ratio = getattr(data_cfg, name)
        if ratio and split in examples:
            logger.warning("data.%s=%s ignored: the %s split has its own source (%s)", name, ratio, split,
                           sources.get(split))
        elif ratio:
            wanted[split] = ratio
    if not wanted:
        return examples, sources
    if "train" not in examples:
        raise DataError(f"data.validation_ratio / data.test_ratio split the training data, but there is none "
                        "(set data.train_file or data.tfds_splits['train'])")
    train = examples["train"]
    labels = _stratify_labels(train, data_cfg, label_kind)
    parts = split_indices(len(train), wanted.get("validation", 0.0), wanted.get("test", 0.0),
                          data_cfg.split_seed, labels)
    examples, sources = dict(examples), dict(sources)
    for split, index in parts.items():
        examples[split] = [train[i] for i in index]
        if split != "train":
            sources[split] = f"{sources['train']} ({wanted[split]:g} of it, split_seed={data_cfg.split_seed})"
    logger.info("split %s into %s", sources["train"],
                ", ".join(f"{split} {len(index)}" for split, index in parts.items()))
    return examples, sources
