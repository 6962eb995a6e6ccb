"""Augmentation wired into the data: training batches augmented on the fly, and the perturbed copies of
evaluation splits.

The operations themselves are :mod:`mgpt.data.augment`; here they meet the task's encoder. An
:class:`Augmenter` re-encodes the training examples of one batch for one step
(:class:`mgpt.data.batching.AugmentedBatches` calls it), and :func:`add_perturbed_splits` adds one encoded,
perturbed copy of each evaluated split per ``train.eval_perturbations`` entry.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterable, Sequence

import numpy as np

from mgpt.data import dataset
from mgpt.data.augment import (PERTURBATION_SEED, Op, Pools, augment_example, augmented_at, build_pools,
                               example_rng, perturb_split, text_columns, text_ops)
from mgpt.data.errors import DataError

logger = logging.getLogger("mgpt")


@contextlib.contextmanager
def _quiet(name: str = "mgpt"):
    """Silence ``name``'s warnings (e.g. truncation, already reported for the split) while re-encoding."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class Augmenter:
    """``(indices, step) -> arrays``: training examples ``indices`` augmented for ``step`` and re-encoded by
    ``encode`` (a list of examples -> mgpt.data.encode.Encoded), for :class:`mgpt.data.batching.AugmentedBatches`."""

    def __init__(self, examples: Sequence[dict], ops: Sequence[Op], pools: Pools, seed: int,
                 encode: Callable[[list[dict]], object], columns: Sequence[str] = ("text", "text_pair"),
                 probability: float = 1.0):
        self.examples, self.ops, self.pools, self.seed = examples, tuple(ops), pools, int(seed)
        self.encode, self.columns, self.probability = encode, tuple(columns), float(probability)

    def examples_at(self, indices: np.ndarray, step: int) -> list[dict]:
        """The examples ``indices`` of ``step``: augmented, or as they are (``probability`` < 1)."""
        return [augment_example(self.examples[int(i)], self.ops, example_rng(self.seed, step, int(i)), self.pools,
                                self.columns)
                if augmented_at(self.seed, step, int(i), self.probability) else self.examples[int(i)]
                for i in indices]

    def __call__(self, indices: np.ndarray, step: int) -> dict[str, np.ndarray]:
        with _quiet():
            encoded = self.encode(self.examples_at(indices, step))
        return encoded.arrays


def train_augmenter(data_cfg, seed: int, task, tokenizer, bundle) -> Augmenter | None:
    """The augmenter of ``bundle``'s training split for ``data_cfg.augment`` (None when it has no text or token
    op): each example is re-encoded with ``task.encode`` as the split was, with the bundle's labels."""
    ops = text_ops(data_cfg.augment, bundle.label_kind, data_cfg.synonyms_file)
    if not ops or "train" not in bundle.splits:
        return None
    examples = bundle.examples["train"]
    rows = len(next(iter(bundle.splits["train"].values())))
    if rows != len(examples):
        raise DataError(f"data.augment re-encodes one row per training example, but the train split has {rows} "
                        f"rows for {len(examples)} examples (packing or sliding windows); expected data.pack=false "
                        "and data.stride=0")
    pools = build_pools(examples, data_cfg.synonyms_file, data_cfg.encoding)
    label_to_id = {label: i for i, label in enumerate(bundle.label_names)}

    def encode(batch: list[dict]):
        return task.encode(batch, tokenizer, data_cfg, label_to_id, split="train", where="train (augmented)")

    share = "" if data_cfg.augment_probability >= 1.0 else f" (each with probability {data_cfg.augment_probability})"
    logger.info("training examples augmented on the fly: %s%s", ", ".join(op.spec for op in ops), share)
    return Augmenter(examples, ops, pools, seed, encode, text_columns(bundle.label_kind), data_cfg.augment_probability)


def add_perturbed_splits(bundle, specs: Sequence[str], splits: Iterable[str], task, tokenizer, data_cfg,
                         seed: int = PERTURBATION_SEED) -> dict[str, dict[str, str]]:
    """Add one perturbed copy of each of ``splits`` (those ``bundle`` has) per spec of ``specs``
    (``train.eval_perturbations``) to ``bundle``, as split ``<split>@<op>:<rate>`` encoded like the split
    itself; ``bundle.perturbed[split][spec]`` names it. Returns ``bundle.perturbed``."""
    ops = text_ops(specs, bundle.label_kind, data_cfg.synonyms_file, key="train.eval_perturbations")
    if not ops:
        return bundle.perturbed
    pools = build_pools(bundle.examples.get("train", ()), data_cfg.synonyms_file, data_cfg.encoding)
    columns = text_columns(bundle.label_kind)
    for split in dict.fromkeys(splits):
        if split not in bundle.splits or "@" in split:
            continue
        for op in ops:
            name = f"{split}@{op.spec}"
            examples = perturb_split(bundle.examples[split], (op,), seed, pools, columns)
            changed = sum(a != b for a, b in zip(examples, bundle.examples[split]))
            dataset.add_split(bundle, name, examples, task, tokenizer, data_cfg, source=split)
            bundle.perturbed.setdefault(split, {})[op.spec] = name
            logger.info("%s: %d of %d examples changed", name, changed, len(examples))
    return bundle.perturbed
