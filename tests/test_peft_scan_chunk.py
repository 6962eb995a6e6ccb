"""PEFT with scanned layers and with the chunked causal-LM loss: the same loss and gradients as the plain
per-layer model with full logits; the wrapper's ``init`` and ``method=`` behave like the Linen model's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import parallel, peft
from mgpt.config import ConfigError, ParallelConfig, PeftConfig
from mgpt.models import load_pretrained
from mgpt.models import scan as scan_lib
from mgpt.models.partitioning import unboxed
from mgpt.tasks import get_task
from mgpt.train.step import gradients

from fixtures_tiny import tiny_gpt2
from test_sharding_rules import _batch, tiny_llama

METHOD_SETTINGS = {
    "lora": dict(rank=2),
    "dora": dict(rank=2),
    "ia3": {},
    "adapter": dict(adapter_size=3),
    "prefix": dict(num_virtual_tokens=3),
    "prompt": dict(num_virtual_tokens=3),
    "bitfit": {},
}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Per family: the per-layer model, its params and spec, and the scanned model and spec."""
    root = tmp_path_factory.mktemp("peft_scan")
    out = {}
    for name, make in (("gpt2", tiny_gpt2), ("llama", tiny_llama)):
        directory = make(root / name)
        model, params, spec, _ = load_pretrained(directory, task="causal_lm", dropout=0.0)
        scanned, _, scanned_spec, _ = load_pretrained(directory, task="causal_lm", dropout=0.0, scan_layers=True)
        out[name] = (model, params, spec, scanned, scanned_spec)
    return out


def _perturb(tree, seed, scale=0.1):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _max_diff(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _grads(model, params, chunk=0):
    """Mean loss and mean-loss gradients over ``_batch()`` (dropout on, as in training)."""
    task = get_task("causal_lm", loss_chunk_size=chunk)
    g, s, c = jax.jit(lambda p: gradients(p, _batch(), jax.random.PRNGKey(0), model=model, task=task))(params)
    return float(s / c), jax.tree_util.tree_map(lambda x: x / c, g)


def _pair(families, family, method):
    """The per-layer and the scanned PEFT model with the same (perturbed, so non-trivial) params."""
    model, params, spec, scanned, scanned_spec = families[family]
    cfg = PeftConfig(method=method, **METHOD_SETTINGS[method])
    peft_model, p = peft.wrap(model, params, spec, cfg, jax.random.PRNGKey(1))
    scanned_model, fresh = peft.wrap(scanned, scan_lib.to_scanned(params, spec), scanned_spec, cfg,
                                     jax.random.PRNGKey(1))
    # both layouts start from the same values (the same random draws; DoRA's column norms up to rounding)
    assert _max_diff(fresh, peft.to_scanned(p, scanned_spec)) < 1e-6
    p = {"base": p["base"], "peft": _perturb(p["peft"], 2)}
    return peft_model, p, scanned_model, peft.to_scanned(p, scanned_spec)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
def test_scanned_and_chunked_equal_plain_loss_and_gradients(families, family, method):
    peft_model, p, scanned_model, stacked = _pair(families, family, method)
    loss, grads = _grads(peft_model, p)
    loss_s, grads_s = _grads(scanned_model, stacked)
    spec = families[family][4]
    assert abs(loss - loss_s) < 1e-5
    assert _max_diff(grads, peft.to_unscanned(grads_s, spec)) < 1e-5
    loss_c, grads_c = _grads(peft_model, p, chunk=4)  # 15 scored positions: the last chunk is padded
    assert abs(loss - loss_c) < 1e-5
    assert _max_diff(grads, grads_c) < 1e-5
    if method in ("lora", "adapter", "prompt"):  # both at once
        loss_sc, grads_sc = _grads(scanned_model, stacked, chunk=4)
        assert abs(loss - loss_sc) < 1e-5
        assert _max_diff(grads, peft.to_unscanned(grads_sc, spec)) < 1e-5
    trained = [x for x, t in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(peft_model.trainable_mask(p)))
               if t]
    assert max(float(jnp.abs(x).max()) for x in trained) > 1e-4  # the comparison is not between zeros


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lora_dropout_under_scan_drops_per_layer_and_matches_without_drops(families, family):
    """Training-time LoRA dropout (an interceptor reading A/B beside the kernel) runs inside the scan: with a
    negligible rate it equals the merged weights; with a real rate it differs from them."""
    model, params, spec, scanned, scanned_spec = families[family]
    ids = jnp.asarray(_batch()["input_ids"])
    outs = {}
    for rate in (1e-9, 0.5):
        cfg = PeftConfig(method="lora", rank=2, dropout=rate)
        _, p = peft.wrap(model, params, spec, cfg, jax.random.PRNGKey(1))
        stacked = peft.to_scanned({"base": p["base"], "peft": _perturb(p["peft"], 3)}, scanned_spec)
        scanned_model, _ = peft.wrap(scanned, stacked["base"], scanned_spec, cfg, jax.random.PRNGKey(1))
        train = scanned_model.apply({"params": stacked}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(4)})
        merged = scanned.apply({"params": peft.merge(stacked, cfg)}, ids)
        outs[rate] = float(jnp.abs(train - merged).max())
    assert outs[1e-9] < 1e-4
    assert outs[0.5] > 1e-2


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_scanned_merge_equals_per_layer_merge(families, method):
    _, _, _, scanned, spec = families["llama"]
    peft_model, p, scanned_model, stacked = _pair(families, "llama", method)
    merged = peft.merge(stacked, scanned_model.cfg)
    assert _max_diff(merged, scan_lib.to_scanned(peft.merge(p, peft_model.cfg), spec)) < 1e-6
    ids = jnp.asarray(_batch()["input_ids"])
    assert _max_diff(scanned.apply({"params": merged}, ids), scanned_model.apply({"params": stacked}, ids)) < 1e-5
    if method != "dora":
        back = peft.unmerge(merged, stacked["peft"], scanned_model.cfg)
        assert _max_diff(back, stacked) < 1e-5


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt"])
def test_wrapper_init_and_methods_act_like_the_linen_model(families, method):
    model, params, spec, _, _ = families["gpt2"]
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method=method, **METHOD_SETTINGS[method]),
                              jax.random.PRNGKey(1))
    ids = jnp.asarray(_batch()["input_ids"])
    abstract = jax.eval_shape(lambda: peft_model.init(jax.random.PRNGKey(0), ids[:1]))
    shapes = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), unboxed(abstract["params"]))
    assert shapes == jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), p)
    # method="encode" then "project" is the whole model (prompt tuning trims its virtual positions in both)
    hidden = peft_model.apply({"params": p}, ids, method="encode").last_hidden_state
    assert hidden.shape == (*ids.shape, spec.arch.n_embd)
    logits = peft_model.apply({"params": p}, hidden, method="project")
    assert _max_diff(logits, peft_model.apply({"params": p}, ids)) < 1e-5
    # the layout reads the logical axes through the wrapper's abstract init: base params keep their names
    layout = parallel.make_layout(ParallelConfig(rules="fsdp"), parallel.make_mesh(ParallelConfig()), peft_model)
    assert layout.logical[("base", "backbone", "wte", "embedding")][0] == ("vocab", "embed")


def test_registry_names_methods_and_trainable_home(families):
    model, params, spec, _, _ = families["gpt2"]
    assert set(METHOD_SETTINGS) <= set(peft.METHODS)
    with pytest.raises(ConfigError, match="peft.method='nope': expected one of none, .*lora"):
        peft.get_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        peft.register_method(peft.get_method("lora"))
    assert peft.get_method("prefix").peft_format is None and peft.get_method("dora").peft_format.peft_type == "LORA"
    # optimizer.trainable's extra params live in the wrapper; nothing outside patches it
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method="lora", rank=2), jax.random.PRNGKey(1),
                              extra_trainable="ln_f")
    mask = peft_model.trainable_mask(p)
    assert mask["base"]["backbone"]["ln_f"] == {"scale": True, "bias": True}
    assert not mask["base"]["backbone"]["wte"]["embedding"]
    assert not peft_model.with_trainable(None).trainable_mask(p)["base"]["backbone"]["ln_f"]["scale"]
    with pytest.raises(ConfigError, match="matches no parameter"):
        peft.wrap(model, params, spec, PeftConfig(method="lora", rank=2), jax.random.PRNGKey(1), extra_trainable="^xyz")
