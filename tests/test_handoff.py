"""The assistant's hand-off threshold: coverage and answered accuracy by hand, the choice, the file."""

import json

import pytest

from mgpt.apps.handoff import choose_threshold, coverage_curve
from mgpt.apps.handoff_run import read_threshold, run_workdir
from mgpt.data.errors import DataError

CONFIDENCE = [0.3, 0.9, 0.8, 0.8, 0.55]
CORRECT = [False, True, False, True, True]


def test_coverage_curve_by_hand():
    # highest first; the tie at 0.8 is answered together (coverage jumps from 1/5 to 3/5)
    assert coverage_curve(CONFIDENCE, CORRECT) == [
        {"threshold": 0.9, "coverage": 0.2, "accuracy": 1.0},
        {"threshold": 0.8, "coverage": 0.6, "accuracy": pytest.approx(2 / 3)},
        {"threshold": 0.55, "coverage": 0.8, "accuracy": 0.75},
        {"threshold": 0.3, "coverage": 1.0, "accuracy": 0.6},
    ]


@pytest.mark.parametrize("target, threshold, coverage", [
    (0.6, 0.3, 1.0),  # everything answered
    (0.7, 0.55, 0.8),  # 0.8 alone gives 2/3, but going lower to 0.55 recovers 0.75: the most answered wins
    (0.9, 0.9, 0.2),
    (1.0, 0.9, 0.2),
])
def test_the_lowest_threshold_that_reaches_the_target(target, threshold, coverage):
    chosen = choose_threshold(CONFIDENCE, CORRECT, target)
    assert (chosen["threshold"], chosen["coverage"]) == (threshold, coverage)
    assert chosen["accuracy"] >= target and chosen["num_questions"] == 5


def test_an_unreachable_target_or_bad_input_fails_clearly():
    with pytest.raises(DataError, match="no threshold reaches answered accuracy 0.5: the best is 0.000"):
        choose_threshold([0.9, 0.4], [False, False], 0.5)
    with pytest.raises(DataError, match=r"target accuracy must be in \(0, 1\]"):
        choose_threshold(CONFIDENCE, CORRECT, 0.0)
    with pytest.raises(DataError, match="one confidence and one correct flag per question"):
        coverage_curve([0.5, 0.6], [True])


def test_the_threshold_file_is_read_from_the_run_workdir(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    assert run_workdir(str(run / "best")) == str(run) == run_workdir(str(run / "checkpoints"))
    assert read_threshold(str(run)) is None and read_threshold(None) is None
    (run / "handoff.json").write_text(json.dumps({"threshold": 0.42}))
    assert read_threshold(str(run / "best")) == 0.42
    (run / "handoff.json").write_text("{}")
    with pytest.raises(DataError, match=r"handoff.json: expected the JSON that mgpt handoff writes"):
        read_threshold(str(run))
