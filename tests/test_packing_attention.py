"""Packed rows: each example attends only to itself and sees positions from 0, as if it ran alone."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import mgpt
from mgpt import config as config_lib
from mgpt.data.packing import pack_rows
from mgpt.train import loop
from mgpt.train.step import forward

from fixtures_tiny import tiny_gpt2
from family_checkpoints import VOCAB, make_checkpoint  # tiny Llama-family checkpoints made by transformers


def _check_packed_equals_alone(model, params, vocab=30):
    rng = np.random.default_rng(0)
    lengths = [5, 3, 4]
    examples = [rng.integers(5, vocab, n).astype(np.int32) for n in lengths]
    T = 16
    arrays = {"input_ids": np.zeros((3, T), np.int32), "attention_mask": np.zeros((3, T), np.int32),
              "labels": np.full((3, T), -100, np.int32)}
    for i, ids in enumerate(examples):
        arrays["input_ids"][i, :len(ids)] = ids
        arrays["attention_mask"][i, :len(ids)] = 1
        arrays["labels"][i, :len(ids)] = ids
    packed = pack_rows(arrays, T, pad_id=0)
    assert packed["input_ids"].shape[0] == 1  # all three fit in one row
    batch = {k: jnp.asarray(v) for k, v in packed.items()}
    logits = forward(model, params, batch, deterministic=True)[0]
    start = 0
    for ids in examples:
        alone = model.apply({"params": params}, jnp.asarray(ids)[None], attention_mask=jnp.ones((1, len(ids)), jnp.int32),
                            deterministic=True)[0]
        np.testing.assert_allclose(logits[start:start + len(ids)], alone, atol=1e-5)
        start += len(ids)


def test_gpt2_packed_row_equals_examples_alone(tmp_path):
    model, params, _, _ = mgpt.load_pretrained(tiny_gpt2(tmp_path / "gpt2"), task="causal_lm")
    _check_packed_equals_alone(model, params)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_llama_family_packed_row_equals_examples_alone(family, tmp_path):
    directory = tmp_path / family
    make_checkpoint(directory, family, "causal_lm")
    model, params, _, _ = mgpt.load_pretrained(directory, task="causal_lm")
    _check_packed_equals_alone(model, params, vocab=VOCAB)


def test_packed_training_run(tmp_path):
    model_dir = tiny_gpt2(tmp_path / "model")
    path = tmp_path / "qa.jsonl"
    with open(path, "w") as f:
        for w in ["good", "bad", "fine", "nice"] * 6:
            f.write(json.dumps({"question": f"was the movie {w}", "answer": f"the movie was {w}"}) + "\n")
    config = config_lib.apply_overrides(config_lib.ExperimentConfig(), [
        f"model.name_or_path={model_dir}", "task.kind=causal_lm", "data.format=jsonl", f"data.train_file={path}",
        f"data.test_file={path}", "data.prompt_template=Q: {question} A:", "data.target_column=answer",
        "data.pack=true", "data.max_length=24", "train.batch_size=8", "train.max_steps=3", "train.progress_bar=false",
        "train.eval_splits=()", "checkpoint.enabled=false", "optimizer.learning_rate=1e-3", "train.log_every=1"])
    reports = loop.train(config, str(tmp_path / "run"))
    assert np.isfinite(reports["test"]["loss"])
    with open(os.path.join(tmp_path, "run", "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f if '"train"' in line] == [1, 2, 3]
