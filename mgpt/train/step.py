"""Pure train and eval steps.

Configuration enters through ``functools.partial`` (model, task, optimizer, accumulation), so tests
call these functions directly. Losses come back from the task as ``(sum, count)`` and are divided
once, after micro-batches are summed, so accumulation and padding give the exact mean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

MODEL_INPUTS = ("attention_mask", "token_type_ids", "position_ids")


def model_inputs(batch: dict) -> dict:
    """The model's keyword inputs from a batch. Packed rows attend by segment: their ``segment_ids``
    (1, 2, ... per example, 0 = padding) take the place of the padding mask, and their
    ``position_ids`` restart at 0 for each example. Packed sequence-level data (a ``segment_weight`` (B, K)
    per row) also tells the model its number of segment slots, so its head returns one output per slot."""
    kwargs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    if "segment_ids" in batch:
        kwargs["attention_mask"] = batch["segment_ids"]
    if "segment_weight" in batch:
        kwargs["num_segments"] = int(batch["segment_weight"].shape[1])
    return kwargs


def forward(model, params: Any, batch: dict, *, deterministic: bool, rng: jax.Array | None = None,
            extra: dict | None = None) -> jax.Array:
    """Logits of ``model`` on ``batch`` (only the inputs the batch has are passed, plus ``extra`` model inputs such
    as ``embeds_delta``)."""
    kwargs = dict(model_inputs(batch), **(extra or {}))
    rngs = {} if deterministic or rng is None else {"dropout": rng}
    return model.apply({"params": params}, batch["input_ids"], deterministic=deterministic, rngs=rngs, **kwargs)


def loss_and_count(params: Any, batch: dict, rng: jax.Array, *, model, task,
                   extra: dict | None = None) -> tuple[jax.Array, jax.Array]:
    """``(sum, count)`` of the task loss on one (micro-)batch, dropout on (``extra``: more model inputs).

    A task with ``loss_chunk_size`` (causal LM) gets the final hidden states and the output projection
    instead of logits, so the full ``(B, T, V)`` logits never exist.
    """
    if getattr(task, "loss_chunk_size", 0):
        kwargs = dict(model_inputs(batch), **(extra or {}))
        out = model.apply({"params": params}, batch["input_ids"], deterministic=False, rngs={"dropout": rng},
                          method="encode", **kwargs)
        project = lambda h: model.apply({"params": params}, h, method="project")  # noqa: E731
        return task.loss_from_hidden(out.last_hidden_state, project, batch)
    logits = forward(model, params, batch, deterministic=False, rng=rng, extra=extra)
    return task.loss(logits, batch)


def plain_gradients(params: Any, batch: dict, rng: jax.Array, *, model, task, context=None):
    """``(gradient of the loss sum, loss sum, count)`` on one micro-batch: the plain objective."""
    def loss_sum(p):
        s, c = loss_and_count(p, batch, rng, model=model, task=task)
        return s, (s, c)

    g, (s, c) = jax.grad(loss_sum, has_aux=True)(params)
    return g, s, c


def _no_context(state: dict) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class Objective:
    """What one micro-batch's gradient is, chosen when the run is built (:mod:`mgpt.train.objective`).

    ``gradients(params, batch, rng, *, model, task, context) -> (grad_sum, loss_sum, count)``; ``context(state)``
    gives it what it reads from the train state besides the params (e.g. SMART's anchor params).
    """

    name: str
    gradients: Callable = plain_gradients
    context: Callable[[dict], dict] = _no_context


PLAIN = Objective("plain")


def _split_micro_batches(batch: dict, k: int) -> dict:
    # Strided split (row r goes to micro-batch r % k): each device's shard of the batch axis
    # contributes to every micro-batch, so no data moves between devices.
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible into {k} micro-batches")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree_util.tree_map(split, batch)


def gradients(params: Any, batch: dict, rng: jax.Array, *, model, task, accumulation_steps: int = 1,
              objective: Objective = PLAIN, context: dict | None = None):
    """Summed objective gradients, loss sum and count over ``accumulation_steps`` micro-batches."""
    def micro(b, r):
        return objective.gradients(params, b, r, model=model, task=task, context=context)

    if accumulation_steps == 1:
        return micro(batch, rng)

    micro_batches = _split_micro_batches(batch, accumulation_steps)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    def body(carry, inputs):
        g_acc, s_acc, c_acc = carry
        index, b = inputs
        g, s, c = micro(b, jax.random.fold_in(rng, index))
        return (jax.tree_util.tree_map(jnp.add, g_acc, g), s_acc + s, c_acc + c), None

    init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    (g, s, c), _ = jax.lax.scan(body, init, (jnp.arange(accumulation_steps), micro_batches))
    return g, s, c


def apply_gradients(state: dict, grad_sum: Any, loss_sum: jax.Array, count: jax.Array, *,
                    optimizer: optax.GradientTransformation) -> tuple[dict, dict]:
    """Divide the summed gradients by the global count once, update, and report scalars.

    A step whose loss, gradients or updated params are not finite is skipped: params and optimizer
    state stay as they were (the optimizer's own step count too, so its schedule does not move), while
    ``step`` still advances, so the next step sees the next batch and a fresh dropout key. ``nonfinite``
    (1.0 when skipped) lets the loop count such steps and stop a run that keeps producing them.
    """
    denominator = jnp.maximum(count, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denominator, grad_sum)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    loss, grad_norm, param_norm = loss_sum / denominator, optax.tree.norm(grads), optax.tree.norm(params)
    # An overflowing norm also catches huge finite values that would turn inf at the next step.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = dict(state, step=state["step"] + 1, params=keep(params, state["params"]),
                     opt_state=keep(opt_state, state["opt_state"]))
    metrics = {
        "loss": loss,
        "count": count,
        "grad_norm": grad_norm,
        "param_norm": param_norm,  # of the proposed params (a skipped step's may be non-finite: not logged)
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, metrics


def train_step(state: dict, batch: dict, *, model, task, optimizer: optax.GradientTransformation,
               accumulation_steps: int = 1, objective: Objective = PLAIN) -> tuple[dict, dict]:
    """One optimizer update on ``batch``; returns the new state and scalar metrics.

    Under ``jax.jit`` over a mesh, the sums inside are global: XLA inserts the cross-device reductions.
    ``objective`` (:class:`Objective`) says what the micro-batch gradient is: the plain loss by default.
    """
    rng = jax.random.fold_in(state["rng"], state["step"])
    grad_sum, loss_sum, count = gradients(
        state["params"], batch, rng, model=model, task=task, accumulation_steps=accumulation_steps,
        objective=objective, context=objective.context(state)
    )
    return apply_gradients(state, grad_sum, loss_sum, count, optimizer=optimizer)


def pmap_train_step(state: dict, batch: dict, *, model, task, optimizer: optax.GradientTransformation,
                    accumulation_steps: int = 1, axis_name: str = "data",
                    objective: Objective = PLAIN) -> tuple[dict, dict]:
    """The same update under ``jax.pmap``: each device holds a slice of the batch; sums are ``psum``-ed.

    Dropout keys differ per device (folded with the device index), as each device sees other rows.
    """
    rng = jax.random.fold_in(jax.random.fold_in(state["rng"], state["step"]), jax.lax.axis_index(axis_name))
    local = gradients(state["params"], batch, rng, model=model, task=task, accumulation_steps=accumulation_steps,
                      objective=objective, context=objective.context(state))
    grad_sum, loss_sum, count = jax.lax.psum(local, axis_name)
    return apply_gradients(state, grad_sum, loss_sum, count, optimizer=optimizer)


def eval_step(params: Any, batch: dict, *, model, task) -> dict:
    """Loss sum, count and predictions on one batch, dropout off."""
    logits = forward(model, params, batch, deterministic=True)
    loss_sum, count = task.loss(logits, batch)
    return {"loss_sum": loss_sum, "count": count, "predictions": task.predict(logits, batch)}
