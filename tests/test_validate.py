"""validate(config): every rule fails at start-up with one line naming the key, the value and what is allowed."""

import glob
import os
import re

import numpy as np
import pytest

from mgpt import cli
from mgpt import config as config_lib
from mgpt.config import ConfigError, DataConfig, ExperimentConfig
from mgpt.tasks import TASKS, get_task
from mgpt.train import loop
from mgpt.train.validate import available_splits, metric_names, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 + glob.glob(os.path.join(ROOT, "experiments", "benchmarks", "*.py"))
                 if "def get_config" in open(p).read())
# Classification from CSV files with validation and test: the base every case below changes.
BASE = ExperimentConfig(data=DataConfig(train_file="train.csv", validation_file="dev.csv", test_file="test.csv"))


def _error(overrides, config=BASE) -> str:
    """The one-line message of the ConfigError that ``overrides`` (then validate) raise."""
    with pytest.raises(ConfigError) as info:
        validate(config_lib.apply_overrides(config, overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_experiment_validates(path):
    config = config_lib.load_experiment(path)
    assert validate(config) == config
    assert config_lib.from_dict(ExperimentConfig, config_lib.to_dict(config)) == config


# The cases issue 11 lists.

def test_misspelt_best_metric_names_what_the_task_reports():
    message = _error(["train.best_metric=validation/acuracy"])
    assert message == ("train.best_metric='validation/acuracy': task.kind='sequence_classification' reports "
                       "'accuracy', 'macro_f1', 'micro_f1', 'loss'; expected validation/<one of them>")
    assert validate(config_lib.apply_overrides(BASE, ["train.best_metric=validation/macro_f1"]))


def test_best_metric_on_a_split_that_is_not_evaluated():
    message = _error(["train.best_metric=test/accuracy"])
    assert message == ("train.best_metric='test/accuracy': expected <split>/<metric> with a split in "
                       "train.eval_splits ('validation')")


def test_misspelt_eval_split_lists_the_split_names():
    message = _error(["train.eval_splits=validation,tset"])
    assert message == "train.eval_splits[1]='tset': expected one of 'train', 'validation', 'test', 'predict'"
    # the comma shorthand still gives a tuple of strings
    assert config_lib.apply_overrides(BASE, ["train.eval_splits=validation,test"]).train.eval_splits == (
        "validation", "test")


def test_eval_split_missing_from_the_data():
    no_test = config_lib.apply_overrides(BASE, ["data.test_file="])
    message = _error(["train.eval_splits=validation,test"], no_test)
    assert message.startswith("train.eval_splits=('validation', 'test'): 'test' is not in the data as configured; "
                              "expected splits among 'train', 'validation'")
    message = _error(["train.final_eval_splits=test"], no_test)
    assert message.startswith("train.final_eval_splits=('test',): 'test' is not in the data")
    # The default final splits mean "validation and test, those the data has".
    assert validate(no_test).train.final_eval_splits == ("validation", "test")
    # A split carved out of train by its ratio exists.
    carved = config_lib.apply_overrides(no_test, ["data.test_ratio=0.2", "train.eval_splits=validation,test"])
    assert validate(carved).train.eval_splits == ("validation", "test")


def test_max_to_keep_zero_is_refused():
    assert _error(["checkpoint.max_to_keep=0"]) == "checkpoint.max_to_keep=0: expected a value >= 1"


def test_list_values_parse_from_set():
    for text in ("[neg,pos]", '["neg", "pos"]', "neg,pos", "('neg', 'pos')"):
        assert config_lib.apply_overrides(BASE, [f"data.labels={text}"]).data.labels == ("neg", "pos"), text
    assert config_lib.apply_overrides(BASE, ["data.labels=neg"]).data.labels == ("neg",)
    config = config_lib.apply_overrides(BASE, ['data.label_map={"0": neg, "1": pos}', "optimizer.kwargs={b1: 0.8}",
                                               'data.tfds_splits={"train": "train[:90%]"}'])
    assert config.data.label_map == {"0": "neg", "1": "pos"}
    assert config.optimizer.kwargs == {"b1": 0.8}
    assert config.data.tfds_splits == {"train": "train[:90%]"}
    assert config_lib.apply_overrides(BASE, ["model.dropout=null"]).model.dropout is None


def test_setting_a_section_is_refused():
    message = _error(["checkpoint=1"])
    assert message.startswith("checkpoint='1': checkpoint is a section, not a value; set one of its keys: ")
    assert "checkpoint.max_to_keep" in message


def test_optimizer_keyword_of_the_wrong_type():
    assert _error(["optimizer.kwargs.b1=0.9x"]) == (
        "optimizer.kwargs.b1='0.9x': expected a number (optax.adamw's default: 0.9)")
    assert _error(["optimizer.name=sgd", "optimizer.kwargs.nesterov=1"]) == (
        "optimizer.kwargs.nesterov=1: expected a bool (true/false) (optax.sgd's default: False)")
    good = config_lib.apply_overrides(BASE, ["optimizer.name=sgd", "optimizer.kwargs.momentum=0.9",
                                             "optimizer.kwargs.nesterov=true"])
    assert validate(good).optimizer.kwargs == {"momentum": 0.9, "nesterov": True}


def test_optimizer_unknown_keyword_and_name():
    message = _error(["optimizer.kwargs.beta1=0.8"])
    assert message == "optimizer.kwargs.beta1=0.8: optax.adamw takes b1, b2, eps, eps_root, mu_dtype, nesterov"
    assert _error(["optimizer.kwargs.learning_rate=1"]) == (
        "optimizer.kwargs.learning_rate=1: set optimizer.learning_rate (and its schedule) instead")
    message = _error(["optimizer.name=adamx"])
    assert message.startswith("optimizer.name='adamx': expected an Optax optimizer, one of ")
    assert re.search(r"\badamw\b", message) and re.search(r"\blion\b", message) and "State" not in message


# Enumerations and per-section bounds.

@pytest.mark.parametrize("key,allowed", [
    ("model.dtype", "'float32', 'bfloat16', 'float16'"),
    ("model.remat", "'none', 'full', 'dots', 'dots_no_batch'"),
    ("model.attention_impl", "'', 'xla', 'cudnn'"),
    ("task.kind", "'sequence_classification', 'multi_label_classification', 'token_classification', "
                  "'regression', 'causal_lm', 'generation'"),
    ("data.format", "'csv', 'tsv', 'jsonl', 'conll', 'tfds', 'lines', 'parallel', 'chat'"),
    ("optimizer.schedule", "'constant', 'linear', 'cosine'"),
    ("train.best_mode", "'max', 'min'"),
    ("parallel.mode", "'jit', 'pmap'"),
    ("peft.method", "'none', 'lora', 'dora', 'adapter', 'prefix', 'prompt', 'ia3', 'bitfit'"),
    ("peft.adapter_placement", "'houlsby', 'pfeiffer'"),
])
def test_enumerations_list_their_values(key, allowed):
    assert _error([f"{key}=float33"]) == f"{key}='float33': expected one of {allowed}"


def test_generation_metrics_are_an_enumeration():
    assert _error(["task.generation_metrics=rouge,meteor"]) == (
        "task.generation_metrics[1]='meteor': expected one of 'rouge', 'bleu', 'chrf', 'exact_match', 'token_f1'")


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=0", "train.batch_size=0: expected a value >= 1"),
    ("train.eval_batch_size=-2", "train.eval_batch_size=-2: expected a value >= 1"),
    ("optimizer.accumulation_steps=0", "optimizer.accumulation_steps=0: expected a value >= 1"),
    ("data.validation_ratio=1.0", "data.validation_ratio=1.0: expected a value < 1"),
    ("optimizer.warmup_ratio=-0.1", "optimizer.warmup_ratio=-0.1: expected a value >= 0"),
    ("task.top_p=0", "task.top_p=0: expected a value > 0"),
    ("peft.rank=0", "peft.rank=0: expected a value >= 1"),
    ("data.max_length=0", "data.max_length=0: expected a value >= 1"),
    ("optimizer.learning_rate=fast", "optimizer.learning_rate='fast': expected a float"),
    ("parallel.mesh=[[data,x]]", "parallel.mesh[0][1]='x': expected an int"),
    ("data.tfds_splits={dev: x}", "data.tfds_splits.dev: the key 'dev' is not one of 'train', 'validation', "
                                  "'test', 'predict'"),
])
def test_section_bounds(override, message):
    assert _error([override]) == message


def test_ratios_must_leave_training_examples():
    assert _error(["data.test_file=", "data.validation_file=", "data.validation_ratio=0.5", "data.test_ratio=0.5"]) \
        == "data.validation_ratio=0.5: with data.test_ratio=0.5 it leaves no training example; expected a sum below 1"


# Cross-field rules.

@pytest.mark.parametrize("overrides,message", [
    (["data.format=conll"], "data.format='conll': task.kind='sequence_classification' reads one of 'csv', 'tsv', "
                            "'jsonl', 'lines', 'tfds'"),
    (["task.kind=token_classification"], "data.format='csv': task.kind='token_classification' reads one of "
                                         "'conll', 'tfds'"),
    (["task.kind=regression", "data.format=parallel"], "data.format='parallel': task.kind='regression' reads one "
                                                       "of 'csv', 'tsv', 'jsonl', 'lines', 'tfds'"),
    (["task.kind=generation"], "data.target_column='': task.kind='generation' needs the field holding the "
                               "reference text"),
    (["task.loss_chunk_size=8"], "task.loss_chunk_size=8: only for task.kind 'causal_lm', 'generation'; expected 0 "
                                 "for 'sequence_classification'"),
    (["data.stride=4"], "data.stride=4: sliding windows are for task.kind='token_classification'; expected 0 for "
                        "'sequence_classification'"),
    (["data.pack=true", "train.eval_splits=('train',)"], "data.pack=True: packs the train split, which "
                                                          "train.eval_splits / final_eval_splits evaluate; expected false, or no "
                                                          "'train' among the evaluated splits"),
    (["data.tfds_name=glue/sst2"], "data.tfds_name='glue/sst2': is read only with data.format='tfds' "
                                   "(data.format is 'csv')"),
    (["data.format=tfds", "data.tfds_name=glue/sst2"], "data.train_file='train.csv': data.format='tfds' reads "
                                                      "data.tfds_name; expected no file"),
    (["train.early_stopping_patience=2", "train.eval_splits=()"],
     "train.early_stopping_patience=2: needs an evaluated split in train.eval_splits; expected 0 when nothing "
     "is evaluated"),
])
def test_cross_field_rules(overrides, message):
    assert _error(overrides) == message


def test_parallel_text_needs_a_prompt_template():
    message = _error(["task.kind=causal_lm", "data.format=parallel"])
    assert message.startswith("data.prompt_template='': data.format='parallel' gives source / target fields")
    ok = ["task.kind=generation", "data.format=parallel", "data.target_column=target",
          "data.prompt_template=German: {source} English:", "train.best_metric=validation/bleu",
          "task.generation_metrics=bleu,rouge"]
    assert validate(config_lib.apply_overrides(BASE, ok)).task.kind == "generation"


def test_task_options_pass_with_their_task():
    causal = config_lib.apply_overrides(BASE, ["task.kind=causal_lm", "data.format=jsonl", "data.pack=true",
                                               "task.loss_chunk_size=16", "train.best_metric=validation/perplexity"])
    assert validate(causal).task.loss_chunk_size == 16
    tags = config_lib.apply_overrides(BASE, ["task.kind=token_classification", "data.format=conll", "data.stride=8",
                                             "train.best_metric=validation/f1"])
    assert validate(tags).data.stride == 8


def test_available_splits_from_the_config_alone():
    assert available_splits(BASE.data) == ("train", "validation", "test")
    assert available_splits(DataConfig(train_file="a", validation_ratio=0.1)) == ("train", "validation")
    assert available_splits(DataConfig(train_file="a", test_file="b", predict_file="c")) == ("train", "test", "predict")
    assert available_splits(DataConfig(format="tfds", tfds_name="x", tfds_splits={"train": "train[:90%]"},
                                       test_ratio=0.1)) == ("train", "test")
    assert available_splits(DataConfig(format="tfds", tfds_name="x")) is None  # the data set's own splits
    assert available_splits(DataConfig()) is None  # no data at all (e.g. `mgpt generate --model`)


def test_generation_reports_its_configured_text_metrics():
    config = config_lib.apply_overrides(BASE, ["task.kind=generation", "task.generation_metrics=rouge,bleu"])
    assert metric_names(config) == ("loss", "perplexity", "rouge1", "rouge2", "rougeL", "bleu")


def test_declared_metric_names_are_what_the_tasks_report():
    """metric_names matches the scalars evaluation logs: the task's headline of a real report, plus the loss."""
    predictions, references = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    reports = {
        "sequence_classification": (predictions, references, ("neg", "pos")),
        "multi_label_classification": (np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 1]]), ("a", "b")),
        "regression": (np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.6, 1.0]), ()),
        "token_classification": ([["B-PER", "O"], ["O", "B-LOC"]], [["B-PER", "O"], ["B-LOC", "B-LOC"]], ()),
        "causal_lm": (np.array([[1, 2, 3]]), np.array([[1, 2, 4]]), ()),
    }
    for kind, (pred, ref, names) in reports.items():
        task = get_task(kind)
        report = task.report(pred, ref, names)
        report["loss"] = 0.5  # evaluation adds the loss to every task's report
        assert set(task.headline(report)) | {"loss"} == set(task.metric_names), kind
    assert set(TASKS) == set(reports) | {"generation"}


# Before any I/O, from the loop and from the command line.

def test_train_validates_before_opening_anything(tmp_path):
    config = config_lib.apply_overrides(BASE, ["model.name_or_path=no/such/model", "checkpoint.max_to_keep=2",
                                               "train.best_metric=validation/acuracy"])
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="train.best_metric='validation/acuracy'"):
        loop.train(config, str(workdir))
    assert not workdir.exists()


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    experiment = tmp_path / "tiny.py"
    experiment.write_text('"""Tiny.\n\n    mgpt train tiny.py\n"""\nfrom mgpt.config import *\n\n\ndef get_config():\n'
                          '    return ExperimentConfig(data=DataConfig(train_file="t.csv", validation_file="v.csv"))\n')
    cases = {
        "checkpoint.max_to_keep=0": "checkpoint.max_to_keep=0: expected a value >= 1",
        "train.eval_splits=validation,test": "train.eval_splits=('validation', 'test'): 'test' is not in the data",
        "optimizer.kwargs.b1=0.9x": "optimizer.kwargs.b1='0.9x': expected a number",
    }
    for command in ("train", "eval", "predict", "generate"):
        extra = {"train": ["--workdir", str(tmp_path / "run")], "eval": ["--checkpoint", str(tmp_path)],
                 "predict": ["--checkpoint", str(tmp_path), "--input", "x.csv", "--output", "y.jsonl"],
                 "generate": ["--model", str(tmp_path), "--prompt", "hi"]}[command]
        for override, expected in cases.items():
            assert cli.main([command, str(experiment), "--set", override] + extra) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"mgpt: config error: {expected}") and err.count("\n") == 1, err
            assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
