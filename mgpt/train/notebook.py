"""What the Colab notebooks (``colab/*.ipynb``) share: the runtime and its mesh, reports as markdown tables,
entities marked in text, a run's curves, and small slices of CoNLL files.

Everything but :func:`detect_runtime` and :func:`conll_head` is a pure function of its arguments, so the
notebooks stay short and what they show is tested here as well as by running them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax

from mgpt import parallel
from mgpt.config import ParallelConfig
from mgpt.train import reporting


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The accelerator a notebook found, the mesh over it and the settings that follow from it."""

    platform: str  # "tpu", "gpu" or "cpu" (jax.default_backend())
    device_kind: str
    parallel: ParallelConfig  # goes into the experiment config: dataclasses.replace(config, parallel=...)
    mesh: Any
    compute_dtype: str  # bfloat16 on TPU and GPU (their matmul units), float32 on CPU

    @property
    def data_parallel(self) -> int:
        """Devices each batch is split over: batch sizes must be a multiple of it."""
        return parallel.data_parallel_size(self.mesh)

    def summary(self) -> str:
        axes = ", ".join(f"{name}={size}" for name, size in self.mesh.shape.items())
        return (f"{self.platform}: {jax.device_count()} x {self.device_kind} over {jax.process_count()} process(es); "
                f"mesh ({axes}); compute dtype {self.compute_dtype}")


def detect_runtime(mesh: Sequence[tuple[str, int]] = (("data", -1),), rules: str = "dp") -> Runtime:
    """The runtime of this process: platform, a mesh ``mesh`` over every visible device (data parallel
    by default), and the compute dtype that suits the platform."""
    platform = jax.default_backend()
    cfg = ParallelConfig(mesh=tuple((str(name), int(size)) for name, size in mesh), rules=rules)
    built = parallel.make_mesh(cfg)
    dtype = "float32" if platform == "cpu" else "bfloat16"
    return Runtime(platform, str(jax.devices()[0].device_kind), cfg, built, dtype)


markdown_table = reporting.markdown_table  # the notebooks' tables: one writer with mgpt compare's


def entity_table(report: dict) -> str:
    """The seqeval report of a token-classification evaluation (``eval_<split>.json``) as a markdown table:
    one row per entity type, then the micro and macro averages."""
    header = ("entity type", "precision", "recall", "f1", "support")
    keys = ("precision", "recall", "f1", "support")
    rows = [(name, *(scores[k] for k in keys)) for name, scores in sorted(report["per_type"].items())]
    support = sum(int(scores["support"]) for scores in report["per_type"].values())
    rows.append(("micro avg", report["precision"], report["recall"], report["f1"], support))
    if "macro" in report:
        rows.append(("macro avg", *(report["macro"][k] for k in keys[:3]), support))
    return markdown_table(header, rows)


def mark_entities(words: Sequence[str], tags: Sequence[str]) -> str:
    """The sentence with each IOB2 entity bracketed and typed: ``[Paris]LOC is nice``."""
    from seqeval.metrics.sequence_labeling import get_entities

    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    starts = {start: (kind, end) for kind, start, end in get_entities(list(tags))}
    out, i = [], 0
    while i < len(words):
        if i in starts:
            kind, end = starts[i]
            out.append(f"[{' '.join(words[i:end + 1])}]{kind}")
            i = end + 1
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def curve(workdir: str, kind: str, key: str) -> tuple[list[int], list[float]]:
    """Steps and values of one logged metric of a run (``kind`` "train" or "eval"), from ``metrics.jsonl``."""
    events = [e for e in reporting.read_metrics(workdir) if e.get("kind") == kind and key in e]
    return [int(e["step"]) for e in events], [float(e[key]) for e in events]


def conll_labels(paths: Sequence[str], token_column: int = 0, tag_column: int = -1) -> list[str]:
    """Every IOB2 tag the entity types of these CoNLL files can take: ``O``, then ``B-`` and ``I-`` per type.

    For ``data.labels`` when a few sentences of the training file do not show every tag of the others.
    """
    from mgpt.data.conll import read_conll_records
    from mgpt.data.tags import split_tag

    kinds = set()
    for path in paths:
        for _, record in read_conll_records(path, token_column, tag_column).rows:
            kinds |= {split_tag(tag)[1] for tag in record.get("tags", ()) if tag != "O"}
    return ["O"] + [f"{prefix}-{kind}" for kind in sorted(kinds) for prefix in "BI"]


def conll_head(path: str, count: int, out_dir: str) -> str:
    """A copy of the first ``count`` sentences of a CoNLL file in ``out_dir`` (``count`` 0: the whole file).

    For trying a notebook on a slice of a large data set; the copy keeps the file's name.
    """
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, os.path.basename(path))
    kept, in_sentence = 0, False
    with open(path, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for line in source:
            blank = not line.strip() or line.startswith("-DOCSTART-")
            if blank and in_sentence:
                kept += 1
            in_sentence = not blank
            if count and kept >= count:
                break
            target.write(line)
        if in_sentence:
            target.write("\n")
    return out
