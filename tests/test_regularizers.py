"""Fine-tuning regularizers in the optimizer: layer-wise lr decay, L2-SP and the EMA of the weights."""

import dataclasses
import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import config as config_lib
from mgpt import load_pretrained, optim, parallel
from mgpt import peft as peft_lib
from mgpt.config import ConfigError, OptimizerConfig, PeftConfig
from mgpt.train import checkpoint as checkpoint_lib
from mgpt.train import engine as engine_lib
from mgpt.train import evaluation, loop, reporting, setup
from mgpt.train import state as state_lib
from mgpt.train.step import apply_gradients
from mgpt.train.validate import validate

import family_checkpoints
from fixtures_tiny import tiny_bert, tiny_gpt2, write_classification_experiment

optim_is_ema = lambda node: isinstance(node, optim.EmaState)  # noqa: E731
D = 0.5  # layer_lr_decay in the factor tests: distinct powers per layer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("llrd")
    family_checkpoints.make_checkpoint(root / "llama", "llama", "sequence_classification")
    return {"gpt2": tiny_gpt2(root / "gpt2"), "bert": tiny_bert(root / "bert"), "llama": str(root / "llama")}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cls")
    return write_classification_experiment(str(directory), tiny_gpt2(directory / "model"))


def _model(checkpoints, family, scan=False, peft="none"):
    model, params, spec, _ = load_pretrained(checkpoints[family], task="sequence_classification", num_labels=3,
                                             scan_layers=scan)
    mask = None
    if peft != "none":
        model, params = peft_lib.wrap(model, params, spec, PeftConfig(method=peft), jax.random.PRNGKey(0))
        mask = model.trainable_mask(params)
    return model, params, mask


def _flat(tree):
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _names(tree):
    return {"/" + "/".join(str(k.key) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _expected_factor(name, shape, layers):
    """The LLRD rule written out for the tiny models' parameter names."""
    if re.search(r"/head/", name):
        return 1.0
    per_layer = re.search(r"/(?:h|layers|layer)_(\d+)/", name)
    if per_layer:
        return D ** (layers - int(per_layer.group(1)))
    if re.search(r"/backbone/(?:h|layers)/", name):  # scanned: the stack's leading axis is the layer
        return (D ** (layers - np.arange(layers))).reshape((layers,) + (1,) * (len(shape) - 1))
    if re.search(r"/backbone/(?:wte|wpe|embed_tokens|embeddings)/", name):
        return D ** (layers + 1)
    if re.search(r"/backbone/(?:ln_f|norm|pooler)/", name):
        return 1.0
    raise AssertionError(f"no expected factor for {name}")


CASES = [("gpt2", False, "none"), ("gpt2", True, "none"), ("bert", False, "none"), ("llama", False, "none"),
         ("llama", True, "none"), ("gpt2", False, "lora"), ("llama", True, "lora")]


@pytest.mark.parametrize("family,scan,peft", CASES, ids=lambda v: str(v))
def test_layer_factors_per_family_scan_and_lora(checkpoints, family, scan, peft):
    _, params, _ = _model(checkpoints, family, scan, peft)
    layers = 2  # every tiny model has two layers
    assert optim.num_layers(params) == layers
    factors, shapes = _names(optim.layer_lr_factors(params, D)), _names(params)
    assert factors.keys() == shapes.keys()
    seen = set()
    for name, factor in factors.items():
        expected = _expected_factor(name, np.shape(shapes[name]), layers)
        np.testing.assert_allclose(np.asarray(factor), expected, rtol=1e-7, err_msg=name)
        if np.ndim(expected):
            assert np.shape(factor) == np.shape(expected), name  # broadcasts over the stacked layer axis only
        seen.add(float(np.min(expected)))
    assert D ** (layers + 1) in seen and 1.0 in seen  # embeddings and head found
    if peft == "lora":
        lora = [n for n in factors if "/peft/lora/" in n]
        assert lora and all(np.max(factors[n]) < 1 for n in lora)  # LoRA params decay with their layer


def test_layer_decay_needs_layers():
    with pytest.raises(ConfigError, match="optimizer.layer_lr_decay=0.9: no transformer layer"):
        optim.layer_lr_factors({"head": {"kernel": np.zeros((2, 2))}}, 0.9)
    assert optim.layer_lr_factors({"head": {"kernel": np.zeros((2, 2))}}, 1.0) == {"head": {"kernel": 1.0}}


def _random_like(tree, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: (scale * rng.normal(size=x.shape)).astype(np.float32), tree)


@pytest.mark.parametrize("name,family,scan,peft", [("sgd", "gpt2", False, "none"), ("sgd", "llama", True, "none"),
                                                   ("adamw", "bert", False, "none"), ("adamw", "gpt2", True, "lora")],
                         ids=lambda v: str(v))
def test_layer_decay_scales_the_plain_update(checkpoints, name, family, scan, peft):
    _, params, mask = _model(checkpoints, family, scan, peft)
    if mask is None:  # freeze the position / token embeddings: frozen params still get no update
        mask = jax.tree_util.tree_map(lambda n: "embed" not in n and "wpe" not in n, optim.path_names(params))
    grads = _random_like(params, 1)
    # clipping (active: random gradients have a norm far above 1) and decoupled weight decay compose too
    base = OptimizerConfig(name=name, learning_rate=0.1, schedule="constant", max_grad_norm=1.0,
                           weight_decay=0.01 if name == "adamw" else 0.0)
    updates = {}
    for decay in (1.0, D):
        tx = optim.make_optimizer(dataclasses.replace(base, layer_lr_decay=decay), 10, params, trainable_mask=mask)
        updates[decay], _ = jax.jit(tx.update)(grads, tx.init(params), params)
    factors = optim.layer_lr_factors(params, D)
    expected = jax.tree_util.tree_map(lambda u, f: u * f, updates[1.0], factors)
    for key, got in _flat(updates[D]).items():
        np.testing.assert_allclose(np.asarray(got), np.asarray(_flat(expected)[key]), atol=1e-6, rtol=1e-6,
                                   err_msg=key)
    for key, trained in _flat(mask).items():
        if not trained:
            assert not np.any(np.asarray(_flat(updates[D])[key])), key
    scaled = [k for k, f in _flat(factors).items() if np.max(f) < 1 and _flat(mask)[k]]
    assert scaled and any(np.any(np.asarray(_flat(updates[D])[k])) for k in scaled)


# ------------------------------------------------------------------------------------------------ L2-SP


def _l2_sp_mask(params, frozen):
    return jax.tree_util.tree_map(lambda n: frozen not in n, optim.path_names(params))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_l2_sp_update_is_minus_lr_rate_times_distance_to_the_start(checkpoints, name):
    _, theta0, _ = _model(checkpoints, "gpt2")
    mask = _l2_sp_mask(theta0, "h_0/")  # layer 0 frozen
    cfg = OptimizerConfig(name=name, learning_rate=0.1, schedule="linear", l2_sp=0.5, weight_decay=0.0,
                          max_grad_norm=0.0)
    tx = optim.make_optimizer(cfg, 10, theta0, trainable_mask=mask)
    state = tx.init(theta0)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, theta0)
    theta = jax.tree_util.tree_map(lambda p, n: p + n, theta0, _random_like(theta0, 2, 0.1))
    names = optim.path_names(theta0)
    for lr in (0.1, 0.09):  # the optimizer's linear schedule over 10 steps: lr(0), lr(1)
        updates, state = jax.jit(tx.update)(zeros, state, theta)
        for key, got in _flat(updates).items():
            name_ = _flat(names)[key]
            pulled = name_.startswith("backbone/") and "h_0/" not in name_
            expected = -lr * 0.5 * (np.asarray(_flat(theta)[key]) - np.asarray(_flat(theta0)[key])) if pulled else 0.0
            np.testing.assert_allclose(np.asarray(got), expected, atol=1e-7, rtol=1e-5, err_msg=name_)
        theta = jax.tree_util.tree_map(lambda p, u: p + u, theta, updates)


def _final_state(workdir, config, run=None):
    """The run's latest full train state, restored from its checkpoints/."""
    run = run or setup.build_run(config)
    optimizer = optim.make_optimizer(config.optimizer, 1, run.params, trainable_mask=run.trainable)
    abstract = state_lib.abstract_state(run.params, optimizer, config.train.seed)
    target = state_lib.restore_target(run.params, optimizer, config.train.seed,
                                      parallel.state_shardings(abstract, run.mesh))
    checkpoints = checkpoint_lib.Checkpoints(workdir, config.checkpoint)
    try:
        state, _ = checkpoints.restore(target)
    finally:
        checkpoints.close()
    return run, jax.device_get(state)


def _config(experiment, *overrides):
    return config_lib.apply_overrides(config_lib.load_experiment(experiment), list(overrides))


def _straight_and_resumed(config, tmp_path):
    """Four steps straight, and two steps, a checkpoint, a restore and two more, resumed as the loop does
    (Checkpoints.save of the engine's state, restore onto engine.restore_target); both final states and the run."""
    run = setup.build_run(config)
    engine = engine_lib.make_engine("jit", run.mesh, run.model, run.task,
                                    optim.make_optimizer(config.optimizer, 4, run.params), layout=run.layout)
    batches = run.batches("train", 8, shuffle=True)

    def train(state, steps):
        for i in steps:
            state, _ = engine.step(state, batches.batch_at(i))
        return state

    straight = jax.device_get(train(engine.create_state(run.params, 0), range(4)))
    checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), config.checkpoint)
    try:
        checkpoints.save(2, engine.checkpoint_view(train(engine.create_state(run.params, 0), range(2))), {})
        checkpoints.wait()
        restored, _ = checkpoints.restore(engine.restore_target(run.params, 0))
    finally:
        checkpoints.close()
    return run, straight, jax.device_get(train(engine.from_checkpoint(restored), range(2, 4)))


def test_l2_sp_keeps_the_pretrained_anchor_across_a_resume(experiment, tmp_path):
    """The resumed run pulls toward the same theta0 and ends bitwise where the uninterrupted one does."""
    config = _config(experiment, "optimizer.l2_sp=2.0", "optimizer.weight_decay=0", "parallel.num_devices=1")
    run, straight, resumed = _straight_and_resumed(config, tmp_path)
    for x, y in zip(jax.tree_util.tree_leaves(straight["params"]), jax.tree_util.tree_leaves(resumed["params"])):
        np.testing.assert_array_equal(x, y)
    is_l2_sp = lambda node: isinstance(node, optim.L2SPState)  # noqa: E731
    anchors = [node for node in jax.tree_util.tree_leaves(resumed["opt_state"], is_leaf=is_l2_sp) if is_l2_sp(node)]
    assert len(anchors) == 1
    anchor, start = anchors[0].anchor, jax.device_get(run.params)
    assert not jax.tree_util.tree_leaves(anchor["head"])  # the head has no pretrained value: no anchor
    for key, value in _flat(anchor["backbone"]).items():
        np.testing.assert_array_equal(value, _flat(start["backbone"])[key])  # theta0 is the pretrained start
    moved = _flat(resumed["params"]["backbone"])
    assert any(np.any(v != moved[k]) for k, v in _flat(start["backbone"]).items())  # and training moved away


# ------------------------------------------------------------------------------------------------ EMA


@pytest.mark.parametrize("trainable,warmup", [("all", False), ("head/|h_1/", False), ("head/|h_1/", True)])
def test_ema_is_the_recursion_over_the_params_and_skips_nonfinite_steps(checkpoints, trainable, warmup):
    _, params, _ = _model(checkpoints, "gpt2")
    mask = None if trainable == "all" else optim.trainable_mask(params, trainable)
    cfg = OptimizerConfig(name="adamw", learning_rate=0.05, schedule="constant", ema_decay=0.6, ema_warmup=warmup)
    optimizer = optim.make_optimizer(cfg, 10, params, trainable_mask=mask)
    state = jax.jit(lambda p: state_lib.init_state(p, optimizer, 0))(params)
    # the update half of the train step: summed gradients in, new params and optimizer state out
    apply = jax.jit(functools.partial(apply_gradients, optimizer=optimizer))
    one, count = jnp.float32(1.0), jnp.float32(1.0)
    expected = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), jax.device_get(params))
    for i in range(4):
        state, metrics = apply(state, _random_like(params, 10 + i), one, count)
        assert float(metrics["nonfinite"]) == 0.0
        # with the warm-up, update t (1-based) decays by min(0.6, (1 + t) / (10 + t)): 2/11, 3/12, 4/13, 5/14
        d = min(0.6, (2 + i) / (11 + i)) if warmup else 0.6
        expected = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * np.asarray(p, np.float64), expected,
                                          jax.device_get(state["params"]))
    ema = jax.device_get(optim.ema_params(state["opt_state"], state["params"]))
    for key, value in _flat(ema).items():
        np.testing.assert_allclose(value, _flat(expected)[key], atol=1e-6, err_msg=key)
    live = _flat(jax.device_get(state["params"]))
    assert any(np.max(np.abs(v - live[k])) > 1e-3 for k, v in _flat(ema).items())  # not the live params

    # A step with non-finite gradients is skipped: the average (kept in the optimizer state) does not move.
    nan = jax.tree_util.tree_map(lambda p: np.full(p.shape, np.nan, np.float32), params)
    skipped, metrics = apply(state, nan, one, count)
    assert float(metrics["nonfinite"]) == 1.0
    for key, value in _flat(jax.device_get(optim.ema_params(skipped["opt_state"], skipped["params"]))).items():
        np.testing.assert_array_equal(value, _flat(ema)[key], err_msg=key)
    counts = [node.count for node in jax.tree_util.tree_leaves(skipped["opt_state"], is_leaf=optim_is_ema)
              if optim_is_ema(node)]
    assert counts == ([4] if warmup else [None])  # the skipped step is not counted; no count without the warm-up
    plain = optim.make_optimizer(dataclasses.replace(cfg, ema_decay=0.0), 10, params, trainable_mask=mask)
    assert optim.ema_params(plain.init(params), params) is None  # ema_decay 0: no average kept


def test_ema_warmup_keeps_its_count_across_a_resume(experiment, tmp_path):
    """The warm-up's update count is checkpointed: a resumed average is bitwise the uninterrupted one."""
    config = _config(experiment, "optimizer.ema_decay=0.9", "optimizer.ema_warmup=true", "parallel.num_devices=1")
    _, straight, resumed = _straight_and_resumed(config, tmp_path)
    for part in ("params", "opt_state"):
        for x, y in zip(jax.tree_util.tree_leaves(straight[part]), jax.tree_util.tree_leaves(resumed[part])):
            np.testing.assert_array_equal(x, y)
    (node,) = [n for n in jax.tree_util.tree_leaves(resumed["opt_state"], is_leaf=optim_is_ema) if optim_is_ema(n)]
    assert int(node.count) == 4
    assert float(optim.ema_warmup_decay(0.9, 4)) == pytest.approx(5 / 14)
    assert float(optim.ema_warmup_decay(0.9, 1000)) == pytest.approx(0.9)  # capped at optimizer.ema_decay
    with pytest.raises(ConfigError, match="optimizer.ema_warmup=True: .*optimizer.ema_decay is 0"):
        validate(_config(experiment, "optimizer.ema_warmup=true"))


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_evaluation_and_inference_use_the_ema_weights(experiment, tmp_path, mode):
    config = _config(experiment, "optimizer.ema_decay=0.7", "train.max_steps=4", "train.eval_every=4",
                     "checkpoint.keep_best=false", "train.final_eval_splits=[test]", f"parallel.mode={mode}",
                     f"parallel.num_devices={2 if mode == 'pmap' else 1}")
    assert config.train.eval_ema  # the default
    workdir = str(tmp_path / "run")
    reports = loop.train(config, workdir)
    (event,) = [e for e in reporting.read_metrics(workdir) if e["kind"] == "eval"]
    run, state = _final_state(workdir, config)
    ema = optim.ema_params(state["opt_state"], state["params"])
    _, with_ema = evaluation.evaluate_split(run, ema, "validation")
    _, with_live = evaluation.evaluate_split(run, state["params"], "validation")
    assert abs(with_ema["loss"] - with_live["loss"]) > 1e-4  # the two really differ
    np.testing.assert_allclose(event["validation/loss"], with_ema["loss"], rtol=1e-5)
    _, test_scalars = evaluation.evaluate_split(run, ema, "test")
    np.testing.assert_allclose(reports["test"]["loss"], test_scalars["loss"], rtol=1e-5)
    with open(os.path.join(workdir, "eval_test.json")) as f:
        np.testing.assert_allclose(json.load(f)["loss"], test_scalars["loss"], rtol=1e-5)
    # mgpt eval / predict / convert restore through load_for_inference: the average, for a run that evaluated it
    _, restored, where = setup.load_for_inference(config, os.path.join(workdir, "checkpoints"))
    assert where.endswith("step 4")
    for key, value in _flat(restored).items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(_flat(ema)[key]), atol=1e-7, err_msg=key)
