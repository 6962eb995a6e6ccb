"""Errors of a training run that the CLI reports in one line (no traceback unless ``--debug``)."""

from __future__ import annotations

from mgpt.models.safetensors_io import CheckpointError


class ResumeError(CheckpointError):
    """The workdir's checkpoint was written by a run that differs from this one (model, data, labels, ...)."""


class NonFiniteError(FloatingPointError):
    """Training produced ``train.max_nonfinite_steps`` consecutive steps with a non-finite loss or gradients."""





class Interrupted(RuntimeError):
    """SIGTERM or SIGINT stopped training after the current step was saved; running again resumes there."""

    def __init__(self, signal_name: str, step: int, saved: bool):
        self.signal_name, self.step, self.saved = signal_name, step, saved
        what = "saved step" if saved else "stopped at step (checkpoints off: nothing saved at)"
        super().__init__(f"{signal_name}: {what} {step}; run the same command again to resume")
__all__ = ["CheckpointError", "Interrupted", "NonFiniteError", "ResumeError"]
