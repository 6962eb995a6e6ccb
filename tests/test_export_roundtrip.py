"""Fine-tune a couple of steps in mgpt, export with save_pretrained, load with the matching transformers
AutoModelFor<Task>: the same logits (1e-4) for every new family and head; sharded and bf16 exports."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from family_checkpoints import (
    AUTO_CLASS,
    DECODERS,
    ENCODERS,
    PAD,
    PER_TOKEN,
    PREFIX,
    TASK_CLASS,
    compare,
    make_batch,
    make_checkpoint,
    tasks_of,
    torch_logits,
)

from mgpt.models import load_pretrained, save_pretrained
from mgpt.models.safetensors_io import read_header

TOL = 1e-4
CASES = [(family, task) for family in DECODERS + ENCODERS for task in tasks_of(family)]


def random_labels(task, ids, mask, num_labels, seed=0):
    rng = np.random.RandomState(seed)
    if task == "regression":
        return rng.randn(ids.shape[0]).astype(np.float32)
    if task == "sequence_classification":
        return rng.randint(0, num_labels, ids.shape[0])
    return rng.randint(0, num_labels if task == "token_classification" else 64, ids.shape)


def fine_tune(model, params, task, num_labels, steps=2, lr=0.05):
    """A few SGD steps on random labels (real positions only), so the export is not the input checkpoint."""
    ids, mask = make_batch(padded=True, seed=1)
    labels = jnp.asarray(random_labels(task, ids, mask, num_labels))
    weights = jnp.asarray(mask, jnp.float32)

    def loss(p):
        logits = model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
        if task == "regression":
            return jnp.mean((logits - labels) ** 2)
        per_item = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        if per_item.ndim == 1:
            return per_item.mean()
        return (per_item * weights).sum() / weights.sum()

    optimizer = optax.sgd(lr)
    state = optimizer.init(params)
    grad_fn = jax.grad(loss)
    for _ in range(steps):
        updates, state = optimizer.update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


ONE_LAYER = {family: {"num_hidden_layers": 1} for family in DECODERS + ("roberta",)} | {"distilbert": {"n_layers": 1}}


@pytest.mark.parametrize("family,task", CASES)
def test_fine_tuned_export_loads_in_transformers(family, task, tmp_path):
    make_checkpoint(tmp_path / "in", family, task, **ONE_LAYER[family])  # one layer keeps the gradient steps quick
    model, params0, spec, tokenizer = load_pretrained(tmp_path / "in", task=task)
    params = fine_tune(model, params0, task, max(spec.num_labels, 1))
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), params, params0)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3
    labels = ["neg", "neu", "pos"] if task in ("sequence_classification", "token_classification") else None
    sharded = task == "token_classification"  # one sharded export per family
    out = save_pretrained(tmp_path / "out", model, params, tokenizer, label_names=labels,
                          max_shard_size="20KB" if sharded else "5GB")

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == [PREFIX[family] + TASK_CLASS[task]]
    if sharded:
        index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) >= 2 and not (tmp_path / "out" / "model.safetensors").exists()
    reloaded = AUTO_CLASS[task].from_pretrained(out, attn_implementation="eager").eval()
    assert type(reloaded).__name__ == config["architectures"][0]
    if labels:
        assert reloaded.config.id2label == dict(enumerate(labels))
    ids, mask = make_batch(padded=True, seed=2)
    ours = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    theirs = torch_logits(reloaded, ids, mask).logits.numpy()
    theirs = theirs[:, 0] if task == "regression" else theirs
    assert compare(ours, theirs, mask if PER_TOKEN[task] else None)[0] < TOL, (family, task)
    # And back into mgpt: the head loads, nothing is initialised, same logits.
    model2, params2, spec2, tokenizer2 = load_pretrained(out, task=task)
    assert spec2.load_report.initialized == () and tokenizer2.pad_token_id == PAD
    again = model2.apply({"params": params2}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(ours))


def test_bare_decoder_gets_a_fresh_head_that_exports(tmp_path):
    make_checkpoint(tmp_path / "in", "qwen2", "causal_lm", bare=True)  # Qwen2Model, untied: no lm_head
    model, params, spec, tokenizer = load_pretrained(tmp_path / "in", task="causal_lm")
    assert spec.load_report.initialized == ("head/lm_head/kernel",)
    save_pretrained(tmp_path / "out", model, params, tokenizer)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    ids, mask = make_batch(padded=True)
    ours = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert compare(ours, torch_logits(reloaded.eval(), ids, mask).logits.numpy(), mask)[0] < TOL


def test_bfloat16_params_export_as_bfloat16(tmp_path):
    make_checkpoint(tmp_path / "in", "gemma", "sequence_classification")
    model, params, _, tokenizer = load_pretrained(tmp_path / "in", task="sequence_classification",
                                                  param_dtype="bfloat16")
    save_pretrained(tmp_path / "out", model, params, tokenizer)
    header = read_header(str(tmp_path / "out" / "model.safetensors"))
    assert {info["dtype"] for info in header.values()} == {"BF16"}
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert reloaded.dtype == torch.bfloat16  # config.json says so
    ours = np.asarray(params["head"]["score"]["kernel"].astype(jnp.float32))
    np.testing.assert_array_equal(reloaded.score.weight.float().detach().numpy().T, ours)
