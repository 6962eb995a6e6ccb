"""Qwen3 against PyTorch transformers: every head (causal LM tied and untied, sequence and token
classification, regression) within 1e-4 in fp32 on padded batches, the per-head q/k RMSNorm, per-layer
sliding windows, the export round trip, KV-cache decoding and scanned layers."""

import dataclasses

import numpy as np
import pytest
import transformers
from family_checkpoints import make_batch
from family_checkpoints_new import make_checkpoint
from family_parity_checks import DecoderFamilyParity, apply

from mgpt.models import build_model, load_pretrained, make_spec

FAMILY = "qwen3"


class TestQwen3Parity(DecoderFamilyParity):
    family = FAMILY
    left_padding_variant = "sliding"
    scan_cases = (("base", "causal_lm"),)
    peft_defaults = {"lora": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],  # not the q/k norms
                     "ia3": ["self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"]}


def test_param_tree_holds_the_per_head_norms(tmp_path):
    make_checkpoint(tmp_path, FAMILY, "causal_lm")
    _, params, spec, _ = load_pretrained(tmp_path, task="causal_lm")
    attn = params["backbone"]["layers_0"]["self_attn"]
    assert attn["q_norm"]["scale"].shape == attn["k_norm"]["scale"].shape == (12,)  # head_dim, not hidden
    assert attn["q_proj"]["kernel"].shape == (40, 48) and attn["k_proj"]["kernel"].shape == (40, 24)
    assert all("bias" in attn[name] for name in ("q_proj", "k_proj", "v_proj", "o_proj"))  # attention_bias
    assert "bias" not in params["backbone"]["layers_0"]["mlp"]["up_proj"]
    assert params["head"]["lm_head"]["kernel"].shape == (40, 64)
    assert spec.arch.head_dim == 12 and spec.arch.sliding_windows == (None, None)


def test_q_k_norms_and_sliding_window_are_exercised(tmp_path):
    """The parity cases would also pass if the norms or the window had no effect here; they do."""
    ids, mask = make_batch(padded=False)
    make_checkpoint(tmp_path / "base", FAMILY, "causal_lm")
    model, params, _, _ = load_pretrained(tmp_path / "base", task="causal_lm")
    plain = {**params, "backbone": {**params["backbone"]}}
    for i in range(2):
        layer = params["backbone"][f"layers_{i}"]
        attn = {**layer["self_attn"], "q_norm": {"scale": np.ones(12, np.float32)}}
        plain["backbone"][f"layers_{i}"] = {**layer, "self_attn": attn}
    assert np.abs(np.asarray(apply(model, params, ids, mask) - apply(model, plain, ids, mask))).max() > 1e-3
    make_checkpoint(tmp_path / "sliding", FAMILY, "causal_lm", "sliding")
    model, params, spec, _ = load_pretrained(tmp_path / "sliding", task="causal_lm")
    assert spec.arch.sliding_windows == (None, 3)  # max_window_layers=1: only layer 1 slides
    other = build_model(dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, sliding_windows=(None, None))))
    assert np.abs(np.asarray(apply(model, params, ids, mask) - apply(other, params, ids, mask))).max() > 1e-3


def test_mixed_sliding_windows_refuse_to_scan(tmp_path):
    make_checkpoint(tmp_path, FAMILY, "causal_lm", "sliding")
    with pytest.raises(ValueError, match="different sliding windows"):
        load_pretrained(tmp_path, task="causal_lm", scan_layers=True)


def test_unsupported_configs_fail_clearly():
    config = transformers.Qwen3Config(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0})
    with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
        make_spec(config, "causal_lm")
    with pytest.raises(ValueError, match="not a multiple of num_key_value_heads=4"):
        make_spec(transformers.Qwen3Config(num_attention_heads=6, num_key_value_heads=4), "causal_lm")

