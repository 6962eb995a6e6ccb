"""Rotary position embeddings (the ``rotate_half`` convention of transformers) and their config."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

SUPPORTED_ROPE = ("default", "linear", "llama3")


def rope_parameters(config, partial_rotary: bool = False) -> tuple[float, tuple]:
    """``(rope_theta, scaling)`` of a transformers config: ``scaling`` the sorted ``(key, value)`` pairs of
    its RoPE parameters besides the theta. Refuses kinds outside :data:`SUPPORTED_ROPE` and per-layer
    parameters; a ``partial_rotary_factor`` != 1 is kept in ``scaling`` when the family's RoPE honours it
    (``partial_rotary``, e.g. Phi-3), else refused."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params:  # configs written before rope_parameters existed
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    if set(params) & set(getattr(config, "layer_types", None) or ()):
        raise ValueError(f"{config.model_type} config: per-layer RoPE parameters are not supported")
    kind = params["rope_type"]
    if kind not in SUPPORTED_ROPE:
        raise ValueError(f"{config.model_type} config: rope_type={kind!r} is not supported; "
                         f"mgpt supports {SUPPORTED_ROPE}")
    factor = float(params.pop("partial_rotary_factor", 1.0) or 1.0)
    if factor != 1.0:
        if not partial_rotary:
            raise ValueError(f"{config.model_type} config: partial_rotary_factor != 1 is not supported")
        params["partial_rotary_factor"] = factor
    if kind == "llama3" and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = config.max_position_embeddings
    theta = float(params.pop("rope_theta"))
    return theta, tuple(sorted(params.items()))


def rope_inv_freq(head_dim: int, theta: float, scaling: tuple = ()) -> np.ndarray:
    """Inverse frequencies ``(rotary_dim // 2,)`` in float32 with the RoPE ``scaling`` (sorted ``(key, value)``
    pairs: ``rope_type`` "default", "linear" with ``factor``, or "llama3"), as transformers computes them.
    ``rotary_dim`` is ``head_dim``, or ``int(head_dim * partial_rotary_factor)`` when ``scaling`` has one."""
    params = dict(scaling)
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)
    kind = params.get("rope_type", "default")
    if kind == "linear":
        inv_freq = inv_freq / np.float32(params["factor"])
    elif kind == "llama3":
        factor = np.float32(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        old_len = float(params["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
        smooth = ((np.float32(old_len) / wavelen - np.float32(low)) / np.float32(high - low)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled)
    return np.asarray(inv_freq, np.float32)


def rope_cos_sin(positions, inv_freq: np.ndarray):
    """``cos``/``sin`` ``(B, T, D)`` in float32 for integer ``positions`` ``(B, T)``."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """Rotate ``x`` ``(B, T, H, D)`` by position: ``x * cos + rotate_half(x) * sin`` (cos/sin in x's dtype).

    cos/sin narrower than ``D`` (partial RoPE) turn the first dims of each head and pass the rest unchanged."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    dim = cos.shape[-1]
    x, rest = x[..., :dim], x[..., dim:]
    half = dim // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return jnp.concatenate([x * cos + rotated * sin, rest], axis=-1)


def default_positions(attention_mask, batch: int, length: int):
    """Cumulative positions from 0 over real tokens (``arange`` for right padding); ``arange`` without a mask."""
    if attention_mask is None:
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32)[None, :], (batch, length))
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)
