"""Adversarial training and consistency objectives (mgpt.robust, mgpt.train.objective) against hand computations,
numpy and a PyTorch implementation of the same algorithms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mgpt
from mgpt import optim, parallel
from mgpt.config import ConfigError, ExperimentConfig, OptimizerConfig, ParallelConfig, RobustConfig
from mgpt.data.labels import LABEL_FLOAT, LABEL_MULTI, LABEL_STRING, LABEL_TAGS
from mgpt.robust import adversarial, consistency, divergence
from mgpt.robust import perturbation as pert
from mgpt.tasks import get_task
from mgpt.train import objective as objective_lib
from mgpt.train import state as state_lib
from mgpt.train.step import PLAIN, forward, gradients, loss_and_count, train_step

from fixtures_tiny import tiny_bert, tiny_gpt2

EPS = 1e-6


def _batch(seed=0, rows=4, length=10, num_labels=3, tags=False):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 30, (rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    if tags:
        labels = rng.integers(0, num_labels, (rows, length)).astype(np.int32)
        labels[mask == 0] = -100
        labels[:, 0] = -100
    else:
        labels = rng.integers(0, num_labels, (rows,)).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "labels": labels,
            "example_weight": np.ones((rows,), np.float32)}


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny BERT classifier with dropout on (0.1), so equal results need equal dropout masks."""
    directory = tiny_bert(tmp_path_factory.mktemp("robust") / "bert")
    model, params, spec, tokenizer = mgpt.load_pretrained(directory, task="sequence_classification", num_labels=3,
                                                          seed=1)
    return directory, model, params, spec, tokenizer


def _config(**robust):
    return ExperimentConfig(robust=RobustConfig(**robust))


def _grads(objective, model, params, batch, task=None, rng=None):
    task = task or get_task("sequence_classification")
    rng = jax.random.PRNGKey(7) if rng is None else rng
    fn = jax.jit(functools.partial(gradients, model=model, task=task, objective=objective,
                                   context=None if objective is PLAIN else {}))
    return fn(params, batch, rng)


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                               jax.tree_util.tree_leaves(b)))


# --- perturbation geometry --------------------------------------------------------------------------------------


def test_norms_are_per_example_over_real_tokens_and_packed_segments():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    groups = np.array([[1, 1, 1, 0, 0], [1, 1, 2, 2, 2]], np.int32)  # row 1: two packed examples
    norms = np.asarray(pert.example_norms(jnp.asarray(x), jnp.asarray(groups)))
    np.testing.assert_allclose(norms[0, :3], np.linalg.norm(x[0, :3]), rtol=1e-6)
    np.testing.assert_allclose(norms[1, :2], np.linalg.norm(x[1, :2]), rtol=1e-6)
    np.testing.assert_allclose(norms[1, 2:], np.linalg.norm(x[1, 2:]), rtol=1e-6)
    assert (norms[0, 3:] == 0).all()
    unit = np.asarray(pert.normalize(jnp.asarray(x), jnp.asarray(groups)))
    assert (unit[0, 3:] == 0).all()  # padding never perturbed
    np.testing.assert_allclose(np.linalg.norm(unit[1, 2:]), 1.0, rtol=1e-6)
    big = 10 * jnp.asarray(x)
    projected = np.asarray(pert.project(big, jnp.asarray(groups), 0.5))
    np.testing.assert_allclose(np.linalg.norm(projected[0, :3]), 0.5, rtol=1e-5)
    small = np.asarray(pert.project(0.001 * jnp.asarray(x), jnp.asarray(groups), 0.5))
    np.testing.assert_allclose(small[1], 0.001 * x[1], rtol=1e-6)  # inside the ball: unchanged
    start = np.asarray(pert.random_in_ball(jax.random.PRNGKey(0), (2, 5, 3), jnp.asarray(groups), 0.5))
    assert (np.asarray(pert.example_norms(jnp.asarray(start), jnp.asarray(groups))) <= 0.5 + 1e-6).all()
    assert (start[0, 3:] == 0).all()


def test_cutoff_masks():
    groups = jnp.asarray(np.array([[1] * 10 + [0] * 2, [1] * 4 + [2] * 8], np.int32))
    keep = np.asarray(pert.span_cutoff_keep(jax.random.PRNGKey(3), groups, 0.25))
    # one contiguous span of round(0.25 * length) per example; padding kept
    for row, spans in ((0, [(0, 10, 2)]), (1, [(0, 4, 1), (4, 12, 2)])):
        for start, end, size in spans:
            cut = np.flatnonzero(keep[row, start:end] == 0)
            assert len(cut) == size and (len(cut) == 0 or np.all(np.diff(cut) == 1))
    assert (keep[0, 10:] == 1).all()
    many = jnp.ones((64, 64), jnp.int32)
    dropped = 1.0 - float(jnp.mean(pert.token_cutoff_keep(jax.random.PRNGKey(0), many, 0.2)))
    assert abs(dropped - 0.2) < 0.02


# --- divergences against numpy ----------------------------------------------------------------------------------


def _np_kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_divergences_against_numpy():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    batch = {"labels": np.zeros(4, np.int32), "example_weight": np.array([1, 1, 1, 0], np.float32)}
    s, c = divergence.symmetric_kl(LABEL_STRING, jnp.asarray(p), jnp.asarray(q), batch)
    P, Q = _softmax(p), _softmax(q)
    expected = (_np_kl(P, Q) + _np_kl(Q, P))[:3].sum()
    np.testing.assert_allclose(float(s), expected, rtol=1e-5)
    assert float(c) == 3
    M = (P + Q) / 2
    js, _ = divergence.jensen_shannon(LABEL_STRING, jnp.asarray(p), jnp.asarray(q), batch)
    np.testing.assert_allclose(float(js), (0.5 * (_np_kl(P, M) + _np_kl(Q, M)))[:3].sum(), rtol=1e-5)
    # tagging: only labelled tokens count
    tp, tq = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    labels = np.array([[-100, 1, 2], [0, -100, -100]], np.int32)
    s, c = divergence.symmetric_kl(LABEL_TAGS, jnp.asarray(tp), jnp.asarray(tq), {"labels": labels})
    TP, TQ = _softmax(tp), _softmax(tq)
    per = _np_kl(TP, TQ) + _np_kl(TQ, TP)
    np.testing.assert_allclose(float(s), per[labels != -100].sum(), rtol=1e-5)
    assert float(c) == 3
    # multi-label: Bernoulli KL summed over classes
    sp, sq = 1 / (1 + np.exp(-p)), 1 / (1 + np.exp(-q))
    bern = lambda a, b: a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))  # noqa: E731
    s, _ = divergence.symmetric_kl(LABEL_MULTI, jnp.asarray(p), jnp.asarray(q), batch)
    np.testing.assert_allclose(float(s), (bern(sp, sq) + bern(sq, sp)).sum(-1)[:3].sum(), rtol=1e-5)
    # regression: squared difference
    s, _ = divergence.symmetric_kl(LABEL_FLOAT, jnp.asarray(p[:, 0]), jnp.asarray(q[:, 0]), batch)
    np.testing.assert_allclose(float(s), np.square(p[:3, 0] - q[:3, 0]).sum(), rtol=1e-5)


# --- each objective against the plain step and by hand ------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_grads(bert):
    _, model, params, _, _ = bert
    return _grads(PLAIN, model, params, _batch())


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb", "smart"])
def test_epsilon_zero_is_the_plain_step(bert, plain_grads, method):
    _, model, params, _, _ = bert
    objective = objective_lib.build_objective(_config(adversarial=method, epsilon=0.0, steps=2), get_task(
        "sequence_classification"))
    assert objective.name == method
    robust = _grads(objective, model, params, _batch())
    assert _max_diff(plain_grads[0], robust[0]) < EPS
    np.testing.assert_allclose(float(robust[1]), float(plain_grads[1]), rtol=1e-6)
    assert float(robust[2]) == float(plain_grads[2])


def test_a_real_epsilon_changes_the_gradient(bert, plain_grads):
    _, model, params, _, _ = bert
    objective = objective_lib.build_objective(_config(adversarial="fgm", epsilon=1.0), get_task(
        "sequence_classification"))
    assert _max_diff(plain_grads[0], _grads(objective, model, params, _batch())[0]) > 1e-4


def _delta_loss(model, params, batch, rng, task=None):
    task = task or get_task("sequence_classification")

    def loss(p, delta):
        s, c = loss_and_count(p, batch, rng, model=model, task=task, extra={"embeds_delta": delta})
        return s, (s, c)

    return loss


def test_fgm_perturbation_and_gradient_by_hand(bert):
    _, model, params, spec, _ = bert
    batch, rng = _batch(), jax.random.PRNGKey(7)
    loss = _delta_loss(model, params, batch, rng)
    shape = batch["input_ids"].shape + (spec.arch.hidden_size,)
    zero = jnp.zeros(shape)
    g = np.asarray(jax.grad(lambda d: loss(params, d)[0])(zero))
    expected = np.zeros_like(g)
    for row, mask in enumerate(batch["attention_mask"]):
        real = mask > 0
        expected[row, real] = 0.5 * g[row, real] / np.linalg.norm(g[row, real])
    groups = pert.token_groups(batch)
    delta = np.asarray(adversarial.fgm_perturbation(loss, params, shape, groups, epsilon=0.5))
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-7)
    assert (delta[batch["attention_mask"] == 0] == 0).all()
    # the update: the mean of the clean and the adversarial gradients
    grads, reported, _ = adversarial.fgm(loss, params, shape, groups, epsilon=0.5)
    clean = jax.grad(lambda p: loss(p, zero)[0])(params)
    adv = jax.grad(lambda p: loss(p, jnp.asarray(expected))[0])(params)
    assert _max_diff(grads, jax.tree_util.tree_map(lambda a, b: (a + b) / 2, clean, adv)) < 1e-6
    np.testing.assert_allclose(float(reported), float(loss(params, zero)[0]), rtol=1e-6)


def test_pgd_stays_in_the_ball_and_ascends(bert):
    _, model, params, spec, _ = bert
    batch, rng = _batch(), jax.random.PRNGKey(7)
    loss = _delta_loss(model, params, batch, rng)
    shape = batch["input_ids"].shape + (spec.arch.hidden_size,)
    groups = pert.token_groups(batch)
    delta = adversarial.pgd_perturbation(loss, params, shape, groups, epsilon=0.3, steps=4, step_size=0.2)
    norms = np.asarray(pert.example_norms(delta, groups))
    real = batch["attention_mask"] > 0
    assert (norms[real] <= 0.3 + 1e-5).all() and norms[real].max() > 0.299  # inside the ball, at its edge
    assert (np.asarray(delta)[~real] == 0).all()
    zero = jnp.zeros(shape)
    assert float(loss(params, delta)[0]) > float(loss(params, zero)[0])  # the attack raises the loss
    one_step = adversarial.pgd_perturbation(loss, params, shape, groups, epsilon=0.3, steps=1, step_size=0.2)
    fgm_like = adversarial.fgm_perturbation(loss, params, shape, groups, epsilon=0.2)
    np.testing.assert_allclose(np.asarray(one_step), np.asarray(fgm_like), atol=1e-6)


def test_freelb_gradient_is_the_average_over_its_ascent_steps(bert):
    _, model, params, spec, _ = bert
    batch, rng, key = _batch(), jax.random.PRNGKey(7), jax.random.PRNGKey(11)
    loss = _delta_loss(model, params, batch, rng)
    shape = batch["input_ids"].shape + (spec.arch.hidden_size,)
    groups = pert.token_groups(batch)
    grads, reported, count = adversarial.freelb(loss, params, key, shape, groups, epsilon=0.4, steps=3,
                                                step_size=0.25)
    delta = pert.random_in_ball(key, shape, groups, 0.4)
    total, losses = None, []
    for _ in range(3):  # by hand: gradient at each point, then a normalised step projected back
        (g_p, g_d), (s, _) = jax.grad(loss, argnums=(0, 1), has_aux=True)(params, delta)
        total = g_p if total is None else jax.tree_util.tree_map(jnp.add, total, g_p)
        losses.append(float(s))
        step = np.asarray(g_d) / np.asarray(pert.example_norms(g_d, groups))[..., None].clip(1e-30)
        step[np.asarray(groups) == 0] = 0
        delta = jnp.asarray(delta) + 0.25 * step
        norms = np.asarray(pert.example_norms(delta, groups))
        delta = delta * np.where(norms > 0.4, 0.4 / np.maximum(norms, 1e-30), 1.0)[..., None]
    assert _max_diff(grads, jax.tree_util.tree_map(lambda g: g / 3, total)) < 1e-6
    np.testing.assert_allclose(float(reported), np.mean(losses), rtol=1e-6)
    assert float(count) == 4


def test_smart_objective_by_hand(bert):
    _, model, params, spec, _ = bert
    batch, rng, key = _batch(), jax.random.PRNGKey(7), jax.random.PRNGKey(5)
    task = get_task("sequence_classification")
    shape = batch["input_ids"].shape + (spec.arch.hidden_size,)
    groups = pert.token_groups(batch)

    def outputs(p, delta):
        extra = {} if delta is None else {"embeds_delta": delta}
        return forward(model, p, batch, deterministic=False, rng=rng, extra=extra)

    kl = functools.partial(divergence.symmetric_kl, LABEL_STRING, batch=batch)
    grads, reported, _ = adversarial.smart(outputs, lambda z: task.loss(z, batch), kl, params, key, shape, groups,
                                           epsilon=0.5, steps=2, step_size=0.3, init_std=1e-3, weight=2.0)
    clean = outputs(params, None)
    delta = adversarial.smart_perturbation(outputs, kl, params, key, shape, groups, clean, epsilon=0.5, steps=2,
                                           step_size=0.3, init_std=1e-3)
    assert float(kl(outputs(params, delta), clean)[0]) > float(kl(outputs(params, 0 * delta + 1e-3 * pert.normalize(
        delta, groups)), clean)[0])  # the inner steps found a more divergent point than a tiny one

    def by_hand(p):
        logits = outputs(p, None)
        return task.loss(logits, batch)[0] + 2.0 * kl(outputs(p, delta), logits)[0]

    assert _max_diff(grads, jax.grad(by_hand)(params)) < 1e-6
    np.testing.assert_allclose(float(reported), float(task.loss(clean, batch)[0]), rtol=1e-6)


def test_rdrop_objective_uses_two_dropout_masks(bert):
    _, model, params, _, _ = bert
    batch, rng = _batch(), jax.random.PRNGKey(7)
    task = get_task("sequence_classification")
    objective = objective_lib.build_objective(_config(rdrop_alpha=3.0), task)
    assert objective.name == "rdrop"
    grads, reported, count = _grads(objective, model, params, batch, rng=rng)
    first_key, second_key = jax.random.split(rng)

    def by_hand(p):
        a = forward(model, p, batch, deterministic=False, rng=first_key)
        b = forward(model, p, batch, deterministic=False, rng=second_key)
        ce = 0.5 * (task.loss(a, batch)[0] + task.loss(b, batch)[0])
        kl = divergence.symmetric_kl(LABEL_STRING, a, b, batch)[0]
        return ce + 3.0 * 0.5 * kl, ce

    expected, ce = jax.grad(by_hand, has_aux=True)(params)
    assert _max_diff(grads, expected) < 1e-6
    np.testing.assert_allclose(float(reported), float(ce), rtol=1e-6)
    a = forward(model, params, batch, deterministic=False, rng=first_key)
    b = forward(model, params, batch, deterministic=False, rng=second_key)
    assert float(divergence.symmetric_kl(LABEL_STRING, a, b, batch)[0]) > 1e-4  # the masks differ


def test_cutoff_consistency_objective(bert):
    _, model, params, _, _ = bert
    batch, rng = _batch(), jax.random.PRNGKey(7)
    task = get_task("sequence_classification")
    groups = pert.token_groups(batch)
    keep = pert.span_cutoff_keep(jax.random.PRNGKey(1), groups, 0.3)

    def outputs(p, key, delta, mask):
        extra = {} if mask is None else {"embeds_keep": mask}
        return forward(model, p, batch, deterministic=False, rng=key, extra=extra)

    js = functools.partial(divergence.jensen_shannon, LABEL_STRING, batch=batch)
    loss = consistency.cutoff_consistency(outputs, lambda z: task.loss(z, batch), js, rng, keep, weight=1.5)
    value, (reported, _) = loss(params, None)
    clean, cut = outputs(params, rng, None, None), outputs(params, rng, None, keep)
    expected = 0.5 * (task.loss(clean, batch)[0] + task.loss(cut, batch)[0]) + 1.5 * js(clean, cut)[0]
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)
    np.testing.assert_allclose(float(reported), float(task.loss(clean, batch)[0]), rtol=1e-6)
    assert float(js(clean, cut)[0]) > 0  # the cut tokens change the outputs


def test_token_embedding_perturbations_reach_every_family_input(bert):
    """``embeds_keep`` of ones and a zero ``embeds_delta`` change nothing; a keep mask of zeros on a token equals
    feeding that token's embedding as zeros through ``inputs_embeds``."""
    _, model, params, spec, _ = bert
    batch = _batch()
    base = forward(model, params, batch, deterministic=True)
    same = forward(model, params, batch, deterministic=True,
                   extra={"embeds_keep": jnp.ones(batch["input_ids"].shape),
                          "embeds_delta": jnp.zeros(batch["input_ids"].shape + (spec.arch.hidden_size,))})
    np.testing.assert_allclose(np.asarray(same), np.asarray(base), atol=1e-6)
    keep = np.ones(batch["input_ids"].shape, np.float32)
    keep[:, 2] = 0
    cut = forward(model, params, batch, deterministic=True, extra={"embeds_keep": jnp.asarray(keep)})
    table = params["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    embeds = jnp.take(table, batch["input_ids"], axis=0) * keep[..., None]
    direct = model.apply({"params": params}, None, attention_mask=batch["attention_mask"],
                         token_type_ids=batch["token_type_ids"], inputs_embeds=embeds, deterministic=True)
    np.testing.assert_allclose(np.asarray(cut), np.asarray(direct), atol=1e-5)


def test_combinations_are_checked():
    task = get_task("sequence_classification")
    with pytest.raises(ConfigError, match="robust.adversarial=smart"):
        objective_lib.check(_config(adversarial="smart", rdrop_alpha=1.0), task)
    with pytest.raises(ConfigError, match="smart_bregman_weight"):
        objective_lib.check(_config(adversarial="fgm", smart_bregman_weight=1.0), task)
    with pytest.raises(ConfigError, match="loss_chunk_size"):
        objective_lib.check(_config(rdrop_alpha=1.0), get_task("causal_lm", 16))
    assert objective_lib.objective_name(_config(adversarial="fgm", rdrop_alpha=1.0)) == "fgm+rdrop"
    assert objective_lib.build_objective(_config(), task) is PLAIN


def test_smart_bregman_anchor_lives_in_the_optimizer_state(bert):
    _, model, params, _, _ = bert
    config = _config(adversarial="smart", epsilon=0.0, steps=1, smart_bregman_weight=1.0,
                     smart_bregman_momentum=0.5)
    task = get_task("sequence_classification")
    objective = objective_lib.build_objective(config, task)
    tx = objective_lib.wrap_optimizer(config, optim.make_optimizer(
        OptimizerConfig(name="sgd", learning_rate=0.1, max_grad_norm=0.0, schedule="constant"), 3, params))
    state, _ = state_lib.create_state(params, tx, 0, parallel.make_mesh(ParallelConfig(num_devices=1)))
    step = jax.jit(functools.partial(train_step, model=model, task=task, optimizer=tx, objective=objective))
    anchor = jax.device_get(params)
    for seed in range(2):
        state, _ = step(state, _batch(seed))
        new = jax.device_get(state["params"])
        anchor = jax.tree_util.tree_map(lambda a, n: 0.5 * a + 0.5 * n, anchor, new)
    assert _max_diff(objective_lib.anchor.find_anchor(state["opt_state"]), anchor) < 1e-6


# --- against PyTorch: three updates of FGM and of R-Drop -------------------------------------------------------------


def _torch_reference(exported, batches, method, lr, epsilon, alpha):
    """FGM / R-Drop written directly in PyTorch on transformers' BertForSequenceClassification, dropout off:
    perturbations on the word embeddings, per-example L2 norms over real tokens, SGD."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(exported, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    words = model.bert.embeddings.word_embeddings
    for batch in batches:
        ids = torch.tensor(batch["input_ids"], dtype=torch.long)
        mask = torch.tensor(batch["attention_mask"], dtype=torch.long)
        labels = torch.tensor(batch["labels"], dtype=torch.long)

        def logits_of(delta):
            return model(inputs_embeds=words(ids) + delta, attention_mask=mask,
                         token_type_ids=torch.zeros_like(ids)).logits

        ce = torch.nn.functional.cross_entropy
        delta = torch.zeros(ids.shape + (words.embedding_dim,), requires_grad=True)
        if method == "fgm":
            loss = ce(logits_of(delta), labels)
            loss.backward()
            g = delta.grad * mask[..., None]
            norm = torch.sqrt((g ** 2).sum(dim=(1, 2), keepdim=True))
            adv = (epsilon * g / torch.where(norm > 0, norm, torch.ones_like(norm))).detach()
            ce(logits_of(adv), labels).backward()
            for p in model.parameters():  # the mean of the clean and the adversarial objectives
                if p.grad is not None:
                    p.grad.mul_(0.5)
        else:
            a, b = logits_of(0.0), logits_of(0.0)
            la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
            kl = (la.exp() * (la - lb)).sum(-1) + (lb.exp() * (lb - la)).sum(-1)
            loss = 0.5 * (ce(a, labels) + ce(b, labels)) + alpha * 0.5 * kl.mean()
            loss.backward()
        opt.step()
        opt.zero_grad()
    return model.state_dict()


@pytest.mark.parametrize("method", ["fgm", "rdrop"])
def test_three_updates_match_a_pytorch_implementation(tmp_path, method):
    from transformers import AutoModelForSequenceClassification

    base = tiny_bert(tmp_path / "bert")
    model, params, spec, tokenizer = mgpt.load_pretrained(base, task="sequence_classification", num_labels=3,
                                                          dropout=0.0, seed=3)
    exported = str(tmp_path / "exported")
    mgpt.save_pretrained(exported, spec, params, tokenizer)
    batches = [_batch(seed) for seed in range(3)]
    for b in batches:
        b["input_ids"][b["attention_mask"] == 0] = 0
    robust = dict(adversarial="fgm", epsilon=0.5) if method == "fgm" else dict(rdrop_alpha=2.0)
    task = get_task("sequence_classification")
    objective = objective_lib.build_objective(_config(**robust), task)
    tx = optim.make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.5, max_grad_norm=0.0,
                                              schedule="constant"), 3, params)
    state, _ = state_lib.create_state(params, tx, 0, parallel.make_mesh(ParallelConfig(num_devices=1)))
    step = jax.jit(functools.partial(train_step, model=model, task=task, optimizer=tx, objective=objective))
    for batch in batches:
        state, _ = step(state, batch)
    trained = str(tmp_path / "trained")
    mgpt.save_pretrained(trained, spec, jax.device_get(state["params"]), tokenizer)
    ours = AutoModelForSequenceClassification.from_pretrained(trained).state_dict()
    reference = _torch_reference(exported, batches, method, 0.5, 0.5, 2.0)
    start = AutoModelForSequenceClassification.from_pretrained(exported).state_dict()
    compared = 0
    for name, value in reference.items():
        if name not in ours or "position_ids" in name:
            continue
        np.testing.assert_allclose(ours[name].numpy(), value.detach().numpy(), atol=1e-5, err_msg=name)
        compared += 1
    assert compared > 10
    assert not np.allclose(reference["classifier.weight"].numpy(), start["classifier.weight"].numpy())
    if method == "fgm":  # the adversarial term matters: plain SGD ends elsewhere
        plain = jax.jit(functools.partial(train_step, model=model, task=task, optimizer=tx))
        plain_state, _ = state_lib.create_state(params, tx, 0, parallel.make_mesh(ParallelConfig(num_devices=1)))
        for batch in batches:
            plain_state, _ = plain(plain_state, batch)
        assert _max_diff(plain_state["params"], state["params"]) > 1e-4


def test_adversarial_step_in_a_training_run_with_accumulation_and_pmap(tmp_path):
    """The objective composes with gradient accumulation (the same update as one big batch) and pmap mode."""
    from mgpt.train.engine import make_engine

    base = tiny_bert(tmp_path / "bert")
    model, params, _, _ = mgpt.load_pretrained(base, task="sequence_classification", num_labels=3, dropout=0.0)
    task = get_task("sequence_classification")
    objective = objective_lib.build_objective(_config(adversarial="pgd", epsilon=0.5, steps=2), task)
    batch = _batch(rows=8)
    one = _grads(objective, model, params, batch)
    two = jax.jit(functools.partial(gradients, model=model, task=task, objective=objective, context={},
                                    accumulation_steps=2))(params, batch, jax.random.PRNGKey(7))
    assert _max_diff(one[0], two[0]) < 1e-5
    tx = optim.make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.1, max_grad_norm=0.0,
                                              schedule="constant"), 3, params)
    mesh = parallel.make_mesh(ParallelConfig(num_devices=2))
    results = []
    for mode in ("jit", "pmap"):
        engine = make_engine(mode, mesh, model, task, tx, objective=objective)
        state = engine.create_state(params, 0)
        state, metrics = engine.step(state, batch)
        results.append((jax.device_get(engine.params(state)), float(metrics["loss"])))
    assert _max_diff(results[0][0], results[1][0]) < 1e-5
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)



@pytest.mark.parametrize("method", ["freelb", "smart"])
def test_adversarial_steps_under_sharding_rules_train_like_one_device(tmp_path, method):
    """FSDP + tensor parallelism (params over data, heads over model, 4 x 2 devices): the same SGD updates as one
    device (SMART with its Bregman anchor in the optimizer state). SMART starts from init_std 1e-2 here: from
    its default 1e-5 the first ascent direction rests on output differences near float32 rounding, and the
    layouts' different reduction orders move the params by ~5e-4 after two steps."""
    from mgpt.train.engine import make_engine

    base = tiny_gpt2(tmp_path / "gpt2")
    task = get_task("sequence_classification")
    bregman = {"smart_bregman_weight": 1.0} if method == "smart" else {}
    config = _config(adversarial=method, epsilon=0.5, steps=2, step_size=0.3, init_std=1e-2, **bregman)
    batches = [_batch(seed, rows=8) for seed in range(2)]
    results = {}
    for name, parallel_cfg in (("one", ParallelConfig(num_devices=1)),
                               ("fsdp_tp", ParallelConfig(mesh=(("data", 4), ("model", 2)), rules="fsdp_tp"))):
        mesh = parallel.make_mesh(parallel_cfg)
        model, params, _, _ = mgpt.load_pretrained(base, task="sequence_classification", num_labels=3, dropout=0.0)
        tx = objective_lib.wrap_optimizer(config, optim.make_optimizer(
            OptimizerConfig(name="sgd", learning_rate=0.1, max_grad_norm=0.0, schedule="constant"), 2, params))
        engine = make_engine("jit", mesh, model, task, tx, layout=parallel.make_layout(parallel_cfg, mesh, model),
                             objective=objective_lib.build_objective(config, task))
        state = engine.create_state(params, 0)
        for batch in batches:
            state, metrics = engine.step(state, batch)
        results[name] = (jax.device_get(engine.params(state)), float(metrics["loss"]))
    assert _max_diff(results["one"][0], results["fsdp_tp"][0]) < 1e-5
    np.testing.assert_allclose(results["one"][1], results["fsdp_tp"][1], rtol=1e-5)
    assert _max_diff(results["one"][0], params) > 1e-3  # it trained


def test_adversarial_step_in_bfloat16_compute(bert):
    """Mixed precision (bf16 compute, f32 params): epsilon 0 is still the plain step, and a real FGM gradient
    stays close to the float32 one (perturbation norms are taken in float32)."""
    directory = bert[0]
    task = get_task("sequence_classification")
    batch = _batch()
    grads = {}
    for dtype in ("float32", "bfloat16"):
        model, params, _, _ = mgpt.load_pretrained(directory, task="sequence_classification", num_labels=3, seed=1,
                                                   dtype=dtype, dropout=0.0)
        logits = forward(model, params, batch, deterministic=True)  # float32 out; in bf16, bf16 values
        assert bool(jnp.all(logits.astype(jnp.bfloat16).astype(jnp.float32) == logits)) == (dtype == "bfloat16")
        plain = _grads(PLAIN, model, params, batch)
        zero = _grads(objective_lib.build_objective(_config(adversarial="fgm", epsilon=0.0), task), model, params,
                      batch)
        assert _max_diff(plain[0], zero[0]) < EPS, dtype
        real = _grads(objective_lib.build_objective(_config(adversarial="fgm", epsilon=1.0), task), model, params,
                      batch)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(real[0]))
        assert np.isfinite(float(real[1]))
        grads[dtype] = real[0]
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads["float32"]))
    assert _max_diff(grads["float32"], grads["bfloat16"]) < 0.05 * scale


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_adversarial_steps_under_peft(tmp_path, method):
    """FGM on a PEFT model: epsilon 0 is the plain PEFT step; prompt tuning's virtual tokens are never perturbed
    (the perturbation covers the real tokens only, the prompt is padded in front)."""
    from mgpt import peft as peft_lib
    from mgpt.config import PeftConfig

    base = tiny_gpt2(tmp_path / "gpt2")
    model, params, spec, _ = mgpt.load_pretrained(base, task="sequence_classification", num_labels=3, dropout=0.0)
    model, params = peft_lib.wrap(model, params, spec, PeftConfig(method=method, num_virtual_tokens=3),
                                  jax.random.PRNGKey(0))
    task = get_task("sequence_classification")
    batch = _batch()
    batch["input_ids"][batch["attention_mask"] == 0] = 0
    plain = _grads(PLAIN, model, params, batch)
    zero = _grads(objective_lib.build_objective(_config(adversarial="fgm", epsilon=0.0), task), model, params, batch)
    assert _max_diff(plain[0], zero[0]) < EPS
    real = _grads(objective_lib.build_objective(_config(adversarial="fgm", epsilon=1.0), task), model, params, batch)
    assert _max_diff(plain[0]["peft"], real[0]["peft"]) > 1e-5


def test_cutoff_from_data_augment_trains_on_the_cut_view(bert):
    """``data.augment=("token_cutoff:0.3",)`` without consistency: the gradient is the cut-off view's."""
    from mgpt.config import DataConfig

    _, model, params, _, _ = bert
    batch, rng = _batch(), jax.random.PRNGKey(7)
    task = get_task("sequence_classification")
    config = ExperimentConfig(data=DataConfig(augment=("token_cutoff:0.3",)))
    objective = objective_lib.build_objective(config, task)
    assert objective.name == "token_cutoff"
    grads, _, _ = _grads(objective, model, params, batch, rng=rng)
    keep = pert.token_cutoff_keep(jax.random.fold_in(rng, objective_lib._CUTOFF_SALT), pert.token_groups(batch), 0.3)
    assert 0 < float(jnp.sum(1 - keep))  # some real tokens are cut

    def by_hand(p):
        return loss_and_count(p, batch, rng, model=model, task=task, extra={"embeds_keep": keep})[0]

    assert _max_diff(grads, jax.grad(by_hand)(params)) < 1e-6
