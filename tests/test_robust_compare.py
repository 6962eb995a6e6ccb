"""experiments/benchmarks/robust_compare.py: every method of every setting is a valid run of its experiment, the
few-shot file holds exactly k rows per label, and the table's means, deviations and cost ratios are right."""

import csv
import dataclasses
import importlib.util
import json
import os
import statistics

import pytest

from mgpt import config as config_lib
from mgpt.train.validate import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_benchmark():
    path = os.path.join(ROOT, "experiments", "benchmarks", "robust_compare.py")
    spec = importlib.util.spec_from_file_location("robust_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()
TAGGING_ONLY = {"tag_augment"}  # Dai & Adel's operations exist for token classification only
TEXT_ONLY = {"eda", "eda_half"}  # word moves would break the tags, so the tagging setting leaves them out


@pytest.mark.parametrize("setting", sorted(bench.SETTINGS))
def test_every_method_validates_in_every_setting(setting):
    """What the child process would train, checked by the config rules before any I/O (no model is loaded)."""
    chosen = bench.SETTINGS[setting]
    base = config_lib.load_experiment(os.path.join(ROOT, "experiments", chosen.experiment))
    tagging = base.task.kind == "token_classification"
    for method, overrides in bench.METHODS.items():
        if method in (TEXT_ONLY if tagging else TAGGING_ONLY):
            continue
        config = config_lib.apply_overrides(base, [
            "train.seed=1", "checkpoint.enabled=false",
            "train.eval_perturbations=[" + ",".join(chosen.perturbations) + "]", *chosen.overrides, *overrides])
        validate(config)  # raises ConfigError naming the key when a method's overrides do not fit


def test_fewshot_file_has_k_rows_of_every_label_and_is_the_same_every_time(tmp_path):
    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        for label in ("a", "b", "c"):
            for i in range(12):
                writer.writerow([f"{label} query {i}", label])
    first = bench.fewshot_csv(str(train), str(tmp_path), per_label=4, seed=0)
    with open(first, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["category"] for r in rows) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert len({r["text"] for r in rows}) == 12  # drawn without replacement
    os.makedirs(tmp_path / "again")
    with open(bench.fewshot_csv(str(train), str(tmp_path / "again"), per_label=4, seed=0), newline="") as f:
        assert list(csv.DictReader(f)) == rows


def test_table_reports_mean_and_sample_deviation_and_cost_against_plain():
    rows = [
        {"method": "plain", "seed": 0, "setting": "fewshot", "seconds_per_step": 1.0, "test/accuracy": 0.50,
         "test@char:0.05/accuracy": 0.40},
        {"method": "plain", "seed": 1, "setting": "fewshot", "seconds_per_step": 1.2, "test/accuracy": 0.54,
         "test@char:0.05/accuracy": 0.44},
        {"method": "fgm", "seed": 0, "setting": "fewshot", "seconds_per_step": 2.2, "test/accuracy": 0.49,
         "test@char:0.05/accuracy": 0.43},
    ]
    lines = bench._table(rows).splitlines()
    assert lines[0].startswith("| method | seeds | clean acc | acc @char:0.05 | acc @char:0.1 | acc @delete:0.1 |")
    sd = statistics.stdev([0.50, 0.54])
    assert lines[2] == f"| plain | 2 | 0.520 ± {sd:.3f} | 0.420 ± {sd:.3f} | - | - | 1.100 | 1.00x |"
    assert lines[3] == "| fgm | 1 | 0.490 ± 0.000 | 0.430 ± 0.000 | - | - | 2.200 | 2.00x |"


def _rows_file(path, rows):
    with open(path, "w") as f:
        json.dump(rows, f)
    return str(path)


def test_combine_merges_parts_in_order_and_refuses_a_repeated_run_or_a_second_setting(tmp_path):
    plain = {"method": "plain", "seed": 0, "setting": "full", "seconds_per_step": 1.0, "test/accuracy": 0.9}
    part1 = _rows_file(tmp_path / "a.json", [plain])
    part2 = _rows_file(tmp_path / "b.json", [dict(plain, seed=1, **{"test/accuracy": 0.8}),
                                             dict(plain, method="rdrop", seconds_per_step=2.0)])
    rows = bench.combine([part1, part2])
    assert [(r["method"], r["seed"]) for r in rows] == [("plain", 0), ("plain", 1), ("rdrop", 0)]
    output = tmp_path / "all.json"
    table = bench._write(rows, str(output))
    assert table.splitlines()[3].startswith("| rdrop | 1 | 0.900 ± 0.000 |") and table.endswith("| 2.00x |")
    assert (tmp_path / "all.md").read_text() == table + "\n"
    with pytest.raises(SystemExit, match=r"b\.json: plain seed 1 is already in .*b\.json"):
        bench.combine([part1, part2, part2])
    other = _rows_file(tmp_path / "c.json", [dict(plain, setting="fewshot", seed=5)])
    with pytest.raises(SystemExit, match=r"c\.json: setting 'fewshot'.*combine one setting at a time"):
        bench.combine([part1, other])


def test_the_robust_experiment_is_the_measured_recipe():
    """experiments/banking77_robust.py trains exactly what the full setting measured as llrd+typos_half."""
    full = bench.SETTINGS["full"]
    measured = config_lib.apply_overrides(
        config_lib.load_experiment(os.path.join(ROOT, "experiments", full.experiment)),
        ["train.eval_perturbations=[" + ",".join(full.perturbations) + "]", *full.overrides,
         *bench.METHODS["llrd+typos_half"]])
    recipe = config_lib.load_experiment(os.path.join(ROOT, "experiments", "banking77_robust.py"))
    assert dataclasses.replace(recipe, name=measured.name) == measured
