"""The parity checks every new decoder family passes, written once: each family's test file subclasses
:class:`DecoderFamilyParity` (collected there as ``Test<Family>Parity``) and adds its own tests.

Each check builds a tiny random checkpoint (tests/family_checkpoints_new.py), runs PyTorch transformers as
the reference and asserts mgpt's numbers against it: fp32 logits and hidden states within 1e-4 for every
head on padded batches, left padding, the export round trip through ``save_pretrained`` and the matching
``AutoModelFor...`` class, KV-cache decoding against a full forward pass, and scanned against unscanned
layers.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from family_checkpoints import AUTO_CLASS, PAD, PER_TOKEN, TASK_CLASS, compare, make_batch, torch_logits
from family_checkpoints_new import PREFIX, VARIANTS, make_checkpoint
from test_export_roundtrip import fine_tune

from mgpt import generate
from mgpt.models import load_pretrained, save_pretrained

TOL = 1e-4
TASKS = tuple(TASK_CLASS)
VARIANT_NAMES = ("base", "tied", "sliding")
assert all(tuple(v) == VARIANT_NAMES for v in VARIANTS.values()), "every family names the same variants"
EXPORT_CASES = [("base", "causal_lm"), ("tied", "causal_lm"), ("base", "sequence_classification"),
                ("sliding", "token_classification"), ("tied", "regression")]


def apply(model, params, ids, mask, **kwargs):
    return model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), **kwargs)


def reference_logits(reference, ids, mask, task, **kwargs):
    out = torch_logits(reference, ids, mask, **kwargs)
    return out, (out.logits.numpy()[:, 0] if task == "regression" else out.logits.numpy())


def check_logits_and_hidden_states(family, variant, task, tmp_path):
    """Every head, unpadded and right-padded: logits and every hidden state within 1e-4 of transformers."""
    reference = make_checkpoint(tmp_path, family, task, variant)
    model, params, spec, _ = load_pretrained(tmp_path, task=task)
    assert spec.family == family and spec.load_report.initialized == ()
    for padded in (False, True):
        ids, mask = make_batch(padded)
        ref, ref_logits = reference_logits(reference, ids, mask, task, output_hidden_states=True)
        logits, hidden = apply(model, params, ids, mask, return_hidden_states=True)
        assert logits.dtype == jnp.float32
        err = compare(logits, ref_logits, mask if PER_TOKEN[task] else None)[0]
        assert err < TOL, (family, variant, task, padded, err)
        assert len(hidden) == len(ref.hidden_states) == spec.arch.num_layers + 1
        for ours, theirs in zip(hidden, ref.hidden_states):
            assert compare(ours, theirs.numpy(), mask)[0] < TOL, (family, variant, task, padded)
    return model, params, spec


def check_left_padding(family, variant, task, tmp_path):
    """Left padding with the cumulative positions generation uses: the same logits as transformers."""
    reference = make_checkpoint(tmp_path, family, task, variant)
    model, params, _, _ = load_pretrained(tmp_path, task=task)
    ids, mask = make_batch(padded=True, length=9)
    ids, mask = ids[:, ::-1].copy(), mask[:, ::-1].copy()
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    _, ref_logits = reference_logits(reference, ids, mask, task, position_ids=torch.tensor(positions))
    err = compare(apply(model, params, ids, mask), ref_logits, mask if PER_TOKEN[task] else None)[0]
    assert err < TOL, (family, variant, task, err)


def check_export_round_trip(family, variant, task, tmp_path):
    """Fine-tune two steps, export, reload in transformers (same logits) and in mgpt (identical logits)."""
    make_checkpoint(tmp_path / "in", family, task, variant, num_hidden_layers=1)
    model, params0, spec, tokenizer = load_pretrained(tmp_path / "in", task=task)
    params = fine_tune(model, params0, task, max(spec.num_labels, 1))
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), params, params0)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3
    labels = ["neg", "neu", "pos"] if task in ("sequence_classification", "token_classification") else None
    out = save_pretrained(tmp_path / "out", model, params, tokenizer, label_names=labels)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == [PREFIX[family] + TASK_CLASS[task]] and config["model_type"] == family
    reloaded = AUTO_CLASS[task].from_pretrained(out, attn_implementation="eager").eval()
    assert type(reloaded).__name__ == config["architectures"][0]
    if labels:
        assert reloaded.config.id2label == dict(enumerate(labels))
    ids, mask = make_batch(padded=True, seed=2)
    ours = apply(model, params, ids, mask)
    _, theirs = reference_logits(reloaded, ids, mask, task)
    err = compare(ours, theirs, mask if PER_TOKEN[task] else None)[0]
    assert err < TOL, (family, variant, task, err)
    model2, params2, spec2, tokenizer2 = load_pretrained(out, task=task)
    assert spec2.load_report.initialized == () and tokenizer2.pad_token_id == PAD and spec2.arch == spec.arch
    np.testing.assert_array_equal(np.asarray(apply(model2, params2, ids, mask)), np.asarray(ours))


PROMPTS = [[5, 9, 11, 3, 7], [12, 4], [8, 1, 30, 22, 17, 2, 9]]  # different lengths: left padding matters


def check_cached_decoding(family, variant, tmp_path, steps=4):
    """The left-padded prompt, two single tokens, then two tokens at once through the KV cache: the logits
    of one full forward pass (1e-5); the cache has the family's geometry."""
    make_checkpoint(tmp_path, family, "causal_lm", variant)
    model, params, spec, _ = load_pretrained(tmp_path, task="causal_lm")
    prompt_ids, prompt_mask = generate.left_pad(PROMPTS, PAD)
    new = np.random.default_rng(0).integers(3, 64, (len(PROMPTS), steps)).astype(np.int32)
    ids = np.concatenate([prompt_ids, new], axis=1)
    mask = np.concatenate([prompt_mask, np.ones_like(new)], axis=1)
    positions = generate.prompt_positions(jnp.asarray(mask))
    run = jax.jit(lambda ids, positions, cache: model.apply(
        {"params": params}, ids, attention_mask=mask, position_ids=positions, cache=cache))
    cache = generate.init_cache(spec, len(PROMPTS), ids.shape[1])
    shapes = {c.key.shape[2:] for c in cache}
    assert len(cache) == spec.arch.num_layers and shapes == {(spec.arch.num_kv_heads, spec.arch.head_dim)}
    start = prompt_ids.shape[1]
    bounds = (0, start, start + 1, start + 2, ids.shape[1])
    chunks = []
    for begin, end in zip(bounds, bounds[1:]):
        logits, cache = run(ids[:, begin:end], positions[:, begin:end], cache)
        chunks.append(np.asarray(logits))
    full = np.asarray(apply(model, params, ids, mask, position_ids=positions))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.concatenate(chunks, axis=1)[real], full[real], atol=1e-5, rtol=1e-5)


def check_scan_equals_unscanned(family, variant, task, tmp_path):
    """Scanned layers give the unscanned logits and hidden states; the scanned export loads back unscanned."""
    make_checkpoint(tmp_path / "in", family, task, variant)
    model, params, spec, tokenizer = load_pretrained(tmp_path / "in", task=task)
    scanned, stacked, _, _ = load_pretrained(tmp_path / "in", task=task, scan_layers=True)
    assert not any(name.startswith("layers_") for name in stacked["backbone"])
    ids, mask = make_batch(padded=True)
    logits, hidden = apply(model, params, ids, mask, return_hidden_states=True)
    logits_s, hidden_s = apply(scanned, stacked, ids, mask, return_hidden_states=True)
    assert np.abs(np.asarray(logits) - np.asarray(logits_s)).max() < 1e-5
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(hidden, hidden_s)) < 1e-5
    save_pretrained(tmp_path / "out", scanned, stacked, tokenizer)
    _, again, _, _ = load_pretrained(tmp_path / "out", task=task)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), again, params))


def check_default_peft_targets(family, method, expected, tmp_path):
    """The family's default PEFT targets are exactly ``expected`` (module names per layer), and the adapter
    saved in the peft library's format loads onto transformers with the same causal-LM logits (1e-4)."""
    import os

    import peft as hf_peft
    import transformers

    from mgpt import peft
    from mgpt.config import PeftConfig
    from mgpt.peft import hf_format

    make_checkpoint(tmp_path / "base", family, "causal_lm", num_hidden_layers=1)
    model, params, spec, _ = load_pretrained(tmp_path / "base", task="causal_lm", dropout=0.0)
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method=method, rank=2), jax.random.PRNGKey(0))
    p["peft"] = jax.tree_util.tree_map(lambda x: x + 0.1, p["peft"])  # a visible update
    ids, mask = make_batch()
    ours = np.asarray(peft_model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    out = hf_format.save_adapter(tmp_path / "adapter", peft_model, p)
    config = json.loads(open(os.path.join(out, "adapter_config.json")).read())
    assert sorted(config["target_modules"]) == sorted(f"model.layers.0.{name}" for name in expected)
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", attn_implementation="eager")
    loaded = hf_peft.PeftModel.from_pretrained(base, out).eval()
    assert compare(ours, torch_logits(loaded, ids, mask).logits.numpy(), mask)[0] < TOL, (family, method)
    plain = apply(model, params, ids, mask)
    assert compare(ours, plain, mask)[0] > 1e-3  # the adapter changed the outputs


class DecoderFamilyParity:
    """The standard parity tests of a decoder family; a subclass sets the family and its cases."""

    family: str
    left_padding_variant = "base"
    scan_cases: tuple = (("base", "causal_lm"),)  # (variant, task) pairs that scan
    peft_defaults: dict = {}  # PEFT method -> the module names its default targets must be, per layer

    @pytest.mark.parametrize("task", TASKS)
    @pytest.mark.parametrize("variant", VARIANT_NAMES)
    def test_logits_and_hidden_states_match_transformers(self, variant, task, tmp_path):
        check_logits_and_hidden_states(self.family, variant, task, tmp_path)

    @pytest.mark.parametrize("task", ["causal_lm", "sequence_classification"])
    def test_left_padding_matches_transformers(self, task, tmp_path):
        check_left_padding(self.family, self.left_padding_variant, task, tmp_path)

    @pytest.mark.parametrize("variant,task", EXPORT_CASES)
    def test_export_round_trip(self, variant, task, tmp_path):
        check_export_round_trip(self.family, variant, task, tmp_path)

    @pytest.mark.parametrize("variant", VARIANT_NAMES)
    def test_cached_decoding_equals_a_full_forward_pass(self, variant, tmp_path):
        check_cached_decoding(self.family, variant, tmp_path)

    def test_scanned_layers_equal_unscanned(self, tmp_path):
        for variant, task in self.scan_cases:
            check_scan_equals_unscanned(self.family, variant, task, tmp_path / variant)

    @pytest.mark.parametrize("method", ["lora", "ia3"])
    def test_default_peft_targets_load_in_the_peft_library(self, method, tmp_path):
        check_default_peft_targets(self.family, method, self.peft_defaults[method], tmp_path)
