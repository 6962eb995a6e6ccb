"""Packed rows: several examples share one row, told apart by segment ids (1, 2, ... per example, 0 = padding).

Attention already keeps segments apart (an integer mask holds segment ids, see mgpt.models.attention). What a
model needs besides: positions that restart with every segment, so each example is embedded as if it were
alone, and the token each sequence-level head pools for each segment (its first token for encoders' [CLS],
its last real token for decoders). Segments are contiguous runs of one id, as mgpt.data.packing writes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_positions(segment_ids, offset: int = 0, padding_position: int = 0):
    """``offset + index within the token's segment`` on real tokens, ``padding_position`` on padding ((B, T))."""
    segment_ids = jnp.asarray(segment_ids)
    length = segment_ids.shape[1]
    index = jnp.arange(length, dtype=jnp.int32)[None, :]
    boundary = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                                segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    start = jax.lax.cummax(jnp.where(boundary, index, 0), axis=1)  # where the token's segment began
    return jnp.where(segment_ids > 0, index - start + offset, padding_position).astype(jnp.int32)


def segment_token_index(segment_ids, num_segments: int, last: bool):
    """``(B, K)`` index of each segment's first (``last=False``) or last token; an absent segment gives 0 or
    T-1 (finite, and its label slot is weighted out)."""
    segment_ids = jnp.asarray(segment_ids)
    ids = jnp.arange(1, num_segments + 1, dtype=segment_ids.dtype)
    member = segment_ids[:, None, :] == ids[None, :, None]  # (B, K, T)
    if last:
        return segment_ids.shape[1] - 1 - jnp.argmax(member[..., ::-1], axis=-1)
    return jnp.argmax(member, axis=-1)


def gather_segments(hidden, segment_ids, num_segments: int, last: bool):
    """The hidden state ``(B, K, E)`` of each segment's first or last token (see :func:`segment_token_index`)."""
    index = segment_token_index(segment_ids, num_segments, last)
    return jnp.take_along_axis(hidden, index[..., None], axis=1)
