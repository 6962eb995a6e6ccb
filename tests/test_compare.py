"""`mgpt compare`: config differences, best / last / final metrics, speed and the overlaid curves of runs."""

import json
import os

import pytest

from mgpt import cli
from mgpt.train import compare

from fixtures_tiny import tiny_gpt2, write_classification_experiment


def _run_dir(root, name, config, events):
    """A hand-written workdir: what `mgpt train` writes that `mgpt compare` reads."""
    directory = root / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(directory)


def _config(lr, batch, best_metric=""):
    return {"name": "exp", "task": {"kind": "sequence_classification"},
            "optimizer": {"name": "adamw", "learning_rate": lr, "kwargs": {}},
            "train": {"batch_size": batch, "eval_splits": ["validation"], "best_metric": best_metric,
                      "best_mode": "max"}}


def _events(losses, accuracies, test_accuracy, steps, seconds, wall):
    events = [{"kind": "train", "step": 10 * (i + 1), "loss": loss, "seconds_per_step": 0.5}
              for i, loss in enumerate(losses)]
    events += [{"kind": "eval", "step": 10 * (i + 1), "validation/accuracy": a, "validation/loss": 1 - a}
               for i, a in enumerate(accuracies)]
    events += [{"kind": "final", "step": 10 * len(losses), "validation/accuracy": max(accuracies),
                "test/accuracy": test_accuracy, "test/loss": 0.3},
               {"kind": "final", "step": 10 * len(losses), "train_step_compilations/8x16": 1, "train_steps": steps,
                "train_seconds": seconds, "wall_seconds": wall}]
    return events


@pytest.fixture
def two_runs(tmp_path):
    a = _run_dir(tmp_path, "lr_small", _config(1e-4, 32),
                 _events([0.7, 0.5, 0.4], [0.6, 0.8, 0.7], 0.75, 30, 12.0, 20.5))
    b = _run_dir(tmp_path, "lr_big", _config(1e-3, 32),
                 _events([0.7, 0.6, 0.65], [0.55, 0.6, 0.62], 0.61, 30, 15.0, 25))
    return a, b


def test_differences_best_last_final_and_speed_of_hand_written_runs(two_runs):
    comparison = compare.compare_runs([compare.load_run(path) for path in two_runs])
    assert comparison["config_differences"] == {"optimizer.learning_rate": [1e-4, 1e-3]}  # batch, name... agree
    small, big = comparison["runs"]
    assert small["metric"] == "validation/accuracy" and small["mode"] == "max"  # the task's default
    assert small["best"] == {"step": 20, "value": 0.8} and small["last"] == {"step": 30, "value": 0.7}
    assert big["best"] == {"step": 30, "value": 0.62}
    assert small["final"] == {"validation/accuracy": 0.8, "test/accuracy": 0.75, "test/loss": 0.3}
    assert small["steps_per_second"] == 30 / 12.0 and big["wall_seconds"] == 25
    assert small["curves"]["train/loss"] == [(10, 0.7), (20, 0.5), (30, 0.4)]


def test_markdown_table_and_json_output(two_runs, tmp_path, capsys):
    output = str(tmp_path / "table.md")
    assert cli.main(["compare", *two_runs, "--output", output]) == 0
    with open(output) as f:
        table = f.read()
    assert table.splitlines() == [
        "| run | optimizer.learning_rate | best validation/accuracy (step) | last validation/accuracy "
        "| final test/accuracy | final validation/accuracy | steps/s | wall s |",
        "|---|---|---|---|---|---|---|---|",
        "| lr_small | 0.0001 | 0.8 (20) | 0.7 | 0.75 | 0.8 | 2.5 | 20.5 |",
        "| lr_big | 0.001 | 0.62 (30) | 0.62 | 0.61 | 0.62 | 2 | 25.0 |",
    ]
    assert table in capsys.readouterr().out  # the same table is printed
    as_json = str(tmp_path / "table.json")
    assert cli.main(["compare", *two_runs, "--output", as_json, "--metric", "validation/loss"]) == 0
    with open(as_json) as f:
        data = json.load(f)
    assert [r["best"] for r in data["runs"]] == [{"step": 20, "value": pytest.approx(0.2)},
                                                 {"step": 30, "value": pytest.approx(0.38)}]  # loss: the minimum


def test_figure_overlays_one_line_per_run_in_each_panel(two_runs):
    comparison = compare.compare_runs([compare.load_run(path) for path in two_runs])
    figure = compare.curves_figure(comparison)
    loss_axis, metric_axis = figure.axes
    assert [line.get_label() for line in loss_axis.lines] == ["lr_small", "lr_big"]
    assert [list(line.get_ydata()) for line in loss_axis.lines] == [[0.7, 0.5, 0.4], [0.7, 0.6, 0.65]]
    assert [list(line.get_ydata()) for line in metric_axis.lines] == [[0.6, 0.8, 0.7], [0.55, 0.6, 0.62]]
    assert metric_axis.get_title() == "validation/accuracy"


def test_runs_with_the_same_directory_name_are_named_by_path(tmp_path):
    assert compare.run_names(["a/run", "b/run/", "c"]) == ["a/run", "b/run", "c"]


def test_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path, two_runs, capsys):
    assert cli.main(["compare", two_runs[0], str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err == f"mgpt: compare: {tmp_path / 'nothing'}: not a training run's workdir (no config.json); " \
                  "expected a directory that `mgpt train` wrote\n"


def test_two_tiny_real_runs(tmp_path):
    experiment = write_classification_experiment(str(tmp_path), tiny_gpt2(tmp_path / "model"))
    runs = [str(tmp_path / name) for name in ("slow", "fast")]
    for run, lr in zip(runs, ("1e-3", "1e-2")):
        assert cli.main(["train", experiment, "--workdir", run, "--set", f"optimizer.learning_rate={lr}",
                         "--set", "train.max_steps=4", "--set", "train.eval_every=2"]) == 0
    plot = str(tmp_path / "curves.png")
    assert cli.main(["compare", *runs, "--plot", plot, "--output", str(tmp_path / "c.json")]) == 0
    with open(tmp_path / "c.json") as f:
        comparison = json.load(f)
    assert comparison["config_differences"] == {"optimizer.learning_rate": [1e-3, 1e-2]}
    for run, summary in zip(runs, comparison["runs"]):
        with open(os.path.join(run, "eval_test.json")) as f:
            report = json.load(f)
        assert summary["final"]["test/accuracy"] == pytest.approx(report["accuracy"])
        assert summary["steps_per_second"] > 0 and summary["wall_seconds"] > 0
        assert len(summary["curves"]["train/loss"]) == 4  # 4 steps, logged every step
        assert [step for step, _ in summary["curves"]["validation/accuracy"]] == [2, 4]
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
