"""Phi-3 against PyTorch transformers: every head (causal LM tied and untied, sequence and token
classification, regression) within 1e-4 in fp32 on padded batches, the fused qkv_proj / gate_up_proj kept
fused, partial rotary embeddings, the sliding window, residual dropout, the export round trip, KV-cache
decoding and scanned layers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from family_checkpoints import make_batch
from family_checkpoints_new import make_checkpoint
from family_parity_checks import DecoderFamilyParity, apply

from mgpt.models import build_model, load_pretrained, make_spec

FAMILY = "phi3"


class TestPhi3Parity(DecoderFamilyParity):
    family = FAMILY
    left_padding_variant = "base"
    scan_cases = (("base", "sequence_classification"), ("sliding", "causal_lm"))  # one window for all layers
    peft_defaults = {"lora": ["self_attn.qkv_proj"],  # the fused projection: queries, keys and values together
                     "ia3": ["self_attn.qkv_proj", "mlp.down_proj"]}


def test_fused_projections_stay_fused(tmp_path):
    make_checkpoint(tmp_path, FAMILY, "token_classification")
    _, params, spec, _ = load_pretrained(tmp_path, task="token_classification")
    layer = params["backbone"]["layers_0"]
    assert set(layer["self_attn"]) == {"qkv_proj", "o_proj"} and set(layer["mlp"]) == {"gate_up_proj", "down_proj"}
    assert layer["self_attn"]["qkv_proj"]["kernel"].shape == (48, (4 + 2 * 2) * 12)  # q, k, v heads of 12
    assert layer["mlp"]["gate_up_proj"]["kernel"].shape == (48, 2 * 40)
    assert not any("bias" in module for module in (*layer["self_attn"].values(), *layer["mlp"].values()))
    assert "bias" in params["head"]["score"]  # GenericForTokenClassification
    assert dict(spec.arch.rope_scaling)["partial_rotary_factor"] == 0.5 and spec.arch.num_kv_heads == 2


def test_partial_rotary_and_sliding_window_are_exercised(tmp_path):
    """The parity cases would also pass if these had no effect at the test lengths; they do."""
    ids, mask = make_batch(padded=False)
    for variant, field in [("base", "rope_scaling"), ("sliding", "sliding_windows")]:
        make_checkpoint(tmp_path / variant, FAMILY, "causal_lm", variant)
        model, params, spec, _ = load_pretrained(tmp_path / variant, task="causal_lm")
        plain = {"rope_scaling": (("rope_type", "default"),), "sliding_windows": (None, None)}[field]
        assert getattr(spec.arch, field) != plain
        other = build_model(dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, **{field: plain})))
        assert np.abs(np.asarray(apply(model, params, ids, mask) - apply(other, params, ids, mask))).max() > 1e-3


SAMPLES = 400


def _spread(logits):
    return float(np.asarray(logits).reshape(SAMPLES, -1).var(axis=0).mean())


def test_residual_dropout_matches_transformers_in_spread(tmp_path):
    """resid_pdrop drops the attention and MLP outputs before each residual add, as Phi3DecoderLayer: with it
    the only dropout on, the spread of training-mode logits over many masks matches PyTorch's (10%), and is
    clearly off against PyTorch at half the rate (the control)."""
    ids = np.random.RandomState(0).randint(5, 64, (1, 8))
    batch = jnp.asarray(np.repeat(ids, SAMPLES, 0))
    spreads = {}
    for rate in (0.3, 0.15):
        reference = make_checkpoint(tmp_path / str(rate), FAMILY, "causal_lm", resid_pdrop=rate, attention_dropout=0.0)
        torch.manual_seed(0)
        with torch.no_grad():
            spreads[rate] = _spread(reference.train()(torch.tensor(np.asarray(batch), dtype=torch.long)).logits)
    model, params, spec, _ = load_pretrained(tmp_path / "0.3", task="causal_lm")
    assert spec.arch.hidden_dropout == 0.3 and spec.arch.attention_dropout == 0.0
    ours = _spread(model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
    assert abs(ours / spreads[0.3] - 1) < 0.1, (ours, spreads)
    assert abs(ours / spreads[0.15] - 1) > 0.3, (ours, spreads)
    model0, params0, _, _ = load_pretrained(tmp_path / "0.3", task="causal_lm", dropout=0.0)  # the override
    quiet = model0.apply({"params": params0}, batch[:2], deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_allclose(np.asarray(quiet), np.asarray(apply(model0, params0, batch[:2], np.ones((2, 8)))),
                               atol=1e-6)


def test_unsupported_configs_fail_clearly():
    longrope = {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 48, "long_factor": [2.0] * 48,
                "original_max_position_embeddings": 4096}
    config = transformers.Phi3Config(max_position_embeddings=131072, rope_parameters=longrope)
    with pytest.raises(ValueError, match=r"phi3 config: rope_type='longrope' is not supported") as error:
        make_spec(config, "causal_lm")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="not a multiple of num_key_value_heads=4"):
        make_spec(transformers.Phi3Config(num_attention_heads=6, num_key_value_heads=4, hidden_size=48), "causal_lm")

    # The partial factor is honoured only where the family's RoPE does (Llama's rotates whole heads).
    config = transformers.LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                       "partial_rotary_factor": 0.5})
    with pytest.raises(ValueError, match="llama config: partial_rotary_factor != 1 is not supported"):
        make_spec(config, "causal_lm")
