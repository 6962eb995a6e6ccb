"""Consistency regularizers as loss transforms: R-Drop and cutoff with its consistency term.

Both build a ``loss(params, delta) -> (objective_sum, (reported_sum, count))`` as :mod:`mgpt.robust.adversarial`
takes, from ``forward(params, rng, delta, keep) -> outputs``, ``task_loss(outputs) -> (sum, count)`` and a
divergence ``(p, q) -> (sum, count)`` over the same items (:mod:`mgpt.robust.divergence`).
"""

from __future__ import annotations

import jax


def rdrop(forward, task_loss, divergence, rng, *, alpha: float, keep=None):
    """R-Drop (Liang et al. 2021): two passes with different dropout masks; the objective is the mean of their
    task losses plus ``alpha`` times half their symmetric KL (as the authors' code averages its two KL
    directions). Reported: the mean task loss."""
    first_key, second_key = jax.random.split(rng)

    def loss(params, delta):
        first = forward(params, first_key, delta, keep)
        second = forward(params, second_key, delta, keep)
        first_sum, count = task_loss(first)
        second_sum, _ = task_loss(second)
        kl_sum, _ = divergence(first, second)
        mean_sum = 0.5 * (first_sum + second_sum)
        return mean_sum + alpha * 0.5 * kl_sum, (mean_sum, count)

    return loss


def cutoff_consistency(forward, task_loss, divergence, rng, keep, *, weight: float):
    """Cutoff with consistency (Shen et al. 2020): the mean of the clean and the cut-off view's task losses plus
    ``weight`` times their Jensen-Shannon divergence (``divergence``); ``keep`` ``(B, T)`` is the cutoff mask.
    Reported: the clean task loss."""
    def loss(params, delta):
        clean = forward(params, rng, delta, None)
        cut = forward(params, rng, delta, keep)
        clean_sum, count = task_loss(clean)
        cut_sum, _ = task_loss(cut)
        js_sum, _ = divergence(clean, cut)
        return 0.5 * (clean_sum + cut_sum) + weight * js_sum, (clean_sum, count)

    return loss


def plain(task_value, rng, keep=None):
    """The task objective itself: ``task_value(params, rng, delta, keep) -> (sum, count)`` (reported as is)."""
    def loss(params, delta):
        loss_sum, count = task_value(params, rng, delta, keep)
        return loss_sum, (loss_sum, count)

    return loss
