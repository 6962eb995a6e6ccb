"""Where run metrics go: ``metrics.jsonl``, TensorBoard events, and a PNG of the curves."""

from __future__ import annotations

import json
import math
import os
from typing import Any

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"


def _scalar(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class MetricsWriter:
    """Appends one JSON object per event to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, resume_step: int | None = None, enabled: bool = True):
        # In a multi-host run only process 0 writes; the others get a writer that drops events.
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        if not enabled:
            return
        if resume_step is not None:
            self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter  # imported here: heavy, and only the loop writes events

        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        # Events logged after the checkpoint we resume from will be logged again; drop the stale ones.
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            events = [json.loads(line) for line in f if line.strip()]
        with open(self.path, "w") as f:
            for event in events:
                if event.get("step", 0) <= step:
                    f.write(json.dumps(event) + "\n")

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
                self.tb.add_scalar(f"{kind}/{key}", value, step)
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(workdir: str) -> str:
    """Training loss and every evaluation scalar against step, saved as a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = read_metrics(workdir)
    train = [(e["step"], e["loss"]) for e in events if e["kind"] == "train" and "loss" in e]
    evals = [e for e in events if e["kind"] == "eval"]
    eval_keys = sorted({k for e in evals for k, v in e.items() if k not in ("kind", "step") and isinstance(v, float)})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        axes[0].plot(*zip(*train), label="train loss")
    for key in [k for k in eval_keys if k.endswith("loss")]:
        axes[0].plot([e["step"] for e in evals if key in e], [e[key] for e in evals if key in e], "o-", label=key)
    axes[0].set_xlabel("step")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in [k for k in eval_keys if not k.endswith("loss")]:
        axes[1].plot([e["step"] for e in evals if key in e], [e[key] for e in evals if key in e], "o-", label=key)
    axes[1].set_xlabel("step")
    axes[1].set_title("evaluation")
    if any(not k.endswith("loss") for k in eval_keys):
        axes[1].legend()
    fig.tight_layout()
    path = os.path.join(workdir, CURVES_FILE)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
