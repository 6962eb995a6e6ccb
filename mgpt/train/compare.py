"""``mgpt compare``: training runs side by side, from what each workdir holds.

A run directory has ``config.json`` (the resolved config) and ``metrics.jsonl`` (``train`` events with the loss
and ``seconds_per_step``, ``eval`` events with ``<split>/<metric>`` scalars, ``final`` events with the final
reports' scalars and the run's totals: ``train_steps``, ``train_seconds``, ``wall_seconds``). From them:
the config keys whose values differ between the runs, each run's best and last value of one validation metric,
its final metrics, steps per second and wall time, as a table (markdown or JSON) and a figure of the curves.
Everything but :func:`load_run` and :func:`write_outputs` is a pure function of the parsed runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Any

from mgpt.train import reporting

SPLITS = ("train", "validation", "test", "predict")
MISSING = "-"  # a cell with no value (a key the run's config lacks, a metric it never logged)


class NotARunError(ValueError):
    """A directory given to ``mgpt compare`` is not a training run's workdir (or its files are damaged)."""


@dataclasses.dataclass
class RunRecord:
    """What a run directory holds: its name, flattened config and metric events."""

    name: str
    config: dict[str, Any]
    events: list[dict]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and other values are kept as they are."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_run(workdir: str, name: str = "") -> RunRecord:
    """Read ``workdir``'s ``config.json`` and ``metrics.jsonl``; a missing or damaged one fails naming it."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise NotARunError(f"{workdir}: not a training run's workdir (no config.json); expected a directory that "
                           "`mgpt train` wrote")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as error:
        raise NotARunError(f"{path}: not valid JSON ({error}); expected the config `mgpt train` wrote") from None
    try:
        events = reporting.read_metrics(workdir)
    except reporting.MetricsLogError as error:
        raise NotARunError(str(error)) from None
    return RunRecord(name or os.path.basename(os.path.normpath(workdir)), flatten(config), events)


def run_names(workdirs: list[str]) -> list[str]:
    """Each run's directory name, or its path as given where two runs share a name."""
    names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    return [name if names.count(name) == 1 else os.path.normpath(w) for name, w in zip(names, workdirs)]


def config_differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The flattened config keys whose values are not the same in every run, with each run's value
    (:data:`MISSING` where a run's config lacks the key), sorted by key."""
    keys = sorted({key for config in configs for key in config})
    rows = {key: [config.get(key, MISSING) for config in configs] for key in keys}
    return {key: values for key, values in rows.items()
            if any(json.dumps(v, sort_keys=True) != json.dumps(values[0], sort_keys=True) for v in values)}


def selection_metric(config: dict[str, Any]) -> tuple[str, str]:
    """The ``split/metric`` a run picked its best checkpoint by, and ``"max"`` or ``"min"``."""
    if config.get("train.best_metric"):
        return config["train.best_metric"], config.get("train.best_mode", "max")
    from mgpt.tasks import get_task  # the task's default metric (imports jax, so only when needed)

    task = get_task(config.get("task.kind", "sequence_classification"))
    splits = config.get("train.eval_splits") or ["validation"]
    return f"{splits[0]}/{task.default_metric}", task.default_mode


def metric_curve(events: list[dict], kind: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in the events of ``kind`` ("train", "eval"), in order."""
    return [(e["step"], e[key]) for e in events if e.get("kind") == kind and isinstance(e.get(key), (int, float))]


def _is_split_metric(key: str) -> bool:
    split = key.split("/", 1)[0].split("@", 1)[0]
    return "/" in key and split in SPLITS


def final_metrics(events: list[dict]) -> dict[str, float]:
    """The final reports' ``<split>/<metric>`` scalars (of the last ``final`` events that hold them)."""
    found = {}
    for event in events:
        if event.get("kind") == "final":
            found.update({k: v for k, v in event.items() if _is_split_metric(k) and isinstance(v, (int, float))})
    return found


def _totals(events: list[dict]) -> dict[str, float]:
    totals = {}
    for event in events:
        if event.get("kind") == "final" and "train_seconds" in event:
            totals = event
    return totals


def steps_per_second(events: list[dict]) -> float | None:
    """Training steps per second of the run's last invocation: its ``train_steps`` over ``train_seconds`` (compiling
    included, evaluation and checkpoints not), else the inverse of the median logged ``seconds_per_step``."""
    totals = _totals(events)
    if totals.get("train_seconds") and totals.get("train_steps"):
        return totals["train_steps"] / totals["train_seconds"]
    seconds = [s for _, s in metric_curve(events, "train", "seconds_per_step") if s > 0]
    return 1.0 / statistics.median(seconds) if seconds else None


def summarize(record: RunRecord, metric: str = "", mode: str = "") -> dict[str, Any]:
    """One run's row: the best and last value of ``metric`` (default: its own selection metric), its final
    metrics, steps per second, wall seconds, and the curves the figure draws."""
    if not metric:
        metric, mode = selection_metric(record.config)
    mode = mode or ("min" if metric.endswith(("loss", "perplexity", "mse", "mae")) else "max")
    curve = metric_curve(record.events, "eval", metric)
    best = (min if mode == "min" else max)(curve, key=lambda point: point[1]) if curve else None
    return {
        "run": record.name,
        "metric": metric,
        "mode": mode,
        "best": None if best is None else {"step": best[0], "value": best[1]},
        "last": None if not curve else {"step": curve[-1][0], "value": curve[-1][1]},
        "final": final_metrics(record.events),
        "steps_per_second": steps_per_second(record.events),
        "wall_seconds": _totals(record.events).get("wall_seconds"),
        "curves": {"train/loss": metric_curve(record.events, "train", "loss"), metric: curve},
    }


def compare_runs(records: list[RunRecord], metric: str = "") -> dict[str, Any]:
    """The comparison of ``records``: the config differences and one summary per run, every run scored on the same
    metric (``metric``, else the first run's selection metric)."""
    mode = ""
    if not metric and records:
        metric, mode = selection_metric(records[0].config)
    return {"runs": [summarize(r, metric, mode) for r in records],
            "config_differences": config_differences([r.config for r in records])}


def _cell(value: Any) -> str:
    if value is None or value == MISSING:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)  # markdown_table escapes "|"


def table_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table: run, the differing config keys, best and last of the metric,
    the final metrics of that metric's name on each split, steps per second and wall seconds."""
    runs, differences = comparison["runs"], comparison["config_differences"]
    metric = runs[0]["metric"] if runs else ""
    name = metric.split("/", 1)[-1]
    finals = sorted({k for r in runs for k in r["final"] if k.split("/", 1)[-1] == name})
    header = ["run", *differences, f"best {metric} (step)", f"last {metric}", *(f"final {k}" for k in finals),
              "steps/s", "wall s"]
    rows = []
    for i, run in enumerate(runs):
        best = MISSING if run["best"] is None else f"{run['best']['value']:.4g} ({run['best']['step']})"
        last = MISSING if run["last"] is None else _cell(run["last"]["value"])
        rows.append([run["run"], *(_cell(values[i]) for values in differences.values()), best, last,
                     *(_cell(run["final"].get(k)) for k in finals), _cell(run["steps_per_second"]),
                     MISSING if run["wall_seconds"] is None else f"{run['wall_seconds']:.1f}"])
    return header, rows


def markdown_table(comparison: dict[str, Any]) -> str:
    """The comparison table as GitHub markdown."""
    header, rows = table_rows(comparison)
    return reporting.markdown_table(header, rows) + "\n"


def curves_figure(comparison: dict[str, Any]):
    """A matplotlib figure: each run's training loss (left) and validation metric (right), overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = comparison["runs"]
    metric = runs[0]["metric"] if runs else ""
    fig, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        for axis, key, style in ((loss_axis, "train/loss", "-"), (metric_axis, metric, "o-")):
            points = run["curves"].get(key) or []
            if points:
                axis.plot(*zip(*points), style, label=run["run"])
    for axis, title in ((loss_axis, "training loss"), (metric_axis, metric)):
        axis.set_xlabel("step")
        axis.set_title(title)
        if axis.lines:
            axis.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_outputs(comparison: dict[str, Any], output: str = "", plot: str = "") -> None:
    """Write the table to ``output`` (JSON when it ends in ``.json``, else markdown) and the figure to ``plot``."""
    if output:
        with open(output, "w", encoding="utf-8") as f:
            if output.endswith(".json"):
                json.dump(comparison, f, indent=2)
            else:
                f.write(markdown_table(comparison))
    if plot:
        import matplotlib.pyplot as plt

        fig = curves_figure(comparison)
        fig.savefig(plot, dpi=100)
        plt.close(fig)
