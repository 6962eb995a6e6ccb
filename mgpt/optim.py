"""Optax optimizer factory: any optimizer by name, schedules, clipping, decay masks, trainable masks.

Gradient accumulation is done inside the train step (``mgpt.train.step``), where micro-batch loss sums
and counts add up exactly; this module only builds the per-update transformation.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import jax
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
    """The full update rule: clip -> optimizer (with decoupled or added weight decay) -> trainable mask.

    Frozen parameters go through ``optax.set_to_zero`` inside ``optax.multi_transform``, so they get
    no update and hold no optimizer state. ``trainable_mask`` (a bool tree like ``params``, e.g. from
    ``mgpt.peft``) takes the place of ``cfg.trainable`` when given.
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
    chain.append(factory(learning_rate=make_schedule(cfg, total_steps), **kwargs))
    update = optax.chain(*chain)
    if trainable_mask is None:
        if cfg.trainable == "all":
            return update
        trainable_mask = _mask_from_config(params, cfg.trainable)
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable_mask)
    return optax.multi_transform({"train": update, "freeze": optax.set_to_zero()}, labels)


def count_parameters(params: Any, mask: Any | None = None) -> int:
    """Number of scalars in ``params`` (only where ``mask`` is True, when given)."""
    leaves = jax.tree_util.tree_leaves(params)
    if mask is None:
        return int(sum(x.size for x in leaves))
    return int(sum(x.size for x, m in zip(leaves, jax.tree_util.tree_leaves(mask)) if m))
