"""Each PEFT method against an independent reference: the base model at init, real tokens for prompts and
prefixes, adapters folded into weights by hand, and merged LoRA/DoRA/IA3 (also through transformers)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

from mgpt import peft, save_pretrained
from mgpt.config import ConfigError, PeftConfig
from mgpt.models import load_pretrained

from fixtures_tiny import tiny_bert, tiny_gpt2

P = 3  # virtual tokens


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft_models")
    gpt2_dir, bert_dir = tiny_gpt2(root / "gpt2"), tiny_bert(root / "bert")
    return {
        "gpt2": (gpt2_dir, *load_pretrained(gpt2_dir, task="sequence_classification", num_labels=3, dropout=0.0)),
        "gpt2_tok": (gpt2_dir, *load_pretrained(gpt2_dir, task="token_classification", num_labels=3, dropout=0.0)),
        "bert": (bert_dir, *load_pretrained(bert_dir, task="token_classification", num_labels=3, dropout=0.0)),
    }


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, 30, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[mask == 0] = 0  # GPT-2 in transformers finds the last token by pad id
    return jnp.asarray(ids), jnp.asarray(mask)


def _perturb(tree, seed, scale=0.1):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _wrap(entry, **cfg):
    _, model, params, spec, _ = entry
    return peft.wrap(model, params, spec, PeftConfig(**cfg), jax.random.PRNGKey(0))


def _max_diff(a, b, mask=None):
    a, b = np.asarray(a), np.asarray(b)
    if mask is not None and a.ndim == 3:
        a, b = a[np.asarray(mask).astype(bool)], b[np.asarray(mask).astype(bool)]
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_every_method_starts_as_the_base_model_and_keeps_shapes(models, name):
    _, model, params, spec, _ = models[name]
    ids, mask = _batch()
    ref = model.apply({"params": params}, ids, attention_mask=mask)
    for method in peft.METHODS[1:]:
        peft_model, p = _wrap(models[name], method=method, rank=2, adapter_size=4, num_virtual_tokens=P)
        out = peft_model.apply({"params": p}, ids, attention_mask=mask)
        assert out.shape == ref.shape, method
        if method in ("prompt", "prefix"):  # extra context changes the outputs
            assert _max_diff(out, ref) > 1e-4, method
        else:  # B = 0, adapters' up = 0, IA3 = 1, BitFit adds nothing: exactly the base model
            assert _max_diff(out, ref) == 0.0, method


def test_prompt_tuning_equals_prepending_real_tokens(models):
    _, model, params, spec, _ = models["gpt2_tok"]
    ids, mask = _batch(1)
    prompt_ids = jnp.asarray([[7, 11, 13]], jnp.int32)
    peft_model, p = _wrap(models["gpt2_tok"], method="prompt", num_virtual_tokens=P)
    p["peft"]["prompt"]["embeddings"] = params["backbone"]["wte"]["embedding"][prompt_ids[0]]
    ours = peft_model.apply({"params": p}, ids, attention_mask=mask)
    full_ids = jnp.concatenate([jnp.repeat(prompt_ids, 2, axis=0), ids], axis=1)
    full_mask = jnp.concatenate([jnp.ones((2, P), jnp.int32), mask], axis=1)
    ref = model.apply({"params": params}, full_ids, attention_mask=full_mask)[:, P:]
    assert ours.shape == (2, 7, 3)
    assert _max_diff(ours, ref, mask) < 1e-5


def test_prefix_tuning_equals_the_keys_and_values_of_real_tokens(models):
    """GPT-2 is causal: a run on [prefix tokens, ids] sees, at the ids, exactly the prefix tokens' per-layer keys
    and values plus its own; so prefix tuning with those keys/values (and shifted positions) must match it."""
    _, model, params, spec, _ = models["gpt2_tok"]
    ids, mask = _batch(2)
    prefix_ids = jnp.asarray([[9, 14, 21]] * 2, jnp.int32)
    _, state = model.apply({"params": params}, prefix_ids, capture_intermediates=True, mutable=["intermediates"])
    heads, dim = spec.arch.n_head, spec.arch.n_embd // spec.arch.n_head
    keys, values = [], []
    for i in range(spec.arch.n_layer):
        qkv = state["intermediates"]["backbone"][f"h_{i}"]["attn"]["c_attn"]["__call__"][0][0]
        _, k, v = jnp.split(qkv, 3, axis=-1)
        keys.append(k.reshape(P, heads, dim))
        values.append(v.reshape(P, heads, dim))
    peft_model, p = _wrap(models["gpt2_tok"], method="prefix", num_virtual_tokens=P)
    p["peft"]["prefix"] = {"key": jnp.stack(keys), "value": jnp.stack(values)}
    ours = peft_model.apply({"params": p}, ids, attention_mask=mask, position_ids=P + jnp.arange(7)[None])
    full = model.apply({"params": params}, jnp.concatenate([prefix_ids, ids], axis=1),
                       attention_mask=jnp.concatenate([jnp.ones((2, P), jnp.int32), mask], axis=1))[:, P:]
    assert _max_diff(ours, full, mask) < 1e-5


@pytest.mark.parametrize("placement,sites", [("houlsby", ("attn", "mlp")), ("pfeiffer", ("mlp",))])
def test_adapters_equal_their_folded_linear_map(models, placement, sites):
    """With a large down bias, relu(z) = z: the adapter is the linear map h (I + D U) + b_d U + b_u, which can be
    folded into the projection before it; that folded base model is the reference."""
    _, model, params, spec, _ = models["gpt2"]
    ids, mask = _batch(3)
    size, width = 4, spec.arch.n_embd
    peft_model, p = _wrap(models["gpt2"], method="adapter", adapter_size=size, adapter_placement=placement,
                          adapter_activation="relu")
    folded = traverse_util.flatten_dict(params)
    adapters = traverse_util.flatten_dict(p["peft"]["adapter"])
    assert len(adapters) == 4 * len(sites) * spec.arch.n_layer
    key = jax.random.PRNGKey(5)
    for i in range(spec.arch.n_layer):
        for site in sites:
            where = ("backbone", f"h_{i}", site, "c_proj")
            key, k1, k2, k3 = jax.random.split(key, 4)
            down_k = 0.1 * jax.random.normal(k1, (width, size))
            down_b = jnp.full((size,), 50.0)
            up_k = 0.1 * jax.random.normal(k2, (size, width))
            up_b = 0.1 * jax.random.normal(k3, (width,))
            for leaf, value in ((("adapter_down", "kernel"), down_k), (("adapter_down", "bias"), down_b),
                                (("adapter_up", "kernel"), up_k), (("adapter_up", "bias"), up_b)):
                adapters[where + leaf] = value
            linear = jnp.eye(width) + down_k @ up_k
            w, b = folded[where + ("kernel",)], folded[where + ("bias",)]
            folded[where + ("kernel",)] = w @ linear
            folded[where + ("bias",)] = b @ linear + down_b @ up_k + up_b
    p["peft"]["adapter"] = traverse_util.unflatten_dict(adapters)
    ours = peft_model.apply({"params": p}, ids, attention_mask=mask)
    ref = model.apply({"params": traverse_util.unflatten_dict(folded)}, ids, attention_mask=mask)
    assert _max_diff(ours, ref) < 1e-4 * float(jnp.abs(ref).max())


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_dropout_path_equals_weight_path_without_drops(models, method):
    """Training with dropout runs LoRA/DoRA as an added output path; with nothing dropped it is the same map."""
    ids, mask = _batch(4)
    peft_model, p = _wrap(models["bert"], method=method, rank=2, dropout=1e-9)
    p["peft"] = _perturb(p["peft"], 1)
    train_path = peft_model.apply({"params": p}, ids, attention_mask=mask, deterministic=False,
                                  rngs={"dropout": jax.random.PRNGKey(0)})
    weight_path = peft_model.apply({"params": p}, ids, attention_mask=mask)
    assert _max_diff(train_path, weight_path, mask) < 1e-5
    seen = []
    def spy(next_fun, args, kwargs, context):  # the dropout path really ran
        seen.append(context.module.path)
        return next_fun(*args, **kwargs)
    with nn.intercept_methods(spy):
        peft_model.apply({"params": p}, ids, attention_mask=mask, deterministic=False,
                         rngs={"dropout": jax.random.PRNGKey(0)})
    assert seen


def test_rslora_scale(models):
    peft_model, p = _wrap(models["bert"], method="lora", rank=4, alpha=8.0, use_rslora=True)
    p["peft"] = _perturb(p["peft"], 2)
    merged = peft.merge(p, peft_model.cfg)
    path = ("backbone", "encoder", "layer_0", "attention", "self", "query")
    lora_p = traverse_util.flatten_dict(p["peft"]["lora"])
    a, b = lora_p[path + ("lora_a",)], lora_p[path + ("lora_b",)]
    expected = traverse_util.flatten_dict(p["base"])[path + ("kernel",)] + 8.0 / 2.0 * a @ b  # alpha / sqrt(r)
    np.testing.assert_allclose(traverse_util.flatten_dict(merged)[path + ("kernel",)], expected, atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_merge_gives_same_logits_and_unmerge_restores(models, method, tmp_path):
    model_dir, model, params, spec, tokenizer = models["gpt2"]
    ids, mask = _batch(5)
    peft_model, p = _wrap(models["gpt2"], method=method, rank=4)
    p = {"base": dict(p["base"], head=_perturb(p["base"]["head"], 3)), "peft": _perturb(p["peft"], 4)}
    ours = peft_model.apply({"params": p}, ids, attention_mask=mask)
    merged = peft.merge(p, peft_model.cfg)
    assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(params)
    plain = model.apply({"params": merged}, ids, attention_mask=mask)
    assert _max_diff(plain, ours) < 1e-5
    assert _max_diff(plain, model.apply({"params": params}, ids, attention_mask=mask)) > 1e-3  # it did change
    if method == "dora":
        with pytest.raises(ValueError, match="DoRA merge cannot be undone"):
            peft.unmerge(merged, p["peft"], peft_model.cfg)
    else:
        back = peft.unmerge(merged, p["peft"], peft_model.cfg)
        for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p)):
            np.testing.assert_allclose(x, y, atol=1e-6)
    if method == "lora":  # the merged model exports to transformers with the same logits
        out = save_pretrained(tmp_path / "merged", spec, merged, tokenizer)
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor(np.asarray(ids), dtype=torch.long),
                     attention_mask=torch.tensor(np.asarray(mask))).logits.numpy()
        assert _max_diff(ref, ours) < 1e-4


def test_unmergeable_and_bad_configs_fail_clearly(models):
    peft_model, p = _wrap(models["gpt2"], method="adapter", adapter_size=2)
    with pytest.raises(ValueError, match="cannot be merged"):
        peft.merge(p, peft_model.cfg)
    with pytest.raises(ConfigError, match="peft.method='loraa'"):
        _wrap(models["gpt2"], method="loraa")
    with pytest.raises(ConfigError, match="matches no dense module; module paths look like: backbone/h_0"):
        _wrap(models["gpt2"], method="lora", target_modules="query")
    with pytest.raises(ConfigError, match="adapter_placement"):
        _wrap(models["gpt2"], method="adapter", adapter_placement="middle")


def test_bitfit_and_frozen_head_masks(models):
    peft_model, p = _wrap(models["bert"], method="bitfit", train_head=False)
    mask = traverse_util.flatten_dict(peft_model.trainable_mask(p)["base"])
    trained = sorted("/".join(k) for k, v in mask.items() if v)
    assert trained and all(k.endswith("/bias") and k.startswith("backbone/") for k in trained)
    assert len(trained) == sum(1 for k in mask if k[-1] == "bias" and k[0] == "backbone")
    assert p["peft"] == {}
