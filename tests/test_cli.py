"""The `mgpt` command end to end on tiny checkpoints: train, resume, eval, predict; NER reports."""

import csv
import json
import os

import numpy as np
import pytest

from mgpt import cli
from mgpt.train import reporting

from fixtures_tiny import tiny_bert, tiny_gpt2, write_classification_experiment, write_ner_experiment


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    experiment = write_classification_experiment(str(directory), tiny_gpt2(directory / "model"))
    workdir = str(directory / "run")
    assert cli.main(["train", experiment, "--workdir", workdir, "--set", "train.eval_every=3"]) == 0
    return experiment, workdir, directory


def test_rerun_resumes_instead_of_restarting(trained):
    experiment, workdir, _ = trained
    before = [e for e in reporting.read_metrics(workdir) if e["kind"] == "train"]
    assert cli.main(["train", experiment, "--workdir", workdir, "--set", "train.eval_every=3"]) == 0
    after = [e for e in reporting.read_metrics(workdir) if e["kind"] == "train"]
    assert before == after  # nothing retrained: the run was already complete


def test_eval_reproduces_the_training_report(trained, tmp_path):
    experiment, workdir, _ = trained
    output = str(tmp_path / "report.json")
    assert cli.main(["eval", experiment, "--checkpoint", workdir, "--split", "test", "--output", output]) == 0
    with open(output) as f:
        report = json.load(f)
    with open(os.path.join(workdir, "eval_test.json")) as f:
        original = json.load(f)
    assert report["accuracy"] == original["accuracy"]
    assert report["confusion_matrix"] == original["confusion_matrix"]
    np.testing.assert_allclose(report["loss"], original["loss"], rtol=1e-6)


def test_predict_writes_one_labelled_line_per_input(trained, tmp_path):
    experiment, workdir, directory = trained
    source = str(tmp_path / "unlabelled.csv")
    with open(source, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review"])
        for text in ["the movie was great", "the plot was awful", "music lovely", "acting grim"]:
            writer.writerow([text])
    output = str(tmp_path / "predictions.jsonl")
    assert cli.main(["predict", experiment, "--checkpoint", workdir, "--input", source, "--output", output]) == 0
    with open(output) as f:
        rows = [json.loads(line) for line in f]
    assert [r["text"] for r in rows] == ["the movie was great", "the plot was awful", "music lovely", "acting grim"]
    assert all(r["prediction"] in ("neg", "pos") for r in rows)


def test_unknown_override_is_a_clear_cli_error(trained, capsys):
    experiment, workdir, _ = trained
    assert cli.main(["train", experiment, "--workdir", workdir, "--set", "train.batchsize=4"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_ner_run_writes_an_entity_level_report(tmp_path):
    experiment = write_ner_experiment(str(tmp_path), tiny_bert(tmp_path / "bert"))
    workdir = str(tmp_path / "run")
    assert cli.main(["train", experiment, "--workdir", workdir]) == 0
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    assert set(report["per_type"]) == {"PER", "LOC"}
    assert 0.0 <= report["f1"] <= 1.0
    # Entities are given away by the word itself; four epochs at this learning rate learn them.
    assert report["f1"] > 0.9
