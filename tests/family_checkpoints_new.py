"""Tiny random Qwen3 and Phi-3 checkpoints (the families added with the family protocol), every head.

Built by tests/family_checkpoints.py (odd sizes, grouped-query attention, norm weights and biases moved
away from their initial values so a dropped q/k norm or bias shows in the logits), whose config tables
this module extends; its batch, tokenizer and comparison helpers serve these families too. Each family has
named variants, so that the parity tests cover what the config allows: tied and untied heads, attention
biases, per-layer sliding windows, partial rotary embeddings.
"""

import family_checkpoints
import transformers
from family_checkpoints import _decoder_common

FAMILIES = ("qwen3", "phi3")
PREFIX = {"qwen3": "Qwen3", "phi3": "Phi3"}


def qwen3_config(**kwargs):
    """q/k RMSNorm per head, head_dim 12 != hidden/heads, GQA 4/2, biases on q/k/v/o, linear RoPE, untied."""
    base = _decoder_common(hidden_size=40, intermediate_size=56, num_key_value_heads=2, head_dim=12,
                           attention_bias=True, rms_norm_eps=1e-5, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0})
    return transformers.Qwen3Config(**{**base, **kwargs})


def phi3_config(**kwargs):
    """Fused qkv/gate_up, GQA 4/2, half of each head rotated (partial_rotary_factor 0.5), untied."""
    base = _decoder_common(hidden_size=48, intermediate_size=40, num_key_value_heads=2, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5},
                           resid_pdrop=0.1, embd_pdrop=0.1, attention_dropout=0.1)
    return transformers.Phi3Config(**{**base, **kwargs})


CONFIGS = {"qwen3": qwen3_config, "phi3": phi3_config}
# Named config variants: what else the family's config allows, each checked like the base config.
VARIANTS = {
    "qwen3": {
        "base": {},
        "tied": {"tie_word_embeddings": True, "attention_bias": False},
        # layer 0 full attention, layer 1 a window of 3 (shorter than the test sequences)
        "sliding": {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1},
    },
    "phi3": {
        "base": {},
        "tied": {"tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}},
        "sliding": {"sliding_window": 3, "num_key_value_heads": 1},
    },
}


# family_checkpoints' builders (task_config, make_checkpoint) look families up in these tables.
family_checkpoints.CONFIGS.update(CONFIGS)
family_checkpoints.PREFIX.update(PREFIX)


def make_checkpoint(directory, family, task, variant="base", seed=0, bare=False, **config_kwargs):
    """Save a random ``<Family>For<Task>`` (or the bare ``<Family>Model``) of a named variant with a tokenizer;
    return it in eval mode."""
    config_kwargs = {**VARIANTS[family][variant], **config_kwargs}
    return family_checkpoints.make_checkpoint(directory, family, task, seed, bare, **config_kwargs)
