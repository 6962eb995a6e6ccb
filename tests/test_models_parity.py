"""mgpt's GPT-2 / BERT models against PyTorch transformers (fp32, max abs error 1e-4), and the attention core
against a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mgpt.models import load_pretrained
from mgpt.models.attention import attention, init_kv_cache, update_kv_cache

VOCAB = 64
PAD, UNK, EOS = 0, 1, 2
TOL = 1e-4


# ------------------------------------------------------------------------------------------- tiny checkpoints


def save_tokenizer(directory, family):
    """A word-level fast tokenizer over VOCAB words "w0".."w63", saved next to the weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=f"w{UNK}"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if family == "gpt2":  # GPT-2 style: an eos token and no pad token (mgpt sets pad = eos)
        fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=f"w{UNK}", eos_token=f"w{EOS}")
    else:
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token=f"w{UNK}", pad_token=f"w{PAD}", cls_token="w3", sep_token="w4"
        )
    fast.save_pretrained(directory)
    return fast


def gpt2_config(**kwargs):
    kwargs.setdefault("pad_token_id", PAD)
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=EOS, eos_token_id=EOS, attn_implementation="eager", **kwargs,
    )


def bert_config(**kwargs):
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, type_vocab_size=2, pad_token_id=PAD, attn_implementation="eager", **kwargs,
    )


def make_checkpoint(directory, torch_cls, config, seed=0, **save_kwargs):
    """Random-weight transformers model saved (safetensors) with a tokenizer; returns the torch model in eval mode."""
    torch.manual_seed(seed)
    model = torch_cls(config).eval()
    model.save_pretrained(directory, **save_kwargs)
    save_tokenizer(directory, config.model_type)
    return model


def make_batch(padded, seed=0, batch=3, length=8, pad_id=PAD):
    """Ids avoid pad ids in real positions (GPT2ForSequenceClassification finds the last token by pad id)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, VOCAB, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    if padded:
        for row, n in enumerate([length, 5, 2][:batch]):
            mask[row, n:] = 0
        ids[mask == 0] = pad_id
    return ids, mask


def torch_forward(model, ids, mask, token_type_ids=None, **kwargs):
    with torch.no_grad():
        extra = {} if token_type_ids is None else {"token_type_ids": torch.tensor(token_type_ids, dtype=torch.long)}
        return model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            **extra,
            **kwargs,
        )


def max_err(ours, ref, mask=None):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if mask is not None:  # per-token outputs: compare real positions only
        ours, ref = ours[mask.astype(bool)], ref[mask.astype(bool)]
    return float(np.abs(ours - ref).max())


# ------------------------------------------------------------------------------------------------ parity

CASES = {
    # name: (torch class, config factory, config kwargs, mgpt task, per-token output)
    "gpt2_causal_lm": (transformers.GPT2LMHeadModel, gpt2_config, {}, "causal_lm", True),
    "gpt2_sequence": (transformers.GPT2ForSequenceClassification, gpt2_config, {"num_labels": 3},
                      "sequence_classification", False),
    "gpt2_token": (transformers.GPT2ForTokenClassification, gpt2_config, {"num_labels": 5},
                   "token_classification", True),
    "gpt2_regression": (transformers.GPT2ForSequenceClassification, gpt2_config,
                        {"num_labels": 1, "problem_type": "regression"}, "regression", False),
    "bert_sequence": (transformers.BertForSequenceClassification, bert_config, {"num_labels": 3},
                      "sequence_classification", False),
    "bert_token": (transformers.BertForTokenClassification, bert_config, {"num_labels": 5},
                   "token_classification", True),
    "bert_regression": (transformers.BertForSequenceClassification, bert_config,
                        {"num_labels": 1, "problem_type": "regression"}, "regression", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
    torch_cls, make_config, config_kwargs, task, per_token = CASES[case]
    reference = make_checkpoint(tmp_path, torch_cls, make_config(**config_kwargs))
    model, params, spec, _ = load_pretrained(tmp_path, task=task)
    assert spec.task == task and spec.load_report.initialized == ()
    is_bert = spec.family == "bert"
    for padded in (False, True):
        ids, mask = make_batch(padded)
        token_types = (np.arange(ids.shape[1])[None, :] >= 4).astype(np.int32).repeat(3, 0) if is_bert else None
        ref = torch_forward(reference, ids, mask, token_types, output_hidden_states=True)
        logits, hidden = model.apply(
            {"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
            token_type_ids=None if token_types is None else jnp.asarray(token_types), return_hidden_states=True,
        )
        ref_logits = ref.logits.numpy()
        if task == "regression":
            ref_logits = ref_logits[:, 0]
        assert logits.dtype == jnp.float32
        assert max_err(logits, ref_logits, mask if per_token else None) < TOL, (case, padded)
        # Every layer's hidden states too (transformers' output_hidden_states convention).
        assert len(hidden) == len(ref.hidden_states)
        for ours, theirs in zip(hidden, ref.hidden_states):
            assert max_err(ours, theirs.numpy(), mask) < TOL, (case, padded)


def test_bert_model_backbone_and_pooler_match(tmp_path):
    reference = make_checkpoint(tmp_path, transformers.BertModel, bert_config())
    model, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification", num_labels=2)
    for padded in (False, True):
        ids, mask = make_batch(padded)
        ref = torch_forward(reference, ids, mask)
        out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), method=model.encode)
        assert max_err(out.last_hidden_state, ref.last_hidden_state.numpy(), mask) < TOL
        assert max_err(out.pooled, ref.pooler_output.numpy()) < TOL


def test_inputs_embeds_match_input_ids(tmp_path):
    make_checkpoint(tmp_path / "g", transformers.GPT2LMHeadModel, gpt2_config())
    make_checkpoint(tmp_path / "b", transformers.BertForTokenClassification, bert_config(num_labels=3))
    ids, mask = make_batch(padded=True)
    for directory, task, table in [
        (tmp_path / "g", "causal_lm", ("wte", "embedding")),
        (tmp_path / "b", "token_classification", ("embeddings", "word_embeddings", "embedding")),
    ]:
        model, params, _, _ = load_pretrained(directory, task=task)
        embedding = params["backbone"]
        for key in table:
            embedding = embedding[key]
        from_ids = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
        from_embeds = model.apply(
            {"params": params}, inputs_embeds=embedding[jnp.asarray(ids)], attention_mask=jnp.asarray(mask)
        )
        np.testing.assert_allclose(np.asarray(from_embeds), np.asarray(from_ids), atol=1e-6)


def test_dropout_is_seeded_and_off_when_deterministic(tmp_path):
    make_checkpoint(tmp_path, transformers.BertForTokenClassification, bert_config(num_labels=3))
    ids, mask = make_batch(padded=True)
    model, params, _, _ = load_pretrained(tmp_path, task="token_classification", dropout=0.3)
    assert model.spec.arch.attention_dropout == model.spec.arch.hidden_dropout == 0.3

    def run(seed, deterministic):
        return np.asarray(model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                      deterministic=deterministic, rngs={"dropout": jax.random.PRNGKey(seed)}))

    np.testing.assert_array_equal(run(0, False), run(0, False))
    assert np.abs(run(0, False) - run(1, False)).max() > 1e-3
    np.testing.assert_array_equal(run(0, True), run(1, True))
    # Without dropout (rate 0), the training path equals the deterministic one.
    model0, params0, _, _ = load_pretrained(tmp_path, task="token_classification", dropout=0.0)
    a = model0.apply({"params": params0}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), deterministic=False,
                     rngs={"dropout": jax.random.PRNGKey(0)})
    b = model0.apply({"params": params0}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bfloat16_compute_keeps_float32_params(tmp_path):
    reference = make_checkpoint(tmp_path, transformers.GPT2ForSequenceClassification, gpt2_config(num_labels=3))
    model, params, spec, _ = load_pretrained(tmp_path, task="sequence_classification", dtype="bfloat16")
    assert spec.dtype == "bfloat16"
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    ids, mask = make_batch(padded=True)
    logits = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert logits.dtype == jnp.float32
    ref = torch_forward(reference, ids, mask).logits.numpy()
    assert 0 < max_err(logits, ref) < 2e-2  # bf16 rounding, not an fp32 copy


# --------------------------------------------------------------------------------------------- attention core


def np_attention(q, k, v, allowed, scale):
    """Reference: softmax(q k^T * scale, masked) v in float64."""
    logits = np.einsum("btnh,bsnh->bnts", q, k).astype(np.float64) * scale
    logits = np.where(allowed, logits, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", probs, v)


def _qkv(seed, batch=2, length=5, heads=2, dim=4, kv_length=None):
    rng = np.random.RandomState(seed)
    shape = lambda n: (batch, n, heads, dim)  # noqa: E731
    return (rng.randn(*shape(length)).astype(np.float32), rng.randn(*shape(kv_length or length)).astype(np.float32),
            rng.randn(*shape(kv_length or length)).astype(np.float32))


def test_attention_masks_causal_and_prefix():
    q, k, v = _qkv(0)
    key_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    causal = np.tril(np.ones((5, 5), bool))
    allowed = key_mask[:, None, None, :] & causal[None, None]
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(key_mask), causal=True)
    np.testing.assert_allclose(np.asarray(out), np_attention(q, k, v, allowed, 0.5), atol=1e-5)

    # Prefix keys/values are visible to every query; the second prefix slot of row 1 is hidden.
    pk, pv, _ = _qkv(1, length=2)
    prefix_mask = np.array([[1, 1], [1, 0]], bool)
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(key_mask), causal=True,
                    prefix_key=jnp.asarray(pk), prefix_value=jnp.asarray(pv), prefix_mask=jnp.asarray(prefix_mask),
                    scale=0.3)
    full_allowed = np.concatenate([np.broadcast_to(prefix_mask[:, None, None, :], (2, 1, 5, 2)), allowed], -1)
    ref = np_attention(q, np.concatenate([pk, k], 1), np.concatenate([pv, v], 1), full_allowed, 0.3)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_attention_fully_masked_row_is_finite():
    q, k, v = _qkv(2)
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.zeros((2, 5), bool), causal=True)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(v.mean(1, keepdims=True), v.shape), atol=1e-5)


def test_attention_dropout_matches_reference():
    q, k, v = _qkv(3)
    rng = jax.random.PRNGKey(7)
    rate = 0.25
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), None, causal=True, dropout_rate=rate,
                    dropout_rng=rng, deterministic=False)
    allowed = np.tril(np.ones((5, 5), bool))[None, None]
    logits = np.where(allowed, np.einsum("btnh,bsnh->bnts", q, k) * 0.5, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    keep = np.asarray(jax.random.bernoulli(rng, 1 - rate, probs.shape))
    ref = np.einsum("bnts,bsnh->btnh", np.where(keep, probs / (1 - rate), 0), v)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_kv_cache_decode_matches_full_causal_attention():
    q, k, v = _qkv(4, length=6)
    full = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), None, causal=True)
    cache = init_kv_cache(2, 8, 2, 4)
    steps = []
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 6)]:  # a prompt of 3, then one token at a time
        new_k, new_v = jnp.asarray(k[:, start:stop]), jnp.asarray(v[:, start:stop])
        cache, key_mask, q_positions = update_kv_cache(cache, new_k, new_v)
        steps.append(attention(jnp.asarray(q[:, start:stop]), cache.key, cache.value, key_mask, causal=True,
                               q_positions=q_positions))
    np.testing.assert_allclose(np.concatenate(steps, 1), np.asarray(full), atol=1e-5)
    assert int(cache.index) == 6
