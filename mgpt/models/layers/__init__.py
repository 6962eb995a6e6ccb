"""The layer kit every model family composes.

Dense layers with logical axes, norms (LayerNorm, RMSNorm incl. Gemma's ``1 + w``), activations, MLPs (GELU,
gated SwiGLU/GeGLU), rotary embeddings, the KV-cache step, :class:`BackboneOutput` and the config helpers the
families share (classifier-dropout fallback, dropout override). :mod:`mgpt.models.attention` is the one
attention function. Families build their modules from these pieces and never import a sibling family for
shared code; every module here takes plain sizes, not a family's architecture record.
"""

from mgpt.models.layers.basic import (
    ACTIVATIONS,
    MLP,
    BackboneOutput,
    GatedMLP,
    RMSNorm,
    activation_fn,
    cached_attention_inputs,
    classifier_dropout,
    dense,
    dropout_rates,
    layer_norm,
)
from mgpt.models.layers.rotary import (
    SUPPORTED_ROPE,
    apply_rope,
    default_positions,
    rope_cos_sin,
    rope_inv_freq,
    rope_parameters,
)

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "SUPPORTED_ROPE",
    "BackboneOutput",
    "GatedMLP",
    "RMSNorm",
    "activation_fn",
    "apply_rope",
    "cached_attention_inputs",
    "classifier_dropout",
    "default_positions",
    "dense",
    "dropout_rates",
    "layer_norm",
    "rope_cos_sin",
    "rope_inv_freq",
    "rope_parameters",
]
