"""KV-cache decoding (mgpt.generate): cached logits equal a full forward pass, left padding changes
nothing, and the sampling filters keep exactly the tokens they should."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from mgpt import generate
from mgpt.models import build_model, make_spec

from family_checkpoints import llama_config, mistral_config

VOCAB = 64
PROMPTS = [[5, 9, 11, 3, 7], [12, 4], [8, 1, 30, 22, 17, 2, 9]]  # different lengths: left padding matters
PAD = 0
GREEDY = generate.DecodeSettings(max_new_tokens=6, pad_id=PAD)  # shared: the decoder compiles once per shape


def _gpt2_config():
    return transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                   initializer_range=0.3)


CONFIGS = {"gpt2": _gpt2_config, "llama": llama_config, "mistral": mistral_config}  # mistral: sliding window 4


def _model(family):
    spec = make_spec(CONFIGS[family](), task="causal_lm")
    model = build_model(spec)
    params = nn.unbox(model.init(jax.random.PRNGKey(1), jnp.ones((1, 4), jnp.int32))["params"])
    return model, params


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def decoder(request):
    return _model(request.param)


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_cached_decoding_logits_equal_a_full_forward_pass(family):
    model, params = _model(family)
    steps = 4
    ids, mask = generate.left_pad(PROMPTS, PAD)
    new = np.random.default_rng(0).integers(3, VOCAB, (len(PROMPTS), steps)).astype(np.int32)
    full_ids = np.concatenate([ids, new], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(new)], axis=1)
    positions = generate.prompt_positions(jnp.asarray(full_mask))
    apply = jax.jit(lambda ids, positions, cache: model.apply(
        {"params": params}, ids, attention_mask=full_mask, position_ids=positions, cache=cache))
    full = jax.jit(lambda: model.apply({"params": params}, full_ids, attention_mask=full_mask,
                                       position_ids=positions))()

    cache = generate.init_cache(model.spec, len(PROMPTS), full_ids.shape[1])
    prompt_len = ids.shape[1]
    logits, cache = apply(ids, positions[:, :prompt_len], cache)
    pieces = [logits]
    for t in range(steps):
        slot = prompt_len + t
        logits, cache = apply(new[:, t:t + 1], positions[:, slot:slot + 1], cache)
        pieces.append(logits)
    cached = np.concatenate(pieces, axis=1)
    real = full_mask.astype(bool)  # a pad slot's output is never used
    np.testing.assert_allclose(cached[real], np.asarray(full)[real], atol=1e-5, rtol=1e-5)
    assert int(cache[0].index) == full_ids.shape[1]


def test_greedy_left_padded_batch_equals_each_prompt_alone(decoder):
    model, params = decoder
    settings = GREEDY
    ids, mask = generate.left_pad(PROMPTS, PAD)
    batched = np.asarray(generate.generate_tokens(model, params, ids, mask, settings))
    for row in (0, 1):  # 2 and 5 pad slots in the batch; none alone
        alone_ids, alone_mask = generate.left_pad([PROMPTS[row]], PAD)
        assert alone_mask.all()
        alone = np.asarray(generate.generate_tokens(model, params, alone_ids, alone_mask, settings))
        np.testing.assert_array_equal(batched[row], alone[0])


def test_top_k_one_sampling_is_greedy(decoder):
    model, params = decoder
    ids, mask = generate.left_pad(PROMPTS, PAD)
    greedy = generate.generate_tokens(model, params, ids, mask, GREEDY)
    sampled = generate.generate_tokens(model, params, ids, mask,
                                       generate.DecodeSettings(max_new_tokens=6, temperature=1.3, top_k=1, pad_id=PAD),
                                       jax.random.PRNGKey(7))
    np.testing.assert_array_equal(np.asarray(sampled), np.asarray(greedy))


def test_stop_token_ends_each_sequence_and_pads_the_rest(decoder):
    model, params = decoder
    ids, mask = generate.left_pad(PROMPTS, PAD)
    free = np.asarray(generate.generate_tokens(model, params, ids, mask, GREEDY))
    stop = int(free[0, 2])
    stopped = np.asarray(generate.generate_tokens(
        model, params, ids, mask, generate.DecodeSettings(max_new_tokens=6, stop_tokens=(stop,), pad_id=PAD)))
    for row in range(len(PROMPTS)):
        hits = np.nonzero(free[row] == stop)[0]
        end = int(hits[0]) + 1 if len(hits) else free.shape[1]  # the stop token itself is emitted
        expected = np.concatenate([free[row, :end], np.full(free.shape[1] - end, PAD)])
        np.testing.assert_array_equal(stopped[row], expected)
    assert generate.until_stop(stopped[0], (stop,)) == [int(t) for t in free[0, :2]]


def test_top_p_keeps_only_the_nucleus():
    probs = np.asarray([0.05, 0.5, 0.15, 0.3], np.float32)
    logits = jnp.log(jnp.asarray(probs))[None, :]

    def kept(top_p):
        out = generate.filter_logits(logits, generate.DecodeSettings(temperature=1.0, top_p=top_p))
        return set(np.nonzero(np.isfinite(np.asarray(out[0])))[0].tolist())

    # Sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 2), 0.05 (id 0): the smallest prefix with mass >= top_p.
    assert kept(0.5) == {1}
    assert kept(0.7) == {1, 3}
    assert kept(0.85) == {1, 3, 2}
    assert kept(1.0) == {0, 1, 2, 3}
    settings = generate.DecodeSettings(temperature=1.0, top_p=0.7)
    draws = np.asarray(generate.sample_next(jnp.tile(logits, (4000, 1)), jax.random.PRNGKey(3), settings))
    assert set(draws.tolist()) == {1, 3}
    # Inside the nucleus the probabilities are renormalised: 0.5 / 0.8 and 0.3 / 0.8.
    np.testing.assert_allclose(np.mean(draws == 1), 0.625, atol=0.03)


def test_top_k_and_temperature_filter():
    logits = jnp.asarray([[1.0, 4.0, 2.0, 3.0]])
    out = generate.filter_logits(logits, generate.DecodeSettings(temperature=2.0, top_k=2))
    np.testing.assert_allclose(np.asarray(out), [[-np.inf, 2.0, -np.inf, 1.5]])


def test_settings_and_lengths_are_checked(decoder):
    model, params = decoder
    with pytest.raises(ValueError, match="top_p"):
        generate.DecodeSettings(top_p=0.0)
    if model.spec.family == "gpt2":  # 32 learned positions
        ids, mask = generate.left_pad(PROMPTS, PAD)
        with pytest.raises(ValueError, match="exceeds the model's 32 positions"):
            generate.generate_tokens(model, params, ids, mask, generate.DecodeSettings(max_new_tokens=30))
