"""The train step's objective, chosen once from the config: plain, adversarial (FGM, PGD, FreeLB, SMART), R-Drop,
cutoff, or an adversarial method over R-Drop or cutoff.

The algorithms are pure functions in :mod:`mgpt.robust`; this module binds them to the run's model and task
(``embeds_delta`` / ``embeds_keep`` model inputs, the task loss, the divergence of the task's outputs) and
returns a :class:`mgpt.train.step.Objective`. The plain train step never branches on any of it.

Randomness: every pass of one step uses the step's dropout key (so with ``robust.epsilon=0`` an adversarial
step is the plain step); perturbation starts and cutoff masks draw from keys folded out of it.
"""

from __future__ import annotations

import functools

import jax
import optax

from mgpt import config as config_lib
from mgpt.config import ConfigError
from mgpt.data.augment import embedding_ops
from mgpt.robust import adversarial, anchor, consistency, divergence
from mgpt.robust import perturbation as pert
from mgpt.train.step import PLAIN, Objective, forward, loss_and_count

_PERTURB_SALT, _CUTOFF_SALT = 0x5AFE, 0xC0FF


def _extra(delta, keep) -> dict:
    extra = {}
    if delta is not None:
        extra["embeds_delta"] = delta
    if keep is not None:
        extra["embeds_keep"] = keep
    return extra


def _cutoff_keep(ops: dict, groups, rng):
    """The cutoff mask of the configured embedding op (token_cutoff or span_cutoff), or None."""
    if "token_cutoff" in ops:
        return pert.token_cutoff_keep(rng, groups, ops["token_cutoff"])
    if "span_cutoff" in ops:
        return pert.span_cutoff_keep(rng, groups, ops["span_cutoff"])
    return None


def _gradients(params, batch, rng, *, model, task, context, rc: config_lib.RobustConfig, cutoff: dict):
    groups = pert.token_groups(batch)
    shape = groups.shape + (model.spec.arch.hidden_size,)
    perturb_key = jax.random.fold_in(rng, _PERTURB_SALT)
    keep = _cutoff_keep(cutoff, groups, jax.random.fold_in(rng, _CUTOFF_SALT))

    def outputs(p, key, delta, mask):
        return forward(model, p, batch, deterministic=False, rng=key, extra=_extra(delta, mask))

    def task_value(p, key, delta, mask):
        return loss_and_count(p, batch, key, model=model, task=task, extra=_extra(delta, mask))

    def task_loss(logits):
        return task.loss(logits, batch)

    kl = functools.partial(divergence.symmetric_kl, task.label_kind, batch=batch)

    if rc.adversarial == "smart":
        return adversarial.smart(
            lambda p, delta: outputs(p, rng, delta, keep), task_loss, kl, params, perturb_key, shape, groups,
            epsilon=rc.epsilon, steps=rc.steps, step_size=rc.step_size, init_std=rc.init_std,
            weight=rc.smart_weight, anchor=context.get("anchor"), bregman_weight=rc.smart_bregman_weight)
    if rc.rdrop_alpha > 0:
        loss = consistency.rdrop(outputs, task_loss, kl, rng, alpha=rc.rdrop_alpha, keep=keep)
    elif keep is not None and rc.cutoff_consistency > 0:
        js = functools.partial(divergence.jensen_shannon, task.label_kind, batch=batch)
        loss = consistency.cutoff_consistency(outputs, task_loss, js, rng, keep, weight=rc.cutoff_consistency)
    else:
        loss = consistency.plain(task_value, rng, keep)
    if rc.adversarial == "fgm":
        return adversarial.fgm(loss, params, shape, groups, epsilon=rc.epsilon)
    if rc.adversarial == "pgd":
        return adversarial.pgd(loss, params, shape, groups, epsilon=rc.epsilon, steps=rc.steps,
                               step_size=rc.step_size)
    if rc.adversarial == "freelb":
        return adversarial.freelb(loss, params, perturb_key, shape, groups, epsilon=rc.epsilon, steps=rc.steps,
                                  step_size=rc.step_size)
    grads, (reported, count) = jax.grad(lambda p: loss(p, None), has_aux=True)(params)
    return grads, reported, count


def _anchor_context(state: dict) -> dict:
    return {"anchor": anchor.find_anchor(state["opt_state"])}


def objective_name(config: config_lib.ExperimentConfig) -> str:
    """``"plain"``, or the methods in use joined by ``+`` (e.g. ``"fgm+rdrop"``)."""
    rc = config.robust
    parts = [] if rc.adversarial == "none" else [rc.adversarial]
    if rc.rdrop_alpha > 0:
        parts.append("rdrop")
    parts += sorted(embedding_ops(config.data.augment))
    return "+".join(parts) or "plain"


def check(config: config_lib.ExperimentConfig, task) -> None:
    """Refuse combinations that cannot work, naming the keys."""
    rc, cutoff = config.robust, embedding_ops(config.data.augment)
    if len(cutoff) > 1:
        raise ConfigError(f"data.augment: use one of token_cutoff and span_cutoff, not both ({sorted(cutoff)})")
    if rc.adversarial == "smart" and (rc.rdrop_alpha > 0 or cutoff):
        raise ConfigError("robust.adversarial=smart regularizes the clean outputs itself; it does not combine with "
                          "robust.rdrop_alpha or data.augment cutoff ops")
    if rc.rdrop_alpha > 0 and cutoff and rc.cutoff_consistency > 0:
        raise ConfigError("robust.rdrop_alpha and robust.cutoff_consistency are two consistency terms; use one")
    divergent = rc.adversarial == "smart" or rc.rdrop_alpha > 0 or (cutoff and rc.cutoff_consistency > 0)
    if divergent and getattr(task, "loss_chunk_size", 0):
        raise ConfigError("robust: smart, rdrop_alpha and cutoff_consistency compare full output distributions; "
                          "set task.loss_chunk_size=0")
    if rc.smart_bregman_weight > 0 and rc.adversarial != "smart":
        raise ConfigError("robust.smart_bregman_weight is SMART's proximal term: it needs robust.adversarial=smart")


def build_objective(config: config_lib.ExperimentConfig, task) -> Objective:
    """The run's objective (``PLAIN`` when nothing robust is configured)."""
    check(config, task)
    name = objective_name(config)
    if name == "plain":
        return PLAIN
    rc = config.robust
    gradients = functools.partial(_gradients, rc=rc, cutoff=embedding_ops(config.data.augment))
    if rc.smart_bregman_weight > 0:
        return Objective(name, gradients, _anchor_context)
    return Objective(name, gradients)


def wrap_optimizer(config: config_lib.ExperimentConfig, optimizer: optax.GradientTransformation):
    """The optimizer with what the objective keeps in its state (SMART's anchor params) chained last."""
    if config.robust.smart_bregman_weight > 0:
        return optax.chain(optimizer, anchor.anchor_params(config.robust.smart_bregman_momentum))
    return optimizer
