"""Dense layers, norms, activations, MLPs and the config helpers the families share."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mgpt.models.partitioning import NORM, dense_inits, named, norm_inits

# Activation names used by transformers configs. "gelu" is the exact erf form; the *_new/_fast/_tanh
# variants are the tanh approximation.
ACTIVATIONS: dict[str, Callable] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation_fn(name: str) -> Callable:
    """The activation for a transformers ``hidden_act``/``activation_function`` name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# --- config helpers -------------------------------------------------------------------------------------


def classifier_dropout(config, default: float = 0.1) -> float:
    """The head dropout transformers uses: ``classifier_dropout``, else ``hidden_dropout``, else ``default``
    (the fallback chain of GPT2ForTokenClassification and GenericForTokenClassification)."""
    for name in ("classifier_dropout", "hidden_dropout"):
        value = getattr(config, name, None)
        if value is not None:
            return float(value)
    return float(default)


def dropout_rates(rates: dict, dropout: Optional[float]) -> dict:
    """``rates`` as floats, every one replaced by ``dropout`` when it is given (``ModelConfig.dropout``)."""
    return {name: float(rate if dropout is None else dropout) for name, rate in rates.items()}


# --- dense, norms ---------------------------------------------------------------------------------------


def dense(features: int, init_std: float, dtype, name: Optional[str] = None, use_bias: bool = True,
          axes: tuple = (None, None)) -> nn.Dense:
    """An ``nn.Dense`` with float32 master weights, normal(``init_std``) kernel ``(in, out)`` named by the
    logical ``axes`` (see :mod:`mgpt.models.partitioning`), zero bias, computing in ``dtype``."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name,
                    **dense_inits(init_std, axes))


def layer_norm(eps: float, dtype, name: Optional[str] = None) -> nn.LayerNorm:
    """``nn.LayerNorm`` (scale and bias, both named ``("embed",)``)."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name, **norm_inits())


class RMSNorm(nn.Module):
    """``x / rms(x)`` in float32, then times ``scale`` (Llama) or ``1 + scale`` (Gemma, ``offset=True``)."""

    eps: float
    offset: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.offset else nn.initializers.ones
        scale = self.param("scale", named(init, NORM), (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        if self.offset:  # GemmaRMSNorm multiplies in float32, then casts
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)
        return scale.astype(self.dtype) * normed.astype(self.dtype)  # LlamaRMSNorm casts, then multiplies


# --- MLPs -----------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """``out(act(in(x)))`` with dropout on the output (GPT-2's ``c_fc``/``c_proj``)."""

    hidden: int
    inner: int
    activation: str
    init_std: float
    dropout: float = 0.0
    dtype: Any = jnp.float32
    names: tuple = ("c_fc", "c_proj")

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = dense(self.inner, self.init_std, self.dtype, self.names[0], axes=("embed", "mlp"))(x)
        h = dense(self.hidden, self.init_std, self.dtype, self.names[1], axes=("mlp", "embed"))(
            activation_fn(self.activation)(h))
        return nn.Dropout(self.dropout)(h, deterministic=deterministic)


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``: SwiGLU (silu) or GeGLU (gelu), as the Llama family.

    ``fused``: one ``gate_up_proj`` whose output holds the gate, then the up projection (Phi-3)."""

    hidden: int
    inner: int
    activation: str
    init_std: float
    use_bias: bool = False
    dtype: Any = jnp.float32
    fused: bool = False

    @nn.compact
    def __call__(self, x):
        def proj(features, name, axes):
            return dense(features, self.init_std, self.dtype, name, self.use_bias, axes)

        if self.fused:
            gate, up = jnp.split(proj(2 * self.inner, "gate_up_proj", ("embed", "mlp"))(x), 2, axis=-1)
        else:
            gate = proj(self.inner, "gate_proj", ("embed", "mlp"))(x)
            up = proj(self.inner, "up_proj", ("embed", "mlp"))(x)
        return proj(self.hidden, "down_proj", ("mlp", "embed"))(activation_fn(self.activation)(gate) * up)
