"""Packing for sequence classification, regression and tagging: one row holds several examples, and the
loss and gradients are those of the same examples padded one per row."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mgpt
from mgpt.config import ConfigError
from mgpt.constants import IGNORE_INDEX
from mgpt.data import DataError
from mgpt.data.packing import pack_examples
from mgpt.models.layers import segment_positions, segment_token_index
from mgpt.train import loop, reporting, setup
from mgpt.train.step import gradients
from mgpt.tasks import get_task
from mgpt.train.validate import validate

from family_checkpoints import PAD, VOCAB, make_checkpoint
from fixtures_tiny import tiny_bert, tiny_gpt2
from test_buckets import _config, train_steps, varied  # noqa: F401 -- varied: the module fixture


def test_pack_examples_layout_by_hand():
    arrays = {"input_ids": np.array([[5, 6, 7, 0], [8, 9, 0, 0], [1, 0, 0, 0], [2, 3, 4, 5]]),
              "attention_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
              "labels": np.array([0, 1, 2, 3], np.int32)}
    packed = pack_examples(arrays, 6, pad_id=0, per_token_labels=False)
    # best fit, longest first: [4 tokens + 2 tokens], [3 tokens + 1 token]
    assert packed["input_ids"].tolist() == [[2, 3, 4, 5, 8, 9], [5, 6, 7, 1, 0, 0]]
    assert packed["segment_ids"].tolist() == [[1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 0, 0]]
    assert packed["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert packed["labels"].tolist() == [[3, 1], [0, 2]]
    assert packed["segment_weight"].tolist() == [[1, 1], [1, 1]]
    segments = jnp.asarray(packed["segment_ids"])
    assert segment_positions(segments).tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]]
    assert segment_positions(segments, 2, 1).tolist() == [[2, 3, 4, 5, 2, 3], [2, 3, 4, 2, 1, 1]]  # RoBERTa
    assert segment_token_index(segments, 2, last=False).tolist() == [[0, 4], [0, 3]]
    assert segment_token_index(segments, 2, last=True).tolist() == [[3, 5], [2, 3]]


def test_pack_examples_tags_floats_and_empty_slots():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, size=40)
    mask = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, np.arange(40)[:, None] * 100 + np.arange(16)[None, :], 0)
    tags = np.where(mask > 0, ids % 7, IGNORE_INDEX)
    packed = pack_examples({"input_ids": ids, "attention_mask": mask, "labels": tags}, 16, 0, per_token_labels=True)
    assert int(packed["attention_mask"].sum()) == int(lengths.sum())  # nothing cut, nothing doubled
    assert float(packed["attention_mask"].mean()) > 0.9  # few tokens are padding
    for row_ids, row_tags in zip(packed["input_ids"], packed["labels"]):  # each tag still beside its token
        real = row_ids > 0
        np.testing.assert_array_equal(row_tags[real], row_ids[real] % 7)
    floats = pack_examples({"input_ids": ids, "attention_mask": mask, "labels": lengths.astype(np.float32)}, 16, 0,
                           per_token_labels=False)
    weight = floats["segment_weight"]
    assert weight.sum() == 40 and sorted(floats["labels"][weight > 0].tolist()) == sorted(lengths.tolist())
    assert (floats["labels"][weight == 0] == 0).all()
    for row, segments in zip(floats["labels"], floats["segment_ids"]):  # slot k labels segment k + 1
        for k, label in enumerate(row[: segments.max()]):
            assert label == np.sum(segments == k + 1)
    with pytest.raises(DataError, match="max_length=4"):
        pack_examples({"input_ids": ids, "attention_mask": mask, "labels": tags}, 4, 0, per_token_labels=True)


def _examples(task, num_labels, vocab, n=9, width=12, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, width + 1, size=n)
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, rng.integers(5, vocab, size=(n, width)), PAD).astype(np.int32)
    if task == "token_classification":
        labels = np.where(mask > 0, rng.integers(0, num_labels, size=(n, width)), IGNORE_INDEX).astype(np.int32)
        labels[:, 0] = IGNORE_INDEX  # as a [CLS] token carries no tag
    elif task == "regression":
        labels = rng.normal(size=n).astype(np.float32)
    else:
        labels = rng.integers(0, num_labels, size=n).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "labels": labels}


MODELS = [("gpt2", "sequence_classification"), ("bert", "sequence_classification"), ("bert", "token_classification"),
          ("roberta", "sequence_classification"), ("roberta", "regression"), ("distilbert", "sequence_classification"),
          ("llama", "regression"), ("mistral", "sequence_classification"), ("llama", "token_classification")]


@pytest.mark.parametrize("family,task", MODELS)
def test_packed_batch_gives_the_padded_loss_and_gradients(family, task, tmp_path):
    if family == "gpt2":
        directory, vocab = tiny_gpt2(tmp_path / "m", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), 20
    elif family == "bert":
        directory, vocab = tiny_bert(tmp_path / "m", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), 20
    else:
        directory, vocab = tmp_path / "m", VOCAB
        make_checkpoint(directory, family, task)
    num_labels = 1 if task == "regression" else 3
    model, params, _, _ = mgpt.load_pretrained(directory, task=task, num_labels=num_labels, dropout=0.0)
    arrays = _examples(task, num_labels, vocab)
    packed = pack_examples(arrays, 24, PAD, per_token_labels=task == "token_classification")
    assert len(packed["input_ids"]) < len(arrays["input_ids"]) and packed["input_ids"].shape[1] == 24
    padded = dict(arrays, example_weight=np.ones(len(arrays["labels"]), np.float32))
    packed["example_weight"] = np.ones(len(packed["input_ids"]), np.float32)
    grad_fn = jax.jit(functools.partial(gradients, model=model, task=get_task(task)))
    rng = jax.random.PRNGKey(0)
    g_pad, s_pad, c_pad = grad_fn(params, padded, rng)
    g_pack, s_pack, c_pack = grad_fn(params, packed, rng)
    assert float(c_pack) == float(c_pad) > 0
    np.testing.assert_allclose(float(s_pack), float(s_pad), rtol=1e-5, atol=1e-5)
    leaves = list(zip(jax.tree_util.tree_leaves(g_pack), jax.tree_util.tree_leaves(g_pad)))
    # 1e-5 relative to the largest gradient entry: a regression head's summed squared error gives entries
    # well above 1, where float32 sums taken in another order differ by more than 1e-5 absolute
    scale = max(1.0, max(float(jnp.max(jnp.abs(b))) for _, b in leaves))
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in leaves) < 1e-5 * scale


def test_packed_run_compiles_one_shape_and_resumes_exactly(varied, tmp_path):  # noqa: F811
    overrides = ("data.pack=true", "train.num_epochs=3", "checkpoint.enabled=true", "checkpoint.async_save=false")
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    reports = loop.train(_config(varied, "sequence_classification", *overrides), straight)
    assert loop.train(_config(varied, "sequence_classification", *overrides), resumed, stop_after=2) == {}
    resumed_reports = loop.train(_config(varied, "sequence_classification", *overrides), resumed)

    a, b = train_steps(straight), train_steps(resumed)
    assert sorted(a) == sorted(b) and len(a) >= 4
    for step in a:
        assert a[step][1] == b[step][1]
        np.testing.assert_allclose(a[step][0], b[step][0], rtol=1e-6)
    final = [e for e in reporting.read_metrics(straight) if e["kind"] == "final"][-1]
    assert [k for k in final if k.startswith("train_step_compilations/")] == ["train_step_compilations/8x32"]
    assert final["computed_tokens"] == final["train_steps"] * 8 * 32
    # evaluation stays per example: all 13 test examples, scored alike by both runs
    assert reports["test"]["num_examples"] == resumed_reports["test"]["num_examples"] == 13
    assert reports["test"]["accuracy"] == resumed_reports["test"]["accuracy"]
    run = setup.build_run(_config(varied, "sequence_classification", "data.pack=true"))
    train = run.data.splits["train"]
    assert int(train["segment_weight"].sum()) == 40  # every training example, once
    assert float(np.mean(train["attention_mask"])) > 0.8  # packed rows are nearly full


def test_packing_options_are_validated(varied):  # noqa: F811
    with pytest.raises(ConfigError, match="data.pack"):
        validate(_config(varied, "sequence_classification", "data.pack=true", "train.eval_splits=('train',)"))
    with pytest.raises(ConfigError, match="prompt"):
        validate(_config(varied, "sequence_classification", "data.pack=true", "peft.method=prompt"))
    validate(_config(varied, "token_classification", "data.pack=true"))
