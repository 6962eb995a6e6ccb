"""Robustness evaluation (train.eval_perturbations): each evaluated split is also scored on perturbed copies,
built once with a fixed seed; clean, perturbed and drop reach eval_<split>.json, metrics.jsonl, TensorBoard."""

import glob
import json
import os
import struct

import pytest

from mgpt import config as config_lib
from mgpt.train import evaluation, loop, reporting, setup

from fixtures_tiny import tiny_bert, tiny_gpt2, write_classification_experiment

SPECS = ("char:0.2", "delete:0.5", "synonym:0.5")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("perturb")
    synonyms = directory / "synonyms.txt"
    synonyms.write_text("zebra, giraffe\nquartz granite\n")  # no word of the data: that copy equals the clean one
    path = write_classification_experiment(str(directory), tiny_gpt2(directory / "model"))
    return path, str(synonyms)


def _config(experiment, *overrides):
    path, synonyms = experiment
    return config_lib.apply_overrides(config_lib.load_experiment(path), [
        f"data.synonyms_file={synonyms}", f"train.eval_perturbations={SPECS!r}", *overrides])


def _tensorboard_tags(workdir):
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in glob.glob(os.path.join(workdir, "tensorboard", "*")):
        with open(path, "rb") as f:
            data = f.read()
        position = 0
        while position < len(data):  # TFRecord: length, its crc, the event, its crc
            (length,) = struct.unpack("<Q", data[position:position + 8])
            event = event_pb2.Event.FromString(data[position + 12:position + 12 + length])
            tags.update(value.tag for value in event.summary.value)
            position += 12 + length + 4
    return tags


def test_perturbed_metrics_in_every_report(experiment, tmp_path):
    workdir = str(tmp_path / "run")
    reports = loop.train(_config(experiment, "train.max_steps=8", "train.eval_every=4"), workdir)
    events = reporting.read_metrics(workdir)
    evals = [e for e in events if e["kind"] == "eval"]
    final = {}
    for event in events:
        if event["kind"] == "final":
            final.update(event)  # one event per split
    assert len(evals) == 2 and "test/accuracy" in final and "validation/accuracy" in final
    for split, event in [("validation", e) for e in evals] + [("validation", final), ("test", final)]:
        for spec in SPECS:
            for metric in ("accuracy", "macro_f1", "loss"):
                clean, perturbed = event[f"{split}/{metric}"], event[f"{split}@{spec}/{metric}"]
                assert event[f"{split}@{spec}/{metric}_drop"] == pytest.approx(clean - perturbed, abs=1e-12)
        for metric in ("accuracy", "macro_f1", "micro_f1", "loss"):  # the copy that changes nothing drops nothing
            assert event[f"{split}@synonym:0.5/{metric}_drop"] == 0.0
    for split in ("validation", "test"):
        with open(os.path.join(workdir, f"eval_{split}.json")) as f:
            report = json.load(f)
        assert report == json.loads(json.dumps(reports[split]))
        assert set(report["perturbations"]) == set(SPECS)
        for spec in SPECS:
            copy = report["perturbations"][spec]
            assert copy["num_examples"] == report["num_examples"]
            assert report[f"{split}@{spec}/accuracy"] == copy["accuracy"] == final[f"{split}@{spec}/accuracy"]
            assert report[f"{split}@{spec}/accuracy_drop"] == copy["accuracy_drop"] == pytest.approx(
                report["accuracy"] - copy["accuracy"], abs=1e-12)
    tags = _tensorboard_tags(workdir)
    assert {"eval/validation/accuracy", "eval/validation_char_0.2/accuracy", "eval/validation_char_0.2/accuracy_drop",
            "final/test_delete_0.5/loss"} <= tags
    assert os.path.exists(os.path.join(workdir, "training_curves.png"))
    # The best checkpoint is chosen by the clean metric.
    best = max(evals, key=lambda e: (e["validation/accuracy"], -e["step"]))
    assert f"step {best['step']}, validation/accuracy={best['validation/accuracy']:.4f}" in reports["test"]["params"]


def test_copies_are_built_once_the_same_every_time(experiment):
    config = _config(experiment)
    run = setup.build_run(config)
    data = run.data
    assert data.perturbed["validation"] == {spec: f"validation@{spec}" for spec in SPECS}
    assert "train" not in data.perturbed  # the train split is not evaluated
    clean = data.examples["validation"]
    assert data.examples["validation@synonym:0.5"] == clean
    for spec in ("char:0.2", "delete:0.5"):
        assert sum(a != b for a, b in zip(data.examples[f"validation@{spec}"], clean)) > len(clean) // 3
        assert [e["label"] for e in data.examples[f"validation@{spec}"]] == [e["label"] for e in clean]
    first = evaluation.evaluate_with_perturbations(run, run.params, "validation")[1]
    assert first == evaluation.evaluate_with_perturbations(run, run.params, "validation")[1]
    again = setup.build_run(config)  # another run: the same copies, whatever train.seed
    other_seed = setup.build_run(config_lib.apply_overrides(config, ["train.seed=5"]))
    for split in data.splits:
        assert again.data.examples[split] == data.examples[split] == other_seed.data.examples[split]


NER_ROWS = [
    [("alice", "B-PER"), ("bob", "I-PER"), ("visited", "O"), ("paris", "B-LOC")],
    [("carol", "B-PER"), ("met", "O"), ("alice", "B-PER"), ("in", "O"), ("rome", "B-LOC"), ("oslo", "I-LOC")],
    [("bob", "B-PER"), ("visited", "O"), ("oslo", "B-LOC"), ("and", "O"), ("the", "O"), ("movie", "O")],
    [("the", "O"), ("music", "O"), ("in", "O"), ("paris", "B-LOC"), ("rome", "I-LOC"), ("oslo", "I-LOC")],
]


def _conll(path, sentences):
    with open(path, "w") as f:
        for sentence in sentences:
            f.writelines(f"{word} NN {tag}\n" for word, tag in sentence)
            f.write("\n")
    return str(path)


def test_token_classification_copies_go_through_the_word_machinery(tmp_path):
    model = tiny_bert(tmp_path / "bert")
    train = _conll(tmp_path / "train.conll", NER_ROWS * 3)
    validation = _conll(tmp_path / "validation.conll", NER_ROWS * 2)
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("zebra giraffe\n")

    def config(validation_file, *perturbations):
        return config_lib.ExperimentConfig(
            model=config_lib.ModelConfig(name_or_path=model),
            data=config_lib.DataConfig(format="conll", train_file=train, validation_file=validation_file,
                                       max_length=16, synonyms_file=str(synonyms)),
            task=config_lib.TaskConfig(kind="token_classification"),
            train=config_lib.TrainConfig(eval_perturbations=perturbations, final_eval_splits=("validation",)))

    run = setup.build_run(config(validation, "mention_replace:1", "char:0.3", "synonym:0.5"))
    name = "validation@mention_replace:1"
    examples = run.data.examples[name]
    assert run.data.num_words[name].tolist() == [len(e["tokens"]) for e in examples]
    assert [len(e["tokens"]) for e in examples] != [len(e["tokens"]) for e in run.data.examples["validation"]]
    report, scalars = evaluation.evaluate_with_perturbations(run, run.params, "validation")
    for metric in ("f1", "precision", "recall", "accuracy", "loss"):
        assert scalars[f"validation@synonym:0.5/{metric}_drop"] == 0.0
        assert scalars[f"{name}/{metric}_drop"] == pytest.approx(
            scalars[f"validation/{metric}"] - scalars[f"{name}/{metric}"], abs=1e-12)
    # The same copy read from a file and evaluated as an ordinary split scores the same.
    as_file = _conll(tmp_path / "perturbed.conll", [list(zip(e["tokens"], e["tags"])) for e in examples])
    plain = setup.build_run(config(as_file))
    _, direct = evaluation.evaluate_split(plain, run.params, "validation")
    for metric in ("f1", "precision", "recall", "accuracy"):
        assert direct[metric] == pytest.approx(scalars[f"{name}/{metric}"], abs=1e-9)
    assert report["perturbations"]["mention_replace:1"]["num_examples"] == len(examples)
