"""Llama, Mistral, Qwen2 and Gemma against PyTorch transformers: every head within 1e-4 in fp32, a bounded
relative error in bf16, GQA ratios 4/2, 4/1 and 4/4, RoPE scaling, sliding windows, sharded loading."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from family_checkpoints import (
    DECODERS,
    PER_TOKEN,
    TASK_CLASS,
    compare,
    make_batch,
    make_checkpoint,
    torch_logits,
)
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mgpt.models import build_model, load_pretrained, make_spec

TOL = 1e-4
BF16_BOUND = 5e-2


def _apply(model, params, ids, mask, **kwargs):
    return model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), **kwargs)


@pytest.mark.parametrize("task", list(TASK_CLASS))
@pytest.mark.parametrize("family", DECODERS)
def test_logits_and_hidden_states_match_transformers(family, task, tmp_path):
    reference = make_checkpoint(tmp_path, family, task)
    model, params, spec, tokenizer = load_pretrained(tmp_path, task=task)
    assert spec.family == family and spec.load_report.initialized == ()
    assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "right"
    for padded in (False, True):
        ids, mask = make_batch(padded)
        ref = torch_logits(reference, ids, mask, output_hidden_states=True)
        logits, hidden = _apply(model, params, ids, mask, return_hidden_states=True)
        ref_logits = ref.logits.numpy()[:, 0] if task == "regression" else ref.logits.numpy()
        assert logits.dtype == jnp.float32
        assert compare(logits, ref_logits, mask if PER_TOKEN[task] else None)[0] < TOL, (family, task, padded)
        assert len(hidden) == len(ref.hidden_states)
        for ours, theirs in zip(hidden, ref.hidden_states):
            assert compare(ours, theirs.numpy(), mask)[0] < TOL, (family, task, padded)


def test_head_layout_follows_the_config(tmp_path):
    make_checkpoint(tmp_path / "llama", "llama", "causal_lm")  # untied
    make_checkpoint(tmp_path / "gemma", "gemma", "causal_lm")  # tied
    make_checkpoint(tmp_path / "qwen", "qwen2", "token_classification")
    _, params, spec, _ = load_pretrained(tmp_path / "llama", task="causal_lm")
    assert params["head"]["lm_head"]["kernel"].shape == (40, 64) and spec.load_report.loaded_head == ("lm_head.weight",)
    attn = params["backbone"]["layers_0"]["self_attn"]
    assert attn["k_proj"]["kernel"].shape == (40, 20) and "bias" in attn["o_proj"]  # 2 kv heads of 10
    _, params, _, _ = load_pretrained(tmp_path / "gemma", task="causal_lm")
    assert "head" not in params and params["backbone"]["layers_0"]["self_attn"]["q_proj"]["kernel"].shape == (40, 48)
    _, params, _, _ = load_pretrained(tmp_path / "qwen", task="token_classification")
    attn = params["backbone"]["layers_0"]["self_attn"]
    assert "bias" in attn["q_proj"] and "bias" not in attn["o_proj"] and "bias" in params["head"]["score"]


def test_rope_scaling_and_sliding_window_are_exercised(tmp_path):
    """The parity cases would also pass if scaling or the window had no effect at these lengths; they do."""
    ids, mask = make_batch(padded=False)
    for family, field, plain in [("llama", "rope_scaling", ()), ("qwen2", "rope_scaling", ()),
                                 ("mistral", "sliding_windows", (None, None))]:
        make_checkpoint(tmp_path / family, family, "causal_lm")
        model, params, spec, _ = load_pretrained(tmp_path / family, task="causal_lm")
        other = build_model(dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, **{field: plain})))
        assert np.abs(np.asarray(_apply(model, params, ids, mask) - _apply(other, params, ids, mask))).max() > 1e-3


def test_left_padding_uses_cumulative_positions(tmp_path):
    reference = make_checkpoint(tmp_path, "llama", "causal_lm")
    model, params, _, _ = load_pretrained(tmp_path, task="causal_lm")
    ids, mask = make_batch(padded=True)
    ids, mask = ids[:, ::-1].copy(), mask[:, ::-1].copy()  # left padding
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)  # what generation passes to transformers
    ref = torch_logits(reference, ids, mask, position_ids=torch.tensor(positions)).logits.numpy()
    assert compare(_apply(model, params, ids, mask), ref, mask)[0] < TOL


@pytest.mark.parametrize("family", DECODERS)
def test_bfloat16_compute_error_is_bounded(family, tmp_path):
    reference = make_checkpoint(tmp_path, family, "causal_lm")
    ids, mask = make_batch(padded=True)
    ref = torch_logits(reference, ids, mask).logits.numpy()
    for param_dtype in ("float32", "bfloat16"):
        model, params, spec, _ = load_pretrained(tmp_path, task="causal_lm", dtype="bfloat16", param_dtype=param_dtype)
        leaves = jax.tree_util.tree_leaves(params)
        assert {x.dtype for x in leaves} == {jnp.dtype(param_dtype)}
        logits = _apply(model, params, ids, mask)
        assert logits.dtype == jnp.float32
        abs_err, rel_err = compare(logits, ref, mask)
        print(f"{family} bf16 compute, {param_dtype} params: max abs err {abs_err:.3e}, max rel err {rel_err:.3e}")
        assert 0 < rel_err < BF16_BOUND, (family, param_dtype, rel_err)


def test_params_land_on_the_requested_shardings(tmp_path):
    reference = make_checkpoint(tmp_path, "mistral", "sequence_classification")
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))

    def by_path(path):  # column-shard the MLP up/gate kernels over "model", replicate the rest
        if path.endswith(("gate_proj/kernel", "up_proj/kernel")):
            return NamedSharding(mesh, PartitionSpec(None, "model"))
        return NamedSharding(mesh, PartitionSpec())

    model, params, _, _ = load_pretrained(tmp_path, task="sequence_classification", shardings=by_path)
    up = params["backbone"]["layers_1"]["mlp"]["up_proj"]["kernel"]
    assert up.sharding.spec == PartitionSpec(None, "model") and len(up.addressable_shards) == 8
    assert up.addressable_shards[0].data.shape == (48, 10)
    assert params["head"]["score"]["kernel"].sharding.spec == PartitionSpec()
    ids, mask = make_batch(padded=True)
    ref = torch_logits(reference, ids, mask).logits.numpy()
    assert compare(_apply(model, params, ids, mask), ref)[0] < TOL
    # A pytree of PartitionSpecs with the mesh works too; by default everything sits on one device.
    specs = jax.tree_util.tree_map(lambda _: PartitionSpec(), params)
    _, params, _, _ = load_pretrained(tmp_path, task="sequence_classification", shardings=specs, mesh=mesh)
    assert {len(x.devices()) for x in jax.tree_util.tree_leaves(params)} == {8}
    _, params, _, _ = load_pretrained(tmp_path, task="sequence_classification")
    assert {len(x.devices()) for x in jax.tree_util.tree_leaves(params)} == {1}


def test_unsupported_configs_fail_clearly():
    config = transformers.LlamaConfig(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0})
    with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
        make_spec(config, "causal_lm")
    config = transformers.LlamaConfig(num_attention_heads=6, num_key_value_heads=4, hidden_size=48)
    with pytest.raises(ValueError, match="not a multiple of num_key_value_heads=4"):
        make_spec(config, "causal_lm")
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        make_spec(transformers.GemmaConfig(use_bidirectional_attention=True), "causal_lm")
