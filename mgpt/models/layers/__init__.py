"""The layer kit every model family composes.

Dense layers with logical axes, norms (LayerNorm, RMSNorm incl. Gemma's ``1 + w``), activations, MLPs (GELU,
gated SwiGLU/GeGLU), rotary embeddings, the attention block (with its KV-cache step) over the one attention
function :func:`mgpt.models.attention.attention`, running a decoder's layer stack, :class:`BackboneInputs` /
:class:`BackboneOutput`, and the config helpers the families share (classifier-dropout fallback, dropout
override). Families build their modules from these pieces and never import a sibling family for
shared code; every module here takes plain sizes, not a family's architecture record.
"""

from mgpt.models.layers.basic import (
    ACTIVATIONS,
    MLP,
    GatedMLP,
    RMSNorm,
    activation_fn,
    classifier_dropout,
    dense,
    dropout_rates,
    layer_norm,
)
from mgpt.models.layers.blocks import (
    BackboneInputs,
    BackboneOutput,
    DecoderBackbone,
    LayerModule,
    attention_block,
    check_inputs,
    perturb_token_embeddings,
    pre_norm_residual,
    run_decoder_layers,
)
from mgpt.models.layers.segments import gather_segments, segment_positions, segment_token_index
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
    "BackboneInputs",
    "BackboneOutput",
    "DecoderBackbone",
    "GatedMLP",
    "LayerModule",
    "RMSNorm",
    "activation_fn",
    "apply_rope",
    "attention_block",
    "check_inputs",
    "classifier_dropout",
    "default_positions",
    "dense",
    "dropout_rates",
    "layer_norm",
    "perturb_token_embeddings",
    "pre_norm_residual",
    "gather_segments",
    "segment_positions",
    "segment_token_index",
    "rope_cos_sin",
    "rope_inv_freq",
    "rope_parameters",
    "run_decoder_layers",
]
