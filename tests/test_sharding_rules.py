"""Parallelism as configuration: every rule set trains exactly like one device, and FSDP really shards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import optim, parallel
from mgpt.config import ConfigError, OptimizerConfig, ParallelConfig
from mgpt.models import load_pretrained
from mgpt.models.partitioning import logical_axes
from mgpt.tasks import get_task
from mgpt.train import engine as engine_lib

from fixtures_tiny import VOCAB, tiny_gpt2, word_tokenizer

LAYOUTS = {  # name -> (rules, mesh)
    "dp": ("dp", (("data", 8),)),
    "fsdp": ("fsdp", (("data", 8),)),
    "tp": ("tp", (("data", 4), ("model", 2))),
    "fsdp_tp": ("fsdp_tp", (("data", 4), ("model", 2))),
}


def tiny_llama(directory, seed=0):
    """A 2-layer Llama with grouped-query attention (4 query / 2 kv heads) and an untied LM head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=4, eos_token_id=4, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(directory)
    word_tokenizer(directory, bert_style=False)
    return str(directory)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sharding")
    return {"gpt2": tiny_gpt2(directory / "gpt2"), "llama": tiny_llama(directory / "llama")}


def _batch(seed=0, rows=8, length=16):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(VOCAB), (rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0  # some right padding
    labels = np.where(mask == 1, ids, -100).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "example_weight": np.ones((rows,), np.float32)}


def _train(directory, rules, mesh_axes, num_devices=0, steps=3):
    """Params after ``steps`` AdamW updates under a layout, and the engine's state."""
    cfg = ParallelConfig(mesh=mesh_axes, rules=rules, num_devices=num_devices)
    mesh = parallel.make_mesh(cfg)
    model, params, _, _ = load_pretrained(directory, task="causal_lm", dropout=0.0)
    layout = parallel.make_layout(cfg, mesh, model)
    optimizer = optim.make_optimizer(OptimizerConfig(name="adamw", learning_rate=1e-3, schedule="constant",
                                                     weight_decay=0.01), 10, params)
    engine = engine_lib.make_engine("jit", mesh, model, get_task("causal_lm"), optimizer, layout=layout)
    state = engine.create_state(params, seed=0)
    for i in range(steps):
        state, metrics = engine.step(state, _batch(i))
    return state, engine


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _per_device_bytes(tree):
    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(tree))


def _spec(state, *path):
    leaf = state["params"]
    for key in path:
        leaf = leaf[key]
    return tuple(leaf.sharding.spec)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_layout_trains_like_one_device(checkpoints, family):
    assert jax.device_count() == 8
    reference, _ = _train(checkpoints[family], "dp", (("data", 1),), num_devices=1)
    reference = jax.device_get(reference["params"])
    states = {}
    for name, (rules, mesh_axes) in LAYOUTS.items():
        state, engine = _train(checkpoints[family], rules, mesh_axes)
        assert _max_diff(reference, jax.device_get(state["params"])) < 1e-5, name
        states[name] = state
    kernel = {"gpt2": ("backbone", "h_0", "attn", "c_attn", "kernel"),
              "llama": ("backbone", "layers_0", "self_attn", "q_proj", "kernel")}[family]
    # The layouts really differ: replicated, embed over data, heads over model, both.
    assert _spec(states["dp"], *kernel) in ((), (None, None))
    assert _spec(states["fsdp"], *kernel) == ("data", None)
    assert _spec(states["tp"], *kernel) == (None, "model")
    assert _spec(states["fsdp_tp"], *kernel) == ("data", "model")
    # Adam's moments follow their parameter; the step count stays replicated.
    fsdp = states["fsdp"]
    param_leaves = jax.tree_util.tree_leaves(fsdp["params"])
    moments = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(fsdp["opt_state"])[0]
               if any(getattr(k, "name", None) == "mu" for k in path)]
    assert [m.sharding.spec for m in moments] == [p.sharding.spec for p in param_leaves]
    assert fsdp["step"].sharding.is_fully_replicated
    # FSDP: each device holds about 1/8 of the parameters and of the optimizer state.
    ratio = _per_device_bytes(fsdp["params"]) / _per_device_bytes(states["dp"]["params"])
    opt_ratio = _per_device_bytes(fsdp["opt_state"]) / _per_device_bytes(states["dp"]["opt_state"])
    print(f"{family}: FSDP per-device bytes / replicated: params {ratio:.3f}, optimizer state {opt_ratio:.3f}")
    assert ratio < 0.2 and opt_ratio < 0.2


def test_activation_constraints_reach_the_program(checkpoints):
    """Hidden states are laid out by the rules: batch over data, constraints in the compiled step."""
    cfg = ParallelConfig(mesh=(("data", 4), ("model", 2)), rules="tp")
    mesh = parallel.make_mesh(cfg)
    model, params, _, _ = load_pretrained(checkpoints["gpt2"], task="causal_lm", dropout=0.0)
    layout = parallel.make_layout(cfg, mesh, model)
    optimizer = optim.make_optimizer(OptimizerConfig(name="sgd", schedule="constant"), 10, params)
    engine = engine_lib.make_engine("jit", mesh, model, get_task("causal_lm"), optimizer, layout=layout)
    state = engine.create_state(params, seed=0)
    text = engine.step_fn.lower(state, parallel.shard_batch(_batch(), mesh)).as_text()
    assert text.count('sharding_constraint') >= 3  # embeddings + each of the 2 blocks
    assert '[{"data"}, {}, {}]' in text


def test_logical_names_and_direct_sharded_load(checkpoints):
    model, _, _, _ = load_pretrained(checkpoints["llama"], task="causal_lm")
    names = {"/".join(path): axes for path, (axes, _) in logical_axes(model).items()}
    assert names["backbone/embed_tokens/embedding"] == ("vocab", "embed")
    assert names["backbone/layers_0/self_attn/k_proj/kernel"] == ("embed", "heads")
    assert names["backbone/layers_0/self_attn/o_proj/kernel"] == ("heads", "embed")
    assert names["backbone/layers_1/mlp/down_proj/kernel"] == ("mlp", "embed")
    assert names["backbone/norm/scale"] == ("embed",)
    assert names["head/lm_head/kernel"] == ("embed", "vocab")
    # load_pretrained places each tensor on its layout as it reads it
    cfg = ParallelConfig(mesh=(("data", 4), ("model", 2)), rules="fsdp_tp")
    mesh = parallel.make_mesh(cfg)
    layout = parallel.make_layout(cfg, mesh, model)
    _, params, _, _ = load_pretrained(checkpoints["llama"], task="causal_lm", shardings=layout.model_param_shardings())
    # (the vocabulary of 35 does not split over 2 devices: that dimension stays whole)
    assert tuple(params["backbone"]["embed_tokens"]["embedding"].sharding.spec) == (None, "data")
    assert tuple(params["backbone"]["layers_0"]["mlp"]["up_proj"]["kernel"].sharding.spec) == ("data", "model")
    _, plain, _, _ = load_pretrained(checkpoints["llama"], task="causal_lm")
    assert _max_diff(plain, params) == 0.0


def test_rule_sets_are_checked():
    assert parallel.layout_rules(ParallelConfig(rules="fsdp+tp")) == parallel.layout_rules(
        ParallelConfig(rules="fsdp_tp"))
    explicit = (("batch", "data"), ("mlp", "data"))
    assert parallel.layout_rules(ParallelConfig(rules="tp", logical_rules=explicit)) == explicit
    with pytest.raises(ConfigError, match="not a rule set"):
        parallel.layout_rules(ParallelConfig(rules="zero3"))
    mesh = parallel.make_mesh(ParallelConfig())
    with pytest.raises(ConfigError, match="model"):
        parallel.make_layout(ParallelConfig(rules="tp"), mesh)
    # An uneven split stays whole; FSDP falls back to the largest dimension that divides.
    layout = parallel.Layout(mesh, parallel.layout_rules(ParallelConfig(rules="fsdp")),
                             {("w",): (("embed", "mlp"), (12, 16)), ("b",): (("mlp",), (16,))})
    assert layout.param_spec(("w",), (12, 16)) == jax.sharding.PartitionSpec(None, "data")
    assert layout.param_spec(("b",), (16,)) == jax.sharding.PartitionSpec("data")
    assert layout.param_spec(("peft", "a"), (6, 3)) == jax.sharding.PartitionSpec(None, None)
