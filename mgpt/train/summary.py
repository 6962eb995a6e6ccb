"""The few lines a training run prints at start-up: what it trains, on what, where, and for how long."""

from __future__ import annotations

from mgpt import optim

MAX_LABELS_SHOWN = 8  # a 77-intent label list would fill the screen; the count is always given


def _labels_line(names) -> str:
    if not names:
        return "labels: none (the task has no label list)"
    shown = ", ".join(names[:MAX_LABELS_SHOWN]) + (", ..." if len(names) > MAX_LABELS_SHOWN else "")
    return f"labels ({len(names)}): {shown}"


def _devices_line(mesh, mode: str, rules: str) -> str:
    devices = list(mesh.devices.flat)
    kinds = sorted({d.platform for d in devices})
    axes = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    layout = "pmap" if mode == "pmap" else f"rules {rules}"
    return f"devices: {len(devices)} {'/'.join(kinds)}; mesh {axes} ({layout})"


def startup_summary(run, steps_per_epoch: int, total_steps: int) -> list[str]:
    """Lines naming the model and task, the labels, the examples per split, the parameters (total and trained),
    the devices and mesh, and the steps per epoch and in all; ``run`` is a :class:`mgpt.train.setup.Run`."""
    config = run.config
    peft = f", PEFT {config.peft.method}" if config.peft.method != "none" else ""
    sizes = ", ".join(f"{split} {len(examples)}" for split, examples in run.data.examples.items() if "@" not in split)
    tc = config.train
    length = "train.max_steps" if tc.max_steps else f"{tc.num_epochs:g} epochs"
    return [
        f"model: {config.model.name_or_path} ({run.spec.family}, {config.model.dtype}); task {config.task.kind}{peft}",
        _labels_line(list(run.data.label_names)),
        f"examples: {sizes}",
        # this line's wording is read by tests and scripts: keep it
        f"parameters: {optim.count_parameters(run.params)} total, "
        f"{optim.count_parameters(run.params, run.trainable)} trainable",
        _devices_line(run.mesh, config.parallel.mode, config.parallel.rules),
        f"steps: {steps_per_epoch} per epoch of batch {tc.batch_size}, {total_steps} in all ({length})",
    ]
