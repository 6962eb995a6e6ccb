"""Where run metrics go: ``metrics.jsonl``, TensorBoard events, and a PNG of the curves.

``metrics.jsonl`` survives crashes: a last line torn by a crash mid-write is dropped with a warning
when the file is read (a damaged line before it is an error naming the line), a resumed run rewrites the
file atomically, and a fresh run moves an old run's file aside instead of appending to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from typing import Any

from mgpt.train.errors import CheckpointError

log = logging.getLogger("mgpt")

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"
_TAG_REFUSED = re.compile(r"[^-/\w.]")  # TensorBoard tags hold word characters, '-', '/' and '.'


class MetricsLogError(CheckpointError):
    """``metrics.jsonl`` is damaged before its last line, so a run cannot resume its log (names file:line)."""


def _scalar(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class MetricsWriter:
    """Appends one JSON object per event to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    What happens to an existing ``metrics.jsonl`` depends on how the run starts:

    - ``fresh=True`` (a run from step 0): the old run's file is moved aside to ``metrics.jsonl.<n>``.
    - ``resume_step=N`` (a run resumed from the checkpoint of step N): events after step N, which the
      resumed run logs again, are dropped by an atomic rewrite.
    - neither (e.g. the final report of the run that is writing): events are appended.
    """

    def __init__(self, workdir: str, resume_step: int | None = None, enabled: bool = True, fresh: bool = False):
        if fresh and resume_step:
            raise ValueError(f"a fresh metrics log cannot resume from step {resume_step}")
        # In a multi-host run only process 0 writes; the others get a writer that drops events.
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        if not enabled:
            return
        if fresh:
            _move_aside(self.path)
        elif resume_step is not None:
            self._truncate_after(resume_step)
        else:
            self._drop_torn_line()
        from tensorboardX import SummaryWriter  # imported here: heavy, and only the loop writes events

        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        # Events logged after the checkpoint we resume from will be logged again; drop the stale ones.
        if os.path.exists(self.path):
            _rewrite(self.path, [event for event in _read_events(self.path) if event.get("step", 0) <= step])

    def _drop_torn_line(self) -> None:
        # Appending after a torn line would glue the next event onto it: a damaged line mid-file.
        if os.path.exists(self.path) and not _ends_cleanly(self.path):
            _rewrite(self.path, _read_events(self.path))

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Log ``values`` of an event ``kind`` ("train", "eval", "final") at ``step``; non-finite values fail."""
        clean = {key: _scalar(value) for key, value in values.items()}
        for key, value in clean.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise FloatingPointError(f"{kind} metric {key!r} is {value} at step {step}")
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **clean}) + "\n")
        for key, value in clean.items():
            if isinstance(value, float):
                self.tb.add_scalar(tensorboard_tag(kind, key), value, step)
        self.tb.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.enabled:
            self.tb.close()


def tensorboard_tag(kind: str, key: str) -> str:
    """The TensorBoard tag of metric ``key``: ``<kind>/<key>`` with what TensorBoard refuses in a tag (the ``@``
    and ``:`` of a perturbed split, ``validation@char:0.05/accuracy``) written as ``_``."""
    return _TAG_REFUSED.sub("_", f"{kind}/{key}")


def read_metrics(workdir: str) -> list[dict]:
    """The events of ``workdir``'s ``metrics.jsonl`` in order (none when it does not exist).

    A torn last line (a crash mid-write) is dropped with a warning; a damaged line before it raises
    :class:`MetricsLogError`.
    """
    path = os.path.join(workdir, METRICS_FILE)
    return _read_events(path) if os.path.exists(path) else []


def _read_events(path: str) -> list[dict]:
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")  # the piece after the last newline is b"" for a file that ends cleanly
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as error:
            if number == len(lines):  # no newline after it: the write was cut short
                log.warning("%s:%d: dropping a torn last line (%d bytes, no newline: a crash while it was "
                            "written)", path, number, len(line))
                break
            raise MetricsLogError(f"{path}:{number}: expected one JSON object per line, found a damaged line "
                                  f"({error}); fix or remove that line to resume") from None
        events.append(event)
    return events


def _ends_cleanly(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _rewrite(path: str, events: list[dict]) -> None:
    """Replace ``path`` with ``events``: the file is the old one or the whole new one, even after a crash."""
    directory = os.path.dirname(path) or "."
    # Same directory as the target: os.replace is atomic only within one filesystem.
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(json.dumps(event) + "\n" for event in events))
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; some filesystems cannot open a directory for this, which is fine.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move_aside(path: str) -> None:
    """Rename an existing ``path`` to ``path.<n>``, the first free n from 1, so a new run starts a new file."""
    if not os.path.exists(path):
        return
    number = 1
    while os.path.exists(f"{path}.{number}"):
        number += 1
    os.replace(path, f"{path}.{number}")
    log.info("a fresh run: moved the previous run's %s to %s", path, f"{path}.{number}")


def plot_curves(workdir: str) -> str:
    """Training loss and every evaluation scalar against step, saved as a PNG; returns its path.

    Losses (train and evaluated) share the first panel and the other evaluation metrics the second, clean and
    perturbed (``train.eval_perturbations``) alike; a third panel shows the drops (``..._drop``) when there are any.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = read_metrics(workdir)
    train = [(e["step"], e["loss"]) for e in events if e["kind"] == "train" and "loss" in e]
    evals = [e for e in events if e["kind"] == "eval"]
    eval_keys = sorted({k for e in evals for k, v in e.items() if k not in ("kind", "step") and isinstance(v, float)})
    drops = [k for k in eval_keys if k.endswith("_drop")]
    losses = [k for k in eval_keys if k.endswith("loss")]
    others = [k for k in eval_keys if k not in drops and k not in losses]
    fig, axes = plt.subplots(1, 3 if drops else 2, figsize=(16 if drops else 11, 4))
    if train:
        axes[0].plot(*zip(*train), label="train loss")
    panels = ((axes[0], losses, "loss"), (axes[1], others, "evaluation"))
    if drops:
        panels += ((axes[2], drops, "drop under perturbation (clean - perturbed)"),)
    for axis, keys, title in panels:
        for key in keys:
            axis.plot([e["step"] for e in evals if key in e], [e[key] for e in evals if key in e], "o-", label=key)
        axis.set_xlabel("step")
        axis.set_title(title)
        if keys or (axis is axes[0] and train):
            axis.legend(fontsize="small" if len(keys) > 6 else None)
    fig.tight_layout()
    path = os.path.join(workdir, CURVES_FILE)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(header, rows, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table (no final newline); floats rounded to ``digits`` places, ``|`` escaped."""

    def cell(value) -> str:
        text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)
