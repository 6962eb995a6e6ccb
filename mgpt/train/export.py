"""A training run's workdir out as a GGUF file: the trained causal LM, PEFT merged into the base weights.

The run is rebuilt from the workdir's ``config.json`` (written by ``mgpt train``) and its newest checkpoint
(:func:`mgpt.train.setup.load_for_inference`); LoRA / DoRA / IA3 fold into the weights
(:func:`mgpt.peft.model.merge`) so the file holds a plain model. ``mgpt convert WORKDIR OUT.gguf`` calls it.
"""

from __future__ import annotations

import json
import logging
import os

from mgpt import config as config_lib
from mgpt.models.safetensors_io import CheckpointError

logger = logging.getLogger("mgpt")

CONFIG_FILE = "config.json"
LM_TASKS = ("causal_lm", "generation")  # the task kinds whose model is a plain causal LM


def is_run_workdir(path: str) -> bool:
    """Whether ``path`` is a training run's workdir: an experiment ``config.json`` (not a transformers one)
    next to a ``checkpoints/`` directory."""
    config_path = os.path.join(path, CONFIG_FILE)
    if not (os.path.isdir(os.path.join(path, "checkpoints")) and os.path.isfile(config_path)):
        return False
    try:
        with open(config_path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"model", "task", "data"} <= set(data)


def run_config(workdir: str) -> config_lib.ExperimentConfig:
    """The resolved experiment config a run wrote into its workdir, checked."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path) as f:
        data = json.load(f)
    return config_lib.from_dict(config_lib.ExperimentConfig, data, where=path)


def workdir_to_gguf(workdir: str, out: str, dtype: str = "f16") -> str:
    """Write the newest checkpoint of a causal-LM run (``task.kind`` causal_lm or generation) as a GGUF file."""
    from mgpt.models.gguf_export import save_gguf
    from mgpt.peft.model import merge
    from mgpt.train.setup import load_for_inference

    config = run_config(workdir)
    if config.task.kind not in LM_TASKS:
        raise CheckpointError(f"{os.path.join(workdir, CONFIG_FILE)}: task.kind={config.task.kind!r}; GGUF holds a "
                              f"causal LM, so only {LM_TASKS} runs convert")
    run, params, where = load_for_inference(config, workdir)
    if config.peft.method != "none":
        try:
            params = merge(params, config.peft)
        except ValueError as exc:
            raise CheckpointError(f"{workdir}: {exc}") from exc
    logger.info("exporting %s (params from %s) to %s", workdir, where, out)
    return save_gguf(out, run.spec, params, run.tokenizer, dtype=dtype, name=config.name)
