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

