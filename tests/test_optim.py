import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mgpt import optim
from mgpt.config import ConfigError, OptimizerConfig

PARAMS = {
    "backbone": {
        "layer_0": {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
                    "LayerNorm": {"scale": jnp.ones((2,)), "bias": jnp.ones((2,))}},
        "ln_f": {"scale": jnp.ones((2,))},
    },
    "head": {"classifier": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones((4,))}},
}


def _grads(value=0.5):
    return jax.tree_util.tree_map(lambda p: jnp.full_like(p, value), PARAMS)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "lion", "adafactor", "lamb", "rmsprop", "adagrad"])
def test_any_optax_optimizer_by_name(name):
    cfg = OptimizerConfig(name=name, learning_rate=0.1, schedule="constant", max_grad_norm=0.0)
    tx = optim.make_optimizer(cfg, 10, PARAMS)
    updates, _ = tx.update(_grads(), tx.init(PARAMS), PARAMS)
    reference = getattr(optax, name)(learning_rate=0.1)
    if name in ("adamw", "lamb", "lion"):  # decoupled decay is off by default in mgpt (weight_decay=0)
        reference = getattr(optax, name)(learning_rate=0.1, weight_decay=0.0)
    expected, _ = reference.update(_grads(), reference.init(PARAMS), PARAMS)
    for a, b in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unknown_optimizer_and_kwargs_fail_clearly():
    with pytest.raises(ConfigError, match="adamw"):
        optim.make_optimizer(OptimizerConfig(name="adamx"), 10, PARAMS)
    with pytest.raises(ConfigError, match="beta1"):
        optim.make_optimizer(OptimizerConfig(name="adam", kwargs={"beta1": 0.9}), 10, PARAMS)


def test_optimizer_kwargs_reach_the_factory():
    cfg = OptimizerConfig(name="sgd", learning_rate=1.0, schedule="constant", max_grad_norm=0.0,
                          kwargs={"momentum": 0.5})
    tx = optim.make_optimizer(cfg, 10, PARAMS)
    state = tx.init(PARAMS)
    _, state = tx.update(_grads(1.0), state, PARAMS)
    updates, _ = tx.update(_grads(1.0), state, PARAMS)
    # momentum 0.5: second update is -(1 + 0.5) * lr * g
    np.testing.assert_allclose(updates["head"]["classifier"]["bias"], -1.5)


def test_schedules_with_warmup():
    base = dict(learning_rate=1.0, warmup_steps=2, end_learning_rate_ratio=0.0)
    linear = optim.make_schedule(OptimizerConfig(schedule="linear", **base), 6)
    np.testing.assert_allclose([linear(i) for i in range(7)], [0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)
    constant = optim.make_schedule(OptimizerConfig(schedule="constant", **base), 6)
    np.testing.assert_allclose([constant(i) for i in range(5)], [0, 0.5, 1, 1, 1], atol=1e-7)
    cosine = optim.make_schedule(OptimizerConfig(schedule="cosine", **base), 6)
    np.testing.assert_allclose(cosine(4), 0.5, atol=1e-6)  # half-way through the 4 decay steps
    ratio = optim.make_schedule(OptimizerConfig(schedule="constant", learning_rate=1.0, warmup_ratio=0.5), 10)
    np.testing.assert_allclose(ratio(1), 0.2, atol=1e-7)  # 5 warmup steps
    with pytest.raises(ConfigError, match="schedule"):
        optim.make_schedule(OptimizerConfig(schedule="step"), 6)


def test_weight_decay_skips_biases_and_norms():
    mask = optim.decay_mask(PARAMS)
    assert mask["backbone"]["layer_0"]["dense"]["kernel"] is True
    assert mask["head"]["classifier"]["kernel"] is True
    assert mask["backbone"]["layer_0"]["dense"]["bias"] is False
    assert mask["backbone"]["layer_0"]["LayerNorm"]["scale"] is False
    assert mask["backbone"]["ln_f"]["scale"] is False
    # With zero gradients, adamw's update is just -lr * wd * param, and only where decay applies.
    cfg = OptimizerConfig(name="adamw", learning_rate=0.1, schedule="constant", weight_decay=0.5, max_grad_norm=0.0)
    tx = optim.make_optimizer(cfg, 10, PARAMS)
    updates, _ = tx.update(_grads(0.0), tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["head"]["classifier"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["head"]["classifier"]["bias"], 0.0)
    # sgd has no decoupled decay: classic L2 is added to the gradient, with the same mask.
    cfg = OptimizerConfig(name="sgd", learning_rate=0.1, schedule="constant", weight_decay=0.5, max_grad_norm=0.0)
    tx = optim.make_optimizer(cfg, 10, PARAMS)
    updates, _ = tx.update(_grads(0.0), tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["backbone"]["layer_0"]["dense"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["backbone"]["layer_0"]["LayerNorm"]["bias"], 0.0)


def test_global_norm_clipping():
    cfg = OptimizerConfig(name="sgd", learning_rate=1.0, schedule="constant", max_grad_norm=1.0)
    tx = optim.make_optimizer(cfg, 10, PARAMS)
    updates, _ = tx.update(_grads(10.0), tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)


def test_trainable_head_only_freezes_the_rest_and_holds_no_state_for_it():
    cfg = OptimizerConfig(name="adam", learning_rate=0.1, schedule="constant", trainable="head")
    tx = optim.make_optimizer(cfg, 10, PARAMS)
    state = tx.init(PARAMS)
    updates, _ = tx.update(_grads(), state, PARAMS)
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree_util.tree_leaves(updates["backbone"]))
    assert all(float(jnp.abs(u).max()) > 0 for u in jax.tree_util.tree_leaves(updates["head"]))
    head_size = optim.count_parameters(PARAMS["head"])
    state_size = sum(x.size for x in jax.tree_util.tree_leaves(state) if hasattr(x, "size") and x.ndim > 0)
    assert state_size == 2 * head_size  # adam's mu and nu, for the head only
    assert optim.count_parameters(PARAMS, optim.trainable_mask(PARAMS, "head")) == 8 + 4
    with pytest.raises(ConfigError, match="matches no parameter"):
        optim.trainable_mask(PARAMS, "^nothing")
