"""Tiny random Qwen3 and Phi-3 checkpoints (the families added with the family protocol), every head.

Built like tests/family_checkpoints.py (odd sizes, grouped-query attention, norm weights and biases moved
away from their initial values so a dropped q/k norm or bias shows in the logits) and sharing its batch,
tokenizer and comparison helpers. Each family has named variants so that the parity tests cover what
the config allows: tied and untied heads, attention biases, per-layer sliding windows, partial rotary
embeddings.
"""

import torch
import transformers
from family_checkpoints import TASK_CLASS, _decoder_common, save_tokenizer

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


def task_config(family, task, **kwargs):
    if task == "regression":
        kwargs.update(num_labels=1, problem_type="regression")
    elif task != "causal_lm":
        kwargs.setdefault("num_labels", 3)
    return CONFIGS[family](**kwargs)


def make_checkpoint(directory, family, task, variant="base", seed=0, bare=False, **config_kwargs):
    """Save a random ``<Family>For<Task>`` (or the bare ``<Family>Model``) with a tokenizer; return it in eval mode."""

    config = task_config(family, task, **{**VARIANTS[family][variant], **config_kwargs})
    cls = getattr(transformers, PREFIX[family] + ("Model" if bare else TASK_CLASS[task]))
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0; move them so mistakes show
        for name, param in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                param.add_(0.2 * torch.randn_like(param))
    model.save_pretrained(directory)
    save_tokenizer(directory)
    return model
