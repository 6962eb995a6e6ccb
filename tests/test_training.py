"""The training core: exact accumulation, one compilation, sharded == unsharded, exact resume."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import config as config_lib
from mgpt import optim, parallel
from mgpt.config import ParallelConfig
from mgpt.train import loop, reporting, setup
from mgpt.train import state as state_lib
from mgpt.train.step import gradients, train_step

from fixtures_tiny import tiny_gpt2, write_classification_experiment


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cls")
    model_dir = tiny_gpt2(directory / "model")
    return write_classification_experiment(str(directory), model_dir)


def _config(experiment, *overrides):
    return config_lib.apply_overrides(config_lib.load_experiment(experiment), list(overrides))


def _tree_max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_accumulated_micro_batches_equal_one_big_batch(experiment):
    config = _config(experiment, "optimizer.name=sgd", "optimizer.max_grad_norm=0", "optimizer.schedule=constant",
                     "optimizer.warmup_steps=0", "optimizer.learning_rate=0.5")
    run = setup.build_run(config)
    batches = run.batches("train", 16, shuffle=True)
    batch = batches.steps_per_epoch and batches.batch_at(batches.steps_per_epoch - 1)  # the short, padded one
    assert batch["example_weight"].sum() < 16  # padding rows really are present
    rng = jax.random.PRNGKey(0)
    # jitted, as the trainer runs them (one compilation each instead of op-by-op dispatch of every primitive)
    g1, s1, c1 = jax.jit(functools.partial(gradients, model=run.model, task=run.task, accumulation_steps=1))(
        run.params, batch, rng)
    g4, s4, c4 = jax.jit(functools.partial(gradients, model=run.model, task=run.task, accumulation_steps=4))(
        run.params, batch, rng)
    assert float(c1) == float(c4) == float(batch["example_weight"].sum())
    np.testing.assert_allclose(s1, s4, rtol=1e-6)
    # float32 sums in another order: equal to rounding, relative to the largest gradient entry
    largest = max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(g1))
    assert _tree_max_diff(g1, g4) < 1e-6 * max(largest, 1.0)

    optimizer = optim.make_optimizer(config.optimizer, 10, run.params)
    mesh = parallel.make_mesh(ParallelConfig(num_devices=1))
    results = []
    for k in (1, 4):
        state, _ = state_lib.create_state(run.params, optimizer, 0, mesh)
        step = jax.jit(functools.partial(train_step, model=run.model, task=run.task, optimizer=optimizer,
                                         accumulation_steps=k))
        state, metrics = step(state, batch)
        results.append((state["params"], float(metrics["loss"])))
    assert _tree_max_diff(results[0][0], results[1][0]) < 1e-6
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


def test_sharded_equals_single_device(experiment):
    assert jax.device_count() == 8, "tests/conftest.py must set up 8 simulated devices"
    # Adam divides each gradient by its own scale: where the true gradient is exactly zero (the attention key
    # bias, which softmax cancels) it turns float rounding, which differs with the reduction order, into
    # steps of up to the learning rate. A larger eps keeps those steps at rounding size on both meshes.
    config = _config(experiment, "train.batch_size=16", "optimizer.kwargs={eps: 1.0e-6}")
    run = setup.build_run(config)
    batches = run.batches("train", 16, shuffle=True)
    optimizer = optim.make_optimizer(config.optimizer, 10, run.params)
    final = []
    for devices in (1, 8):
        mesh = parallel.make_mesh(ParallelConfig(num_devices=devices))
        state, shardings = state_lib.create_state(run.params, optimizer, 0, mesh)
        step = jax.jit(functools.partial(train_step, model=run.model, task=run.task, optimizer=optimizer),
                       donate_argnums=0, out_shardings=(shardings, None))
        for i in range(3):
            state, _ = step(state, parallel.shard_batch(batches.batch_at(i), mesh))
        leaf = jax.tree_util.tree_leaves(state["params"])[0]
        assert len(leaf.sharding.device_set) == devices
        final.append(jax.device_get(state["params"]))
    assert _tree_max_diff(final[0], final[1]) < 1e-5


def test_step_compiles_once_across_epochs_and_short_batches(experiment, tmp_path):
    config = _config(experiment, "train.num_epochs=3", "train.eval_every=0")
    loop.train(config, str(tmp_path / "run"))
    events = reporting.read_metrics(str(tmp_path / "run"))
    # 44 examples, batch 8: 6 steps per epoch, the last one short (4 real rows); 3 epochs = 18 steps,
    # with evaluations (16 and 20 examples, batch 8: short last batches too) after each epoch.
    assert max(e["step"] for e in events if e["kind"] == "train") == 18
    assert len([e for e in events if e["kind"] == "eval"]) == 3
    compilations = [e for e in events if "train_step_compilations" in e][-1]
    assert compilations["train_step_compilations"] == 1
    assert compilations["eval_step_compilations"] == 1


def _final_state_params(workdir, config):
    run = setup.build_run(config)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(run.mesh)), run.params)
    from mgpt.train.checkpoint import restore_params

    params, _, where = restore_params(os.path.join(workdir, "checkpoints"), target)
    return params, where


def test_stop_and_resume_equals_straight_run(experiment, tmp_path):
    config = _config(experiment, "train.max_steps=6", "train.eval_every=100", "checkpoint.keep_best=false")
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train(config, straight)
    assert loop.train(config, resumed, stop_after=3) == {}
    assert not os.path.exists(os.path.join(resumed, "eval_test.json"))  # it really stopped early
    loop.train(config, resumed)

    a, where_a = _final_state_params(straight, config)
    b, where_b = _final_state_params(resumed, config)
    assert where_a.endswith("step 6") and where_b.endswith("step 6")
    assert _tree_max_diff(a, b) < 1e-6
    seen = {}
    for name, workdir in (("straight", straight), ("resumed", resumed)):
        events = [e for e in reporting.read_metrics(workdir) if e["kind"] == "train"]
        seen[name] = [(e["step"], e["batch_fingerprint"]) for e in events]
    assert seen["straight"] == seen["resumed"]
    assert [s for s, _ in seen["resumed"]] == [1, 2, 3, 4, 5, 6]  # no duplicates after resuming
    with open(os.path.join(resumed, "eval_test.json")) as f:
        resumed_report = json.load(f)
    with open(os.path.join(straight, "eval_test.json")) as f:
        straight_report = json.load(f)
    assert resumed_report["accuracy"] == straight_report["accuracy"]


def test_train_writes_reports_curves_and_keeps_best(experiment, tmp_path):
    config = _config(experiment, "train.eval_every=3")
    workdir = str(tmp_path / "run")
    reports = loop.train(config, workdir)
    for name in ("config.json", "metrics.jsonl", "eval_validation.json", "eval_test.json", "training_curves.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert config_lib.from_dict(config_lib.ExperimentConfig, json.load(f)) == config
    report = reports["test"]
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == 20
    np.testing.assert_allclose(report["accuracy"], np.trace(matrix) / 20)
    evals = [e for e in reporting.read_metrics(workdir) if e["kind"] == "eval"]
    best = max(evals, key=lambda e: e["validation/accuracy"])
    assert f"step {best['step']}" in report["params"]


def test_early_stopping_stops_and_a_rerun_does_not_train_on(experiment, tmp_path):
    # A learning rate of 0 never improves the validation accuracy after the first evaluation.
    config = _config(experiment, "optimizer.learning_rate=0.0", "train.eval_every=1", "train.max_steps=20",
                     "train.early_stopping_patience=2")
    workdir = str(tmp_path / "run")
    loop.train(config, workdir)
    steps = [e["step"] for e in reporting.read_metrics(workdir) if e["kind"] == "train"]
    assert steps == [1, 2, 3]  # best at 1, then two evaluations without improvement
    loop.train(config, workdir)
    assert [e["step"] for e in reporting.read_metrics(workdir) if e["kind"] == "train"] == [1, 2, 3]
