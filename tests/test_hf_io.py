"""Checkpoint I/O: head loading vs initialisation, clear errors, sharded and bf16 checkpoints, offline hub ids,
and save_pretrained round trips through transformers' AutoModelFor<Task>."""

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

import mgpt
from mgpt.models import CheckpointError, load_pretrained, save_pretrained
from test_models_parity import TOL, bert_config, gpt2_config, make_batch, make_checkpoint, max_err, torch_forward


def _np(tensor):
    return tensor.detach().float().numpy()


# ------------------------------------------------------------------------------------------------ head loading


def test_bare_gpt2_initialises_head_and_reports_it(tmp_path, caplog):
    make_checkpoint(tmp_path, transformers.GPT2Model, gpt2_config())
    with caplog.at_level(logging.INFO, logger="mgpt"):
        _, params, spec, tokenizer = load_pretrained(tmp_path, task="sequence_classification", num_labels=4, seed=3)
    report = spec.load_report
    assert report.loaded_head == () and not report.head_loaded
    assert report.initialized == ("head/score/kernel",)
    assert "no head" in report.head_note
    assert "initialised" in caplog.text and "head/score/kernel" in caplog.text
    kernel = np.asarray(params["head"]["score"]["kernel"])
    assert kernel.shape == (32, 4) and 0.01 < kernel.std() < 0.03  # normal(initializer_range=0.02)
    # Seeded: the same seed gives the same head, another seed another one.
    _, again, _, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=4, seed=3)
    _, other, _, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=4, seed=4)
    np.testing.assert_array_equal(np.asarray(again["head"]["score"]["kernel"]), kernel)
    assert not np.allclose(np.asarray(other["head"]["score"]["kernel"]), kernel)
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"


def test_bare_bert_initialises_classifier_but_loads_pooler(tmp_path, caplog):
    reference = make_checkpoint(tmp_path, transformers.BertModel, bert_config())
    with caplog.at_level(logging.INFO, logger="mgpt"):
        _, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=3)
    assert spec.load_report.initialized == ("head/classifier/bias", "head/classifier/kernel")
    assert "head/classifier/kernel" in caplog.text
    np.testing.assert_array_equal(np.asarray(params["head"]["classifier"]["bias"]), np.zeros(3))
    np.testing.assert_array_equal(np.asarray(params["backbone"]["pooler"]["dense"]["kernel"]),
                                  _np(reference.pooler.dense.weight).T)
    # A token-classification model has no pooler; the checkpoint's pooler is ignored explicitly.
    _, params, spec, _ = load_pretrained(tmp_path, task="token_classification", num_labels=3)
    assert "pooler" not in params["backbone"]
    assert any(name.startswith("pooler.dense.weight") for name in spec.load_report.ignored)


def test_masked_lm_checkpoint_initialises_missing_pooler(tmp_path):
    make_checkpoint(tmp_path, transformers.BertForMaskedLM, bert_config())
    _, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=2)
    assert "backbone/pooler/dense/kernel" in spec.load_report.initialized
    assert any(name.startswith("cls.predictions") for name in spec.load_report.ignored)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_sequence_classification_checkpoint_loads_head(family, tmp_path, caplog):
    if family == "gpt2":
        torch_cls, config = transformers.GPT2ForSequenceClassification, gpt2_config(num_labels=3)
    else:
        torch_cls, config = transformers.BertForSequenceClassification, bert_config(num_labels=3)
    reference = make_checkpoint(tmp_path, torch_cls, config)
    with caplog.at_level(logging.INFO, logger="mgpt"):
        _, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification")
    assert spec.num_labels == 3 and spec.load_report.initialized == ()
    if family == "gpt2":
        assert spec.load_report.loaded_head == ("score.weight",)
        np.testing.assert_array_equal(np.asarray(params["head"]["score"]["kernel"]), _np(reference.score.weight).T)
    else:
        assert spec.load_report.loaded_head == ("classifier.bias", "classifier.weight")
        np.testing.assert_array_equal(np.asarray(params["head"]["classifier"]["kernel"]),
                                      _np(reference.classifier.weight).T)
        np.testing.assert_array_equal(np.asarray(params["head"]["classifier"]["bias"]), _np(reference.classifier.bias))
    assert "head tensors loaded" in caplog.text
    # Another label count does not fit: the head is initialised instead, and the report says why.
    _, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=5)
    assert spec.load_report.loaded_head == () and "do not fit num_labels=5" in spec.load_report.head_note


def test_token_head_is_not_used_for_sequence_task(tmp_path):
    make_checkpoint(tmp_path, transformers.BertForTokenClassification, bert_config(num_labels=3))
    _, _, spec, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=3)
    assert spec.load_report.loaded_head == ()
    assert "BertForTokenClassification" in spec.load_report.head_note
    _, _, spec, _ = load_pretrained(tmp_path, task="token_classification")
    assert spec.load_report.loaded_head == ("classifier.bias", "classifier.weight")


# ------------------------------------------------------------------------------------------------------ errors


def _rewrite_weights(directory, edit):
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_fails_naming_it(tmp_path):
    make_checkpoint(tmp_path, transformers.GPT2LMHeadModel, gpt2_config())
    _rewrite_weights(tmp_path, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(CheckpointError, match=r"missing backbone tensor.*transformer\.h\.1\.mlp\.c_fc\.weight"):
        load_pretrained(tmp_path, task="causal_lm")


def test_unexpected_tensor_fails_naming_it(tmp_path):
    make_checkpoint(tmp_path, transformers.BertModel, bert_config())
    extra = {"encoder.layer.0.attention.self.rotary.weight": np.ones(4, np.float32)}
    _rewrite_weights(tmp_path, lambda t: t.update(extra))
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*encoder\.layer\.0\.attention\.self\.rotary\.weight"):
        load_pretrained(tmp_path, task="token_classification", num_labels=2)


def test_wrong_shape_fails_naming_tensor_and_param(tmp_path):
    make_checkpoint(tmp_path, transformers.GPT2Model, gpt2_config())
    _rewrite_weights(tmp_path, lambda t: t.update({"ln_f.weight": np.ones(31, np.float32)}))
    with pytest.raises(CheckpointError, match=r"ln_f\.weight.*\(31,\).*backbone/ln_f/scale.*\(32,\)"):
        load_pretrained(tmp_path, task="causal_lm")


def test_pickled_weights_are_refused(tmp_path):
    torch.manual_seed(0)
    model = transformers.GPT2Model(gpt2_config())
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*never unpickles"):
        load_pretrained(tmp_path, task="causal_lm")


def test_sharded_checkpoint_loads_with_same_logits(tmp_path):
    reference = make_checkpoint(tmp_path, transformers.GPT2ForTokenClassification, gpt2_config(num_labels=3),
                                max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2 and not (tmp_path / "model.safetensors").exists()
    model, params, spec, _ = load_pretrained(tmp_path, task="token_classification")
    assert len(spec.load_report.files) >= 2 and spec.load_report.head_loaded
    ids, mask = make_batch(padded=True)
    logits = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert max_err(logits, torch_forward(reference, ids, mask).logits.numpy(), mask) < TOL


def test_bfloat16_checkpoint_is_upcast(tmp_path):
    torch.manual_seed(0)
    model = transformers.BertModel(bert_config()).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    make_checkpoint(tmp_path / "unused", transformers.BertModel, bert_config())  # just for a tokenizer
    for name in os.listdir(tmp_path / "unused"):
        if name.startswith(("tokenizer", "special")):
            os.replace(tmp_path / "unused" / name, tmp_path / name)
    _, params, _, _ = load_pretrained(tmp_path, task="token_classification", num_labels=2)
    word = params["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    assert word.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(word), _np(model.embeddings.word_embeddings.weight))


def test_offline_hub_id_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="local directory"):
        load_pretrained("some-org/some-model", task="causal_lm")
    assert time.monotonic() - start < 2.0
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained("./no/such/dir", task="causal_lm")


def test_package_exposes_api():
    assert mgpt.__version__ == "0.1.0"
    assert mgpt.load_pretrained is load_pretrained and mgpt.save_pretrained is save_pretrained


# ------------------------------------------------------------------------------------------ save_pretrained


ROUND_TRIPS = {
    # name: (checkpoint class, config, mgpt task, transformers Auto class, per-token)
    "gpt2_sequence": (transformers.GPT2Model, gpt2_config, "sequence_classification",
                      transformers.AutoModelForSequenceClassification, False),
    "gpt2_causal_lm": (transformers.GPT2LMHeadModel, gpt2_config, "causal_lm", transformers.AutoModelForCausalLM, True),
    "gpt2_token": (transformers.GPT2Model, gpt2_config, "token_classification",
                   transformers.AutoModelForTokenClassification, True),
    "bert_sequence": (transformers.BertModel, bert_config, "sequence_classification",
                      transformers.AutoModelForSequenceClassification, False),
    "bert_token": (transformers.BertModel, bert_config, "token_classification",
                   transformers.AutoModelForTokenClassification, True),
    "bert_regression": (transformers.BertModel, bert_config, "regression",
                        transformers.AutoModelForSequenceClassification, False),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_save_pretrained_round_trip(case, tmp_path):
    ckpt_cls, make_config, task, auto_cls, per_token = ROUND_TRIPS[case]
    # gpt2 without pad_token_id: save_pretrained must set it from the tokenizer (pad = eos).
    config = make_config(pad_token_id=None) if make_config is gpt2_config else make_config()
    make_checkpoint(tmp_path / "in", ckpt_cls, config)
    labels = None if task in ("causal_lm", "regression") else ["neg", "neu", "pos"]
    model, params, spec, tokenizer = load_pretrained(tmp_path / "in", task=task,
                                                     num_labels=None if labels is None else 3)
    # Move every parameter so the saved file cannot be a copy of the input checkpoint.
    params = {k: {**v} for k, v in params.items()}
    params["backbone"] = jax.tree_util.tree_map(lambda x: x * 1.01, params["backbone"])
    out = save_pretrained(tmp_path / "out", model, params, tokenizer, label_names=labels)

    reloaded = auto_cls.from_pretrained(out, attn_implementation="eager").eval()
    assert type(reloaded).__name__ == json.loads((tmp_path / "out" / "config.json").read_text())["architectures"][0]
    if labels:
        assert reloaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    if task == "regression":
        assert reloaded.config.problem_type == "regression" and reloaded.config.num_labels == 1
    ids, mask = make_batch(padded=True, pad_id=tokenizer.pad_token_id)  # what the tokenizer pads with
    ours = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    theirs = torch_forward(reloaded, ids, mask).logits.numpy()
    if task == "regression":
        theirs = theirs[:, 0]
    assert max_err(ours, theirs, mask if per_token else None) < TOL
    # The saved directory loads back into mgpt with the head and the tokenizer.
    _, again, spec2, tok2 = load_pretrained(out, task=task)
    assert spec2.load_report.initialized == () and spec2.num_labels == spec.num_labels
    assert tok2.pad_token == tokenizer.pad_token
