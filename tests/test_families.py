"""The family protocol: every registered family declares what generic code asks, and the declarations agree
with the models the family builds (tables cover the param tree, PEFT defaults match modules, geometry fits)."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
import transformers
from flax import traverse_util

from mgpt import bench, generate
from mgpt.models import build_model, make_spec
from mgpt.models import scan as scan_lib
from mgpt.models.family import PEFT_TARGET_KEYS, all_families, get_family, register
from mgpt.models.mappings import architecture, checkpoint_task, mapping_table
from mgpt.peft import prompts, targets

from family_checkpoints import CONFIGS
import family_checkpoints_new  # noqa: F401,E402 -- adds the Qwen3 and Phi-3 configs to CONFIGS


def _gpt2(**kwargs):
    return transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32, **kwargs)


def _bert(**kwargs):
    return transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=48, max_position_embeddings=32, **kwargs)


TINY = {**CONFIGS, "gpt2": _gpt2, "bert": _bert}
CASES = [(f.name, task) for f in all_families() for task in f.tasks]


def _spec(family, task):
    return make_spec(TINY[family](), task, num_labels=1 if task == "regression" else 3)


def _param_shapes(spec):
    ids = jnp.ones((2, 5), jnp.int32)
    model = build_model(spec)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, attention_mask=jnp.ones_like(ids)))
    return {path: getattr(leaf, "value", leaf).shape for path, leaf in traverse_util.flatten_dict(variables["params"]).items()}


def test_every_family_has_a_tiny_config():
    assert sorted(TINY) == sorted(f.name for f in all_families())


def test_unknown_model_type_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"model_type 't5' is not supported; mgpt supports: \[.*'gpt2'.*'llama'"):
        get_family("t5")


def test_register_refuses_incomplete_or_duplicate_families():
    llama = get_family("llama")
    with pytest.raises(ValueError, match="peft_targets lacks"):
        register(dataclasses.replace(llama, name="incomplete", peft_targets={"lora": "q_proj"}))
    with pytest.raises(ValueError, match="registered twice"):
        register(dataclasses.replace(llama))


@pytest.mark.parametrize("family,task", CASES)
def test_table_covers_the_param_tree(family, task):
    """Every parameter is filled by exactly one table row with a matching role, and no row points nowhere."""
    spec = _spec(family, task)
    shapes = _param_shapes(spec)
    table = mapping_table(spec)
    paths = [entry.path for entry in table.values()]
    assert len(paths) == len(set(paths))
    assert set(paths) == set(shapes)
    for entry in table.values():
        assert (entry.role == "head") == (entry.path[0] == "head")


@pytest.mark.parametrize("family,task", CASES)
def test_architecture_names_a_transformers_class_of_the_task(family, task):
    name = architecture(family, task)
    assert hasattr(transformers, name), name
    config = TINY[family](architectures=[name], **({"problem_type": "regression"} if task == "regression" else {}))
    assert checkpoint_task(config) == task


def test_encoders_have_no_causal_lm():
    for family in all_families():
        if not family.is_decoder:
            assert family.hf_architecture("causal_lm") is None and "causal_lm" not in family.tasks
            with pytest.raises(ValueError, match="needs a decoder model"):
                make_spec(TINY[family.name](), "causal_lm")


@pytest.mark.parametrize("family", sorted(TINY))
def test_peft_defaults_match_dense_modules(family):
    spec = _spec(family, "sequence_classification")
    base = traverse_util.unflatten_dict({path: jnp.zeros(shape) for path, shape in _param_shapes(spec).items()})
    layers = spec.arch.num_layers
    declared = get_family(family).peft_targets
    assert set(declared) == set(PEFT_TARGET_KEYS)
    for key, pattern in declared.items():
        found = targets.match(base, pattern, key)
        assert len(found) % layers == 0 and found, (key, found)  # the same modules in every layer
    assert {key: targets.default_target(spec, key) for key in PEFT_TARGET_KEYS} == dict(declared)
    table = prompts.embedding_table(base, spec)
    assert table.shape == (spec.arch.vocab_size, spec.arch.hidden_size)


@pytest.mark.parametrize("family", sorted(TINY))
def test_kv_geometry_is_the_one_answer(family):
    spec = _spec(family, "sequence_classification")
    layers, heads, dim = get_family(family).kv_geometry(spec.arch)
    assert prompts.layer_geometry(spec) == (layers, heads, dim)
    assert heads * dim == spec.arch.num_kv_heads * spec.arch.head_dim and layers == spec.arch.num_layers
    if get_family(family).is_decoder:
        assert generate.cache_layout(spec) == (layers, heads, dim)
        cache = generate.init_cache(spec, batch=2, max_length=7)
        assert len(cache) == layers and cache[0].key.shape == (2, 7, heads, dim)
    else:
        with pytest.raises(ValueError, match="needs a decoder model"):
            generate.cache_layout(spec)


def test_gqa_and_head_dim_reach_the_common_fields():
    gemma = _spec("gemma", "causal_lm").arch  # 4 query heads over 2 kv heads, head_dim 12 != 40 / 4
    assert (gemma.num_heads, gemma.num_kv_heads, gemma.head_dim) == (4, 2, 12)
    gpt2 = _spec("gpt2", "causal_lm").arch
    assert (gpt2.num_layers, gpt2.hidden_size, gpt2.num_kv_heads, gpt2.head_dim) == (2, 32, 4, 8)
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.n_head) == (2, 32, 4)


def test_scan_layout_and_blockers():
    assert scan_lib.scanning_families() == sorted(f.name for f in all_families() if f.is_decoder)
    assert scan_lib.layer_stack(_spec("gpt2", "causal_lm")) == ("h", 2)
    assert scan_lib.layer_stack(_spec("mistral", "causal_lm")) == ("layers", 2)
    with pytest.raises(ValueError, match="scan_layers=True is not supported for 'bert'"):
        make_spec(_bert(), "sequence_classification", scan_layers=True)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx scales each layer differently"):
        make_spec(_gpt2(scale_attn_by_inverse_layer_idx=True), "causal_lm", scan_layers=True)
    mixed = CONFIGS["qwen2"](use_sliding_window=True, sliding_window=4, max_window_layers=1)
    with pytest.raises(ValueError, match=r"different sliding windows \(None, 4\)"):
        make_spec(mixed, "causal_lm", scan_layers=True)
    assert make_spec(CONFIGS["mistral"](), "causal_lm", scan_layers=True).scan_layers  # one window everywhere


def test_bench_sizes_are_declared_by_their_families():
    sizes = bench.named_sizes()
    assert set(sizes) == {"gpt2-small", "gpt2-medium", "llama-125m", "llama-1b", "smollm2-135m", "bert-base",
                          "qwen3-0.6b", "phi3-mini"}
    for name, (owner, _) in sizes.items():
        config = bench.hf_config_for(name, 128)
        assert config.model_type == owner and name in get_family(owner).bench_sizes
    small = bench.hf_config_for("llama-1b", 128)
    assert (small.hidden_size, small.num_key_value_heads, small.tie_word_embeddings) == (2048, 8, True)
