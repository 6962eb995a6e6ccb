"""Adversarial training on the input embeddings: FGM, PGD, FreeLB and SMART as pure gradient functions.

Each takes ``loss(params, delta) -> (objective_sum, (reported_sum, count))``: the task objective of one
(micro-)batch with ``delta`` ``(B, T, E)`` added to its token embeddings, dropout keys fixed inside, so every
pass of one step sees the same dropout masks and the perturbation attacks one network. Each returns the
gradient of the objective's *sum* with respect to ``params``, the reported loss sum and the count, as the
plain step's :func:`mgpt.train.step.gradients` does, so accumulation, devices and the optimizer treat them
alike. ``groups`` (:func:`mgpt.robust.perturbation.token_groups`) says which tokens make up each example;
norms are per example over its real tokens.

With ``epsilon=0`` every method's gradient is the plain gradient: FGM and PGD average the clean and the
adversarial objective (equal when the perturbation is zero), FreeLB averages identical passes and SMART's
divergence between identical outputs has zero gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mgpt.robust import perturbation as pert


def _tree_mean(a, b):
    return jax.tree_util.tree_map(lambda x, y: 0.5 * (x + y), a, b)


def _both_gradients(loss, params, delta):
    """``((d params, d delta), (reported, count))`` of the objective at ``delta``."""
    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, delta)


def _delta_gradient(loss, params, delta):
    """The objective's gradient with respect to ``delta`` alone (no parameter gradients computed)."""
    fixed = jax.lax.stop_gradient(params)
    return jax.grad(lambda d: loss(fixed, d)[0])(delta)


def fgm(loss, params, shape, groups, *, epsilon: float):
    """Fast gradient method (Miyato et al. 2016): ``delta = epsilon * g / ||g||`` with ``g`` the clean gradient
    with respect to the embeddings; the gradient of ``(clean + adversarial) / 2``. Reported: the clean loss."""
    zero = jnp.zeros(shape, jnp.float32)
    (clean_grads, delta_grad), (reported, count) = _both_gradients(loss, params, zero)
    delta = jax.lax.stop_gradient(epsilon * pert.normalize(delta_grad, groups))
    adversarial_grads, _ = jax.grad(loss, has_aux=True)(params, delta)
    return _tree_mean(clean_grads, adversarial_grads), reported, count


def fgm_perturbation(loss, params, shape, groups, *, epsilon: float):
    """The perturbation :func:`fgm` trains against (for tests and inspection)."""
    zero = jnp.zeros(shape, jnp.float32)
    return epsilon * pert.normalize(_delta_gradient(loss, params, zero), groups)


def pgd_perturbation(loss, params, shape, groups, *, epsilon: float, steps: int, step_size: float,
                     first_gradient=None):
    """``steps`` projected ascent steps from zero inside each example's epsilon ball (Madry et al. 2018)."""
    delta = jnp.zeros(shape, jnp.float32)
    gradient = _delta_gradient(loss, params, delta) if first_gradient is None else first_gradient
    delta = pert.ascent_step(delta, gradient, groups, epsilon, step_size)

    def ascend(d, _):
        return pert.ascent_step(d, _delta_gradient(loss, params, d), groups, epsilon, step_size), None

    delta, _ = jax.lax.scan(ascend, delta, None, length=steps - 1)
    return jax.lax.stop_gradient(delta)


def pgd(loss, params, shape, groups, *, epsilon: float, steps: int, step_size: float):
    """Projected gradient descent: the clean pass's embedding gradient is the first ascent direction, then
    ``steps - 1`` more; the gradient of ``(clean + adversarial) / 2``. Reported: the clean loss."""
    zero = jnp.zeros(shape, jnp.float32)
    (clean_grads, delta_grad), (reported, count) = _both_gradients(loss, params, zero)
    delta = pgd_perturbation(loss, params, shape, groups, epsilon=epsilon, steps=steps, step_size=step_size,
                             first_gradient=delta_grad)
    adversarial_grads, _ = jax.grad(loss, has_aux=True)(params, delta)
    return _tree_mean(clean_grads, adversarial_grads), reported, count


def freelb(loss, params, rng, shape, groups, *, epsilon: float, steps: int, step_size: float):
    """FreeLB (Zhu et al. 2020): ``steps`` ascent steps from a random point of the ball; every step's parameter
    gradient is accumulated and the average returned (as is the average reported loss)."""
    delta = pert.random_in_ball(rng, shape, groups, epsilon)

    def ascend(carry, _):
        d, grad_sum, reported_sum = carry
        (param_grads, delta_grad), (reported, count) = _both_gradients(loss, params, d)
        grad_sum = jax.tree_util.tree_map(jnp.add, grad_sum, param_grads)
        return (pert.ascent_step(d, delta_grad, groups, epsilon, step_size), grad_sum, reported_sum + reported), count

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    (_, grad_sum, reported_sum), counts = jax.lax.scan(
        ascend, (delta, zeros, jnp.zeros((), jnp.float32)), None, length=steps)
    return jax.tree_util.tree_map(lambda g: g / steps, grad_sum), reported_sum / steps, counts[0]


def smart_perturbation(forward, divergence, params, rng, shape, groups, target, *, epsilon: float, steps: int,
                       step_size: float, init_std: float):
    """SMART's inner maximisation: from N(0, init_std) noise, ``steps`` normalised ascent steps on
    ``divergence(forward(params, delta), target)`` projected onto the epsilon ball."""
    fixed = jax.lax.stop_gradient(params)
    target = jax.lax.stop_gradient(target)
    delta = pert.gaussian_noise(rng, shape, groups, init_std)

    def ascend(d, _):
        gradient = jax.grad(lambda x: divergence(forward(fixed, x), target)[0])(d)
        return pert.ascent_step(d, gradient, groups, epsilon, step_size), None

    delta, _ = jax.lax.scan(ascend, delta, None, length=steps)
    return jax.lax.stop_gradient(delta)


def smart(forward, task_loss, divergence, params, rng, shape, groups, *, epsilon: float, steps: int,
          step_size: float, init_std: float, weight: float, anchor=None, bregman_weight: float = 0.0):
    """SMART (Jiang et al. 2020): task loss + ``weight`` * symmetric divergence between the clean outputs and the
    outputs under the most divergent perturbation found by :func:`smart_perturbation`; with ``anchor`` params
    and ``bregman_weight`` > 0 also the Bregman proximal term, ``bregman_weight`` * divergence between the
    outputs of ``params`` and of the slow-moving ``anchor`` copy.

    ``forward(params, delta)`` returns the outputs (logits), ``task_loss(outputs)`` and
    ``divergence(p, q)`` are ``(sum, count)``. Returns ``(grads, reported task loss sum, count)``.
    """
    def objective(p):
        clean = forward(p, None)
        loss_sum, count = task_loss(clean)
        delta = smart_perturbation(forward, divergence, p, rng, shape, groups, clean, epsilon=epsilon, steps=steps,
                                   step_size=step_size, init_std=init_std)
        smooth, _ = divergence(forward(p, delta), clean)
        total = loss_sum + weight * smooth
        if anchor is not None and bregman_weight > 0:
            proximal, _ = divergence(clean, jax.lax.stop_gradient(forward(anchor, None)))
            total = total + bregman_weight * proximal
        return total, (loss_sum, count)

    grads, (reported, count) = jax.grad(objective, has_aux=True)(params)
    return grads, reported, count
