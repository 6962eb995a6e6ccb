import dataclasses
import glob
import json
import os

import pytest

from mgpt import config as config_lib
from mgpt.config import ConfigError, ExperimentConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))


def test_there_are_experiments():
    names = {os.path.basename(p) for p in EXPERIMENTS}
    assert {"quickstart.py", "wnut17_minilm.py"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_experiment_loads_and_documents_its_command(path):
    config = config_lib.load_experiment(path)
    assert isinstance(config, ExperimentConfig)
    with open(path) as f:
        source = f.read()
    # The docstring holds the exact command that runs the experiment.
    assert f"mgpt train experiments/{os.path.basename(path)}" in source
    # The config survives a JSON round trip (this is what lands in the workdir).
    assert config_lib.from_dict(ExperimentConfig, config_lib.to_dict(config)) == config


def test_overrides_are_typed():
    config = config_lib.apply_overrides(
        ExperimentConfig(),
        [
            "optimizer.learning_rate=1e-4",
            "optimizer.name=lion",
            "train.batch_size=8",
            "train.progress_bar=false",
            "model.dropout=0.0",
            "train.eval_splits=validation,test",
            "parallel.mesh=(('data', 4), ('model', 2))",
            "optimizer.kwargs={'b1': 0.8}",
            "optimizer.kwargs.b2=0.95",
        ],
    )
    assert config.optimizer.learning_rate == 1e-4 and isinstance(config.optimizer.learning_rate, float)
    assert config.optimizer.name == "lion"
    assert config.train.batch_size == 8
    assert config.train.progress_bar is False
    assert config.model.dropout == 0.0
    assert config.train.eval_splits == ("validation", "test")
    assert config.parallel.mesh == (("data", 4), ("model", 2))
    assert config.optimizer.kwargs == {"b1": 0.8, "b2": 0.95}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        config_lib.apply_overrides(ExperimentConfig(), ["optimizer.lr=1e-4"])
    message = str(info.value)
    assert "optimizer.lr" in message and "learning_rate" in message and "weight_decay" in message
    with pytest.raises(ConfigError, match="valid keys under <top level>"):
        config_lib.apply_overrides(ExperimentConfig(), ["optimiser.learning_rate=1"])


def test_bad_values_fail_naming_the_key():
    with pytest.raises(ConfigError, match="train.batch_size='eight': expected an int"):
        config_lib.apply_overrides(ExperimentConfig(), ["train.batch_size=eight"])
    with pytest.raises(ConfigError, match="train.progress_bar='maybe': expected a bool"):
        config_lib.apply_overrides(ExperimentConfig(), ["train.progress_bar=maybe"])
    with pytest.raises(ConfigError, match="key=value"):
        config_lib.apply_overrides(ExperimentConfig(), ["train.batch_size"])


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ExperimentConfig().train.batch_size = 3


def test_saved_config_is_json(tmp_path):
    path = tmp_path / "config.json"
    config_lib.save_config(ExperimentConfig(name="x"), path)
    data = json.loads(path.read_text())
    assert data["name"] == "x" and data["optimizer"]["name"] == "adamw"
    with pytest.raises(ConfigError, match="bogus"):
        config_lib.from_dict(ExperimentConfig, {**data, "bogus": 1})



def test_saved_config_reads_back_unchanged(tmp_path):
    config = config_lib.apply_overrides(ExperimentConfig(), [
        "parallel.mesh=[[data,4],[model,2]]", "parallel.logical_rules=[[batch,data],[embed,null]]",
        "optimizer.kwargs={b1: 0.8, nesterov: true}", 'data.label_map={"0": neg}', "data.labels=[neg,pos]",
        "train.eval_splits=validation,test", "model.dropout=0.1", "train.num_epochs=2"])
    path = tmp_path / "config.json"
    config_lib.save_config(config, path)
    again = config_lib.from_dict(ExperimentConfig, json.loads(path.read_text()))
    assert again == config
    assert again.parallel.logical_rules == (("batch", "data"), ("embed", None))
    assert isinstance(again.train.num_epochs, float) and again.data.labels == ("neg", "pos")


def test_read_back_config_is_checked(tmp_path):
    data = config_lib.to_dict(ExperimentConfig())
    data["checkpoint"]["max_to_keep"] = 0
    with pytest.raises(ConfigError, match=r"^checkpoint.max_to_keep=0: expected a value >= 1$"):
        config_lib.from_dict(ExperimentConfig, data)
    data = config_lib.to_dict(ExperimentConfig())
    data["train"]["bogus"] = 1
    with pytest.raises(ConfigError, match=r"^unknown config key 'train.bogus': valid keys under train are: [a-z_, ]*\bbatch_size\b"):
        config_lib.from_dict(ExperimentConfig, data)


def test_experiment_file_values_are_checked(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from mgpt.config import *\n\n\ndef get_config():\n"
                    "    return ExperimentConfig(model=ModelConfig(dtype='float33'))\n")
    with pytest.raises(ConfigError) as info:
        config_lib.load_experiment(path)
    assert str(info.value) == f"{path}: model.dtype='float33': expected one of 'float32', 'bfloat16', 'float16'"


def test_no_silent_coercion():
    for override, message in [
        ("train.batch_size=true", "train.batch_size=True: expected an int"),
        ("train.batch_size=8.5", "train.batch_size=8.5: expected an int"),
        ("train.num_epochs=0.9x", "train.num_epochs='0.9x': expected a float"),
        ("train.progress_bar=2", "train.progress_bar=2: expected a bool (true/false)"),
        ("optimizer.kwargs=[1]", "optimizer.kwargs=[1]: expected a dict, e.g. {a: 1} or JSON"),
        ("data.labels=[0, 1]", "data.labels[0]=0: expected a string"),
        ("model.dtype.x=1", "unknown config key 'model.dtype.x': model.dtype is a value, not a section"),
    ]:
        with pytest.raises(ConfigError) as info:
            config_lib.apply_overrides(ExperimentConfig(), [override])
        assert str(info.value) == message
    on = config_lib.apply_overrides(ExperimentConfig(), ["train.progress_bar=yes", "checkpoint.enabled=0",
                                                         "train.eval_splits=", "optimizer.learning_rate=1e-4"])
    assert on.train.progress_bar is True and on.checkpoint.enabled is False and on.train.eval_splits == ()
    assert on.optimizer.learning_rate == 1e-4
