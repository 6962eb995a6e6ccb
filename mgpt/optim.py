"""Optax optimizer factory: any optimizer by name, schedules, clipping, decay masks, trainable masks, and the
fine-tuning regularizers: layer-wise learning-rate decay, L2-SP and an exponential moving average of the weights.

Gradient accumulation is done inside the train step (``mgpt.train.step``), where micro-batch loss sums
and counts add up exactly; this module only builds the per-update transformation. The regularizers are
Optax transformations too: what they hold (the pretrained weights, the average) lives in the optimizer
state, so it is checkpointed, sharded like the params and left alone by a skipped non-finite step.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgpt.config import ConfigError, OptimizerConfig

# Parameter-name fragments that weight decay skips by default: biases, norm scales and shifts.
_NO_DECAY_PATTERN = re.compile(r"(^|/)(bias|b|scale|LayerNorm|layer_norm|ln_[^/]*|ln_f|norm[^/]*)(/|$)")


def path_names(params: Any) -> Any:
    """A tree like ``params`` whose leaves are the '/'-joined parameter paths."""
    # tree_map_with_path keeps empty subtrees (e.g. BitFit's empty "peft"), so the structure always matches
    return jax.tree_util.tree_map_with_path(lambda path, _: "/".join(str(getattr(k, "key", k)) for k in path), params)


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: every parameter except biases and normalisation weights."""
    return jax.tree_util.tree_map(lambda name: not _NO_DECAY_PATTERN.search(name), path_names(params))


def trainable_mask(params: Any, trainable: str) -> Any:
    """True where a parameter is trained.

    ``all`` trains everything, ``head`` only the task head, anything else is a regular expression
    searched in each '/'-joined path (e.g. ``head/|bias`` for BitFit plus the head).
    """
    if trainable == "all":
        return jax.tree_util.tree_map(lambda _: True, path_names(params))
    pattern = re.compile(r"^head/" if trainable == "head" else trainable)
    mask = jax.tree_util.tree_map(lambda name: bool(pattern.search(name)), path_names(params))
    if not any(jax.tree_util.tree_leaves(mask)):
        raise ConfigError(f"optimizer.trainable={trainable!r} matches no parameter")
    return mask


_mask_from_config = trainable_mask  # make_optimizer's argument of the same name shadows it


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate per update: warmup, then constant, linear or cosine decay."""
    peak = cfg.learning_rate
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    decay_steps = max(total_steps - warmup, 1)
    end = peak * cfg.end_learning_rate_ratio
    if cfg.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        main = optax.linear_schedule(peak, end, decay_steps)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_learning_rate_ratio)
    else:
        raise ConfigError(f"optimizer.schedule={cfg.schedule!r}: expected one of constant, linear, cosine")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _factory(name: str) -> Callable[..., optax.GradientTransformation]:
    factory = getattr(optax, name, None)
    if factory is None or not callable(factory) or "learning_rate" not in inspect.signature(factory).parameters:
        valid = sorted(
            n
            for n in dir(optax)
            if not n.startswith("_")
            and callable(getattr(optax, n))
            and _takes_learning_rate(getattr(optax, n))
        )
        raise ConfigError(f"optimizer.name={name!r} is not an optax optimizer; valid names include: {', '.join(valid)}")
    return factory


def _takes_learning_rate(obj) -> bool:
    try:
        return "learning_rate" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def make_optimizer(cfg: OptimizerConfig, total_steps: int, params: Any,
                   trainable_mask: Any | None = None) -> optax.GradientTransformation:
    """The full update rule: clip -> optimizer (with decoupled or added weight decay) -> trainable mask, then the
    regularizers that are on: L2-SP (``cfg.l2_sp``) -> layer-wise lr decay (``cfg.layer_lr_decay``) -> EMA
    (``cfg.ema_decay``).

    Frozen parameters go through ``optax.set_to_zero`` inside ``optax.multi_transform``, so they get
    no update and hold no optimizer state (nor a pretrained copy or an average). ``trainable_mask`` (a bool
    tree like ``params``, e.g. from ``mgpt.peft``) takes the place of ``cfg.trainable`` when given. With every
    regularizer off the result is exactly the plain update rule (same state layout as before they existed).
    """
    factory = _factory(cfg.name)
    accepted = inspect.signature(factory).parameters
    kwargs = dict(cfg.kwargs)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"optimizer.kwargs {unknown} are not arguments of optax.{cfg.name}; it takes: {', '.join(accepted)}"
        )
    mask = decay_mask(params) if not cfg.decay_biases_and_norms else None
    chain = []
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    if "weight_decay" in accepted:
        kwargs["weight_decay"] = cfg.weight_decay
        if "mask" in accepted and mask is not None:
            kwargs["mask"] = mask
    elif cfg.weight_decay:
        # Optimizers without decoupled decay (sgd, adam, ...) get classic L2 added to the gradient.
        chain.append(optax.add_decayed_weights(cfg.weight_decay, mask))
    schedule = make_schedule(cfg, total_steps)
    chain.append(factory(learning_rate=schedule, **kwargs))
    update = optax.chain(*chain)
    if trainable_mask is None and cfg.trainable != "all":
        trainable_mask = _mask_from_config(params, cfg.trainable)
    if trainable_mask is not None:
        labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable_mask)
        update = optax.multi_transform({"train": update, "freeze": optax.set_to_zero()}, labels)
    return _with_regularizers(update, cfg, schedule, params, trainable_mask)


def _with_regularizers(update: optax.GradientTransformation, cfg: OptimizerConfig, schedule: optax.Schedule,
                       params: Any, trainable_mask: Any | None) -> optax.GradientTransformation:
    """``update`` followed by the fine-tuning regularizers that ``cfg`` turns on (``update`` itself when none).

    L2-SP comes before the layer-wise decay, so a layer's pull toward its pretrained value is scaled with its
    learning rate, as its weight decay is (Hugging Face's LLRD puts each layer in a param group of its own lr);
    the EMA comes last and sees the final updates. L2-SP and the EMA hold state only for trained params.
    """
    trained = trainable_mask if trainable_mask is not None else jax.tree_util.tree_map(lambda _: True, params)
    chain = [update]
    if cfg.l2_sp > 0:
        mask = jax.tree_util.tree_map(lambda t, b: bool(t and b), trained, backbone_mask(params))
        chain.append(optax.masked(l2_sp(cfg.l2_sp, schedule), mask))
    if cfg.layer_lr_decay < 1:
        chain.append(scale_by_tree(layer_lr_factors(params, cfg.layer_lr_decay)))
    if cfg.ema_decay > 0:
        ema = ema_of_params(cfg.ema_decay, warmup=cfg.ema_warmup)
        chain.append(ema if trainable_mask is None else optax.masked(ema, trained))
    return update if len(chain) == 1 else optax.chain(*chain)


# --- Layer-wise learning-rate decay (LLRD) --------------------------------------------------------------------
#
# The rule, over a parameter's '/'-joined path (PEFT's "base/" and "peft/<method>/" prefixes included):
# - outside the backbone (no "backbone" component: the task head, prompt / prefix tuning's new params): 1;
# - inside it, under a component "<stack>_<i>" (h_3, layers_3, layer_3, block_3; LoRA and adapter params carry
#   the path of the layer they sit in): layer i of L trains at decay ** (L - i);
# - the scanned stack itself ("backbone/h", "backbone/layers": leaves stacked along a leading axis of length L):
#   the array decay ** (L - [0, 1, ..., L-1]), shaped (L, 1, ...) to broadcast over that axis;
# - the embeddings (a component naming them: wte, wpe, embed_tokens, embeddings/... with BERT's embedding
#   LayerNorm): decay ** (L + 1);
# - anything else in the backbone (the final norm, BERT's pooler): 1.
# L is the number of layers found in the paths; a decay below 1 with none found is a ConfigError.

_LAYER_STACKS = ("h", "layer", "layers", "block", "blocks")
_LAYER = re.compile(rf"^(?:{'|'.join(_LAYER_STACKS)})_(\d+)$")
_EMBEDDING = re.compile(r"^(wte|wpe|.*embed.*)$", re.IGNORECASE)


def _parts(path) -> list[str]:
    return [str(getattr(k, "key", k)) for k in path]


def _layer_of(parts: list[str]) -> int | None:
    """The layer index of an unscanned per-layer parameter, else None."""
    for part in parts:
        match = _LAYER.match(part)
        if match:
            return int(match.group(1))
    return None


def _is_scanned_stack(parts: list[str]) -> bool:
    """Whether the path runs through the scanned layer stack: ``backbone/<stack>/...`` (no index)."""
    after = parts[parts.index("backbone") + 1:] if "backbone" in parts else []
    return bool(after) and after[0] in _LAYER_STACKS


def num_layers(params: Any) -> int:
    """The number of transformer layers in ``params``: one more than the largest ``<stack>_<i>`` index, or the
    leading axis of the scanned stack; 0 when neither is found."""
    count = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = _parts(path)
        if "backbone" not in parts:
            continue
        index = _layer_of(parts)
        if index is not None:
            count = max(count, index + 1)
        elif _is_scanned_stack(parts) and len(np.shape(leaf)):
            count = max(count, int(np.shape(leaf)[0]))
    return count


def layer_lr_factors(params: Any, decay: float) -> Any:
    """A tree like ``params`` of the factor each parameter's update is scaled by under layer-wise learning-rate
    decay (see the rule above): Python floats, or for scanned layers a float32 array ``(L, 1, ...)``."""
    layers = num_layers(params)
    if decay < 1 and layers == 0:
        raise ConfigError(f"optimizer.layer_lr_decay={decay}: no transformer layer found in the parameter paths "
                          f"(expected components like h_0, layers_0, layer_0, or a scanned 'backbone/h' stack)")

    def factor(path, leaf):
        parts = _parts(path)
        if "backbone" not in parts:
            return 1.0
        index = _layer_of(parts)
        if index is not None:
            return float(decay ** (layers - index))
        if _is_scanned_stack(parts):
            shape = np.shape(leaf)
            per_layer = np.asarray(decay, np.float64) ** (layers - np.arange(shape[0]))
            return per_layer.astype(np.float32).reshape((shape[0],) + (1,) * (len(shape) - 1))
        after = parts[parts.index("backbone") + 1:]
        if any(_EMBEDDING.match(part) for part in after):
            return float(decay ** (layers + 1))
        return 1.0

    return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_tree(factors: Any) -> optax.GradientTransformation:
    """Multiply each update by its factor in ``factors`` (a tree like the params; scalars or broadcastable arrays).

    Scaling the final update scales that parameter's learning rate, its weight decay included."""

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, f: (u * f).astype(u.dtype), updates, factors), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


# --- L2-SP: decay toward the pretrained weights (Li et al. 2018) ------------------------------------------------


def backbone_mask(params: Any) -> Any:
    """True for the pretrained backbone's params (``backbone/...``, under PEFT ``base/backbone/...``): those with a
    pretrained value L2-SP can pull toward. The task head and PEFT's new params are False."""
    return jax.tree_util.tree_map(lambda name: bool(re.match(r"^(base/)?backbone/", name)), path_names(params))


class L2SPState(NamedTuple):
    count: jax.Array  # updates so far: the schedule's step, as in the optimizer's own state
    anchor: Any  # theta0: the params at the start of fine-tuning


def l2_sp(rate: float, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Add the decoupled L2-SP step ``-schedule(t) * rate * (theta - theta0)`` to each update; theta0 is the params
    given to ``init`` (the start of fine-tuning), kept in the state, so a resumed run keeps the original one."""

    def init(params):
        return L2SPState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("L2-SP (optimizer.l2_sp) needs the params in optimizer.update")
        step = schedule(state.count) * rate

        def pull(u, p, p0):
            return (u - step * (jnp.asarray(p, jnp.float32) - jnp.asarray(p0, jnp.float32))).astype(u.dtype)

        updates = jax.tree_util.tree_map(pull, updates, params, state.anchor)
        return updates, L2SPState(optax.safe_int32_increment(state.count), state.anchor)

    return optax.GradientTransformation(init, update)


# --- Exponential moving average of the weights ------------------------------------------------------------------


class EmaState(NamedTuple):
    ema: Any  # the average, float32 at least (a bfloat16 average would lose the small (1 - d) increments)
    count: Any = None  # updates averaged so far, kept only with the warm-up (None adds no leaf: same layout)


def _ema_dtype(dtype) -> Any:
    return jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else dtype


def ema_warmup_decay(decay: float, count: jax.Array) -> jax.Array:
    """The decay of update number ``count`` (1-based) with the warm-up: ``min(decay, (1 + count) / (10 + count))``,
    the schedule of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``. Early updates weigh the new params
    heavily, so the average leaves the starting weights (and a fresh head's random init) within a few steps."""
    count = jnp.asarray(count, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + count) / (10.0 + count))


def ema_of_params(decay: float, warmup: bool = False) -> optax.GradientTransformation:
    """Keep ``ema = d * ema + (1 - d) * new_params`` in the state, ``new_params`` being the params after this
    update (``optax.apply_updates(params, updates)``); initialised to the params. ``d`` is ``decay``, or with
    ``warmup`` :func:`ema_warmup_decay` of the update's number. Updates pass unchanged, so it belongs at the end
    of the chain."""

    def init(params):
        ema = jax.tree_util.tree_map(lambda p: jnp.array(p, dtype=_ema_dtype(jnp.result_type(p)), copy=True),
                                     params)
        return EmaState(ema, jnp.zeros([], jnp.int32) if warmup else None)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("the weight average (optimizer.ema_decay) needs the params in optimizer.update")
        new_params = optax.apply_updates(params, updates)
        count = None if state.count is None else optax.safe_increment(state.count)
        d = decay if count is None else ema_warmup_decay(decay, count)
        ema = jax.tree_util.tree_map(lambda e, p: (d * e + (1.0 - d) * p.astype(e.dtype)).astype(e.dtype),
                                     state.ema, new_params)
        return updates, EmaState(ema, count)

    return optax.GradientTransformation(init, update)


def _is_ema(node) -> bool:
    return isinstance(node, EmaState)


def ema_params(opt_state: Any, params: Any) -> Any | None:
    """The averaged weights in ``opt_state`` as a tree like ``params`` (in their dtypes), frozen params (which hold
    no average) taken from ``params``; None when the optimizer keeps no average (``optimizer.ema_decay`` 0).

    Leaves may carry a leading axis (e.g. ``pmap``'s device axis) as long as ``opt_state`` and ``params`` agree."""
    found = [node for node in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_ema) if _is_ema(node)]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"the optimizer state holds {len(found)} weight averages; expected one")

    def pick(p, e):
        return p if isinstance(e, optax.MaskedNode) else jnp.asarray(e).astype(jnp.result_type(p))

    return jax.tree_util.tree_map(pick, params, found[0].ema)


def count_parameters(params: Any, mask: Any | None = None) -> int:
    """Number of scalars in ``params`` (only where ``mask`` is True, when given)."""
    leaves = jax.tree_util.tree_leaves(params)
    if mask is None:
        return int(sum(x.size for x in leaves))
    return int(sum(x.size for x, m in zip(leaves, jax.tree_util.tree_leaves(mask)) if m))
