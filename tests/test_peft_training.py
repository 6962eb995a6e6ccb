"""PEFT in the real training loop: frozen params never move, the trainable count is right, and
trainable-only checkpoints resume exactly and refuse another base model."""

import logging
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mgpt import config as config_lib
from mgpt.train import loop, setup

from fixtures_tiny import tiny_gpt2, write_classification_experiment

E, LAYERS, RANK, LABELS = 32, 2, 4, 2  # the tiny GPT-2 of fixtures_tiny, a binary sentiment head


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("peft_cls")
    model_dir = tiny_gpt2(directory / "model")
    return write_classification_experiment(str(directory), model_dir)


def _config(experiment, *overrides):
    base = ["train.max_steps=4", "train.eval_every=100", "checkpoint.keep_best=false", "peft.method=lora",
            f"peft.rank={RANK}", "peft.target_modules=c_attn", "peft.dropout=0.1"]
    return config_lib.apply_overrides(config_lib.load_experiment(experiment), base + list(overrides))


def _host(tree):
    return jax.tree_util.tree_map(lambda x: np.array(jax.device_get(x)), tree)


def _train(config, workdir, stop_after=None):
    """Run the loop like ``loop.train``; returns (initial params, final params) on the host."""
    os.makedirs(workdir, exist_ok=True)
    run = setup.build_run(config)
    initial = _host(run.params)
    runner = loop._Loop(run, workdir)
    try:
        finished = runner.run(stop_after)
        final = _host(runner.engine.params(runner.state))
    finally:
        runner.close()
    return run, initial, final, finished


@pytest.fixture(scope="module")
def straight(experiment, tmp_path_factory):
    caplog_records = []
    handler = logging.Handler()
    handler.emit = caplog_records.append
    logging.getLogger("mgpt").addHandler(handler)
    logging.getLogger("mgpt").setLevel(logging.INFO)
    try:
        result = _train(_config(experiment), str(tmp_path_factory.mktemp("straight")))
    finally:
        logging.getLogger("mgpt").removeHandler(handler)
    return result, [r.getMessage() for r in caplog_records]


def test_lora_trains_only_lora_and_head_and_counts_them(straight):
    (run, initial, final, finished), messages = straight
    assert finished
    mask = run.trainable
    moved = {"frozen": 0, "trained": 0}
    for (path, a), b, trained in zip(jax.tree_util.tree_leaves_with_path(initial), jax.tree_util.tree_leaves(final),
                                     jax.tree_util.tree_leaves(mask)):
        if trained:
            moved["trained"] += int(not np.array_equal(a, b))
        else:  # bitwise identical, not merely close
            assert a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)
            moved["frozen"] += 1
    # LoRA on c_attn (E x 3E) in both layers: A (E, r) and B (r, 3E); the score head (E, labels), no bias.
    by_hand = LAYERS * (E * RANK + RANK * 3 * E) + E * LABELS
    total = sum(x.size for x in jax.tree_util.tree_leaves(initial))
    line = next(m for m in messages if m.startswith("parameters:"))
    assert line == f"parameters: {total} total, {by_hand} trainable"
    assert total == sum(x.size for x in jax.tree_util.tree_leaves(initial["base"])) + LAYERS * (E * RANK + RANK * 3 * E)
    assert moved["trained"] == LAYERS * 2 + 1  # every A, B and the head moved (B starts at 0, A gets gradient after)
    assert moved["frozen"] == len(jax.tree_util.tree_leaves(initial["base"])) - 1


def test_trainable_only_checkpoints_resume_exactly_and_check_the_base(experiment, straight, tmp_path):
    (_, _, expected, _), _ = straight
    config = _config(experiment, "checkpoint.trainable_only=true")
    workdir = str(tmp_path / "partial")
    _, _, _, finished = _train(config, workdir, stop_after=2)
    assert not finished
    # Only the LoRA matrices and the head are in the checkpoint.
    step_dir = os.path.join(workdir, "checkpoints", "2", "state")
    saved = ocp.StandardCheckpointer().metadata(step_dir).item_metadata.tree["params"]
    paths = sorted("/".join(str(getattr(k, "key", k)) for k in p)
                   for p, _ in jax.tree_util.tree_flatten_with_path(saved, is_leaf=lambda x: hasattr(x, "shape"))[0])
    assert paths == ["base/head/score/kernel"] + [
        f"peft/lora/backbone/h_{i}/attn/c_attn/{name}" for i in range(LAYERS) for name in ("lora_a", "lora_b")]
    _, _, resumed, finished = _train(config, workdir)
    assert finished
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # Same workdir, another base model (other random weights): restoring fails and says why.
    other = tiny_gpt2(tmp_path / "other_model", seed=1)
    wrong = config_lib.apply_overrides(config, [f"model.name_or_path={other}", "train.max_steps=6"])
    with pytest.raises(ValueError, match="this workdir holds a run of another model"):  # the resume check
        _train(wrong, workdir)
    # told the change is intended, the trainable-only checkpoint still refuses a base it was not trained on
    wrong = config_lib.apply_overrides(wrong, ["train.allow_resume_changes=[model,schedule]"])
    with pytest.raises(ValueError, match=re.escape("does not match the base loaded now") + ".*frozen values differ"):
        _train(wrong, workdir)


def test_lora_with_scanned_layers_trains_like_per_layer_layers(experiment, tmp_path):
    """build_run takes PEFT with model.scan_layers (it used to refuse it): without dropout (whose per-layer keys
    differ under the scan) four steps end at the per-layer run's params. Plain SGD, because Adam's first steps
    are sign-like and would blow float-rounding differences of near-zero gradients up to a learning rate."""
    from mgpt import peft

    overrides = ("peft.dropout=0.0", "model.dropout=0.0", "optimizer.name=sgd")
    _, _, plain, _ = _train(_config(experiment, *overrides), str(tmp_path / "plain"))
    run, _, scanned, finished = _train(_config(experiment, *overrides, "model.scan_layers=true"), str(tmp_path / "scan"))
    assert finished and "h" in scanned["peft"]["lora"]["backbone"]
    back = peft.to_unscanned(scanned, run.spec)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(plain)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(back)):
        np.testing.assert_allclose(a, b, atol=1e-5)
