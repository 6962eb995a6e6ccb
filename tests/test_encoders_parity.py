"""RoBERTa and DistilBERT (on BERT's layers) against PyTorch transformers: every head within 1e-4 in fp32,
RoBERTa's position ids and classification head, DistilBERT's head, bounded bf16 error."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from family_checkpoints import ENCODERS, PAD, PER_TOKEN, compare, make_batch, make_checkpoint, tasks_of, torch_logits

from mgpt.models import load_pretrained, make_spec
from mgpt.models.families.bert import encoder_positions

TOL = 1e-4
CASES = [(family, task) for family in ENCODERS for task in tasks_of(family)]


def _apply(model, params, ids, mask, **kwargs):
    return model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), **kwargs)


@pytest.mark.parametrize("family,task", CASES)
def test_logits_and_hidden_states_match_transformers(family, task, tmp_path):
    reference = make_checkpoint(tmp_path, family, task)
    model, params, spec, _ = load_pretrained(tmp_path, task=task)
    assert spec.load_report.initialized == () and "pooler" not in params["backbone"]
    for padded in (False, True):
        ids, mask = make_batch(padded)
        ref = torch_logits(reference, ids, mask, output_hidden_states=True)
        logits, hidden = _apply(model, params, ids, mask, return_hidden_states=True)
        ref_logits = ref.logits.numpy()[:, 0] if task == "regression" else ref.logits.numpy()
        assert compare(logits, ref_logits, mask if PER_TOKEN[task] else None)[0] < TOL, (family, task, padded)
        assert len(hidden) == len(ref.hidden_states)
        for ours, theirs in zip(hidden, ref.hidden_states):
            assert compare(ours, theirs.numpy(), mask)[0] < TOL, (family, task, padded)


def test_roberta_position_ids_skip_padding():
    ids = np.array([[7, 8, PAD, 9, PAD], [PAD, 5, 6, 7, 8]], np.int32)
    ours = np.asarray(encoder_positions(jnp.asarray(ids), 5, PAD))
    theirs = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
        torch.tensor(ids), PAD)
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_array_equal(np.asarray(encoder_positions(None, 3, 1)), [[2, 3, 4]])  # inputs_embeds


def test_roberta_sequence_head_is_not_the_pooler(tmp_path):
    make_checkpoint(tmp_path, "roberta", "sequence_classification", bare=True)  # RobertaModel has a pooler
    _, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=4)
    assert "pooler" not in params["backbone"]
    assert spec.load_report.initialized == ("head/classifier/dense/bias", "head/classifier/dense/kernel",
                                            "head/classifier/out_proj/bias", "head/classifier/out_proj/kernel")
    assert any(name.startswith("pooler.dense.weight") for name in spec.load_report.ignored)
    assert params["head"]["classifier"]["out_proj"]["kernel"].shape == (40, 4)


def test_distilbert_ignores_token_types_and_refuses_sinusoidal(tmp_path):
    reference = make_checkpoint(tmp_path, "distilbert", "token_classification")
    model, params, _, _ = load_pretrained(tmp_path, task="token_classification")
    assert "token_type_embeddings" not in params["backbone"]["embeddings"]
    ids, mask = make_batch(padded=True)
    logits = _apply(model, params, ids, mask, token_type_ids=jnp.ones_like(jnp.asarray(ids)))
    assert compare(logits, torch_logits(reference, ids, mask).logits.numpy(), mask)[0] < TOL
    with pytest.raises(ValueError, match="sinusoidal_pos_embds=True is not supported"):
        make_spec(transformers.DistilBertConfig(sinusoidal_pos_embds=True), "token_classification")


@pytest.mark.parametrize("family", ENCODERS)
def test_bfloat16_compute_error_is_bounded(family, tmp_path):
    reference = make_checkpoint(tmp_path, family, "token_classification")
    model, params, _, _ = load_pretrained(tmp_path, task="token_classification", dtype="bfloat16")
    ids, mask = make_batch(padded=True)
    abs_err, rel_err = compare(_apply(model, params, ids, mask), torch_logits(reference, ids, mask).logits.numpy(),
                               mask)
    print(f"{family} bf16 compute: max abs err {abs_err:.3e}, max rel err {rel_err:.3e}")
    assert 0 < rel_err < 5e-2
