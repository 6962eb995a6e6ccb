"""Bucketed padding and length grouping: shapes follow the data, the numbers do not change."""

import functools
import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import config as config_lib
from mgpt.config import ConfigError
from mgpt.data import Batches, DataError
from mgpt.data import lengths as lengths_lib
from mgpt.train import loop, reporting, setup
from mgpt.train.step import gradients
from mgpt.train.validate import validate

from fixtures_tiny import ENTITY_WORDS, FILLER, sentiment_csv, tiny_bert, tiny_gpt2


def test_default_ladder_and_bucket_choice():
    assert lengths_lib.default_buckets(128) == (8, 12, 16, 24, 32, 48, 64, 96, 128)
    assert lengths_lib.default_buckets(100) == (8, 12, 16, 24, 32, 48, 64, 96, 100)
    assert lengths_lib.default_buckets(8) == (8,)
    assert lengths_lib.default_buckets(5) == (5,)
    ladder = lengths_lib.bucket_ladder(64, (16, 32))
    assert ladder == (16, 32, 64)
    assert [lengths_lib.bucket_for(n, ladder) for n in (0, 1, 16, 17, 32, 33, 64)] == [16, 16, 16, 32, 32, 64, 64]
    with pytest.raises(DataError, match="data.bucket_lengths"):
        lengths_lib.bucket_ladder(32, (16, 48))


def test_row_lengths_right_padded_and_packed():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 2, 2, 0]])  # the last: packed segment ids
    assert lengths_lib.row_lengths(mask).tolist() == [2, 4, 0, 3]


def _variable_arrays(n=50, width=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, width + 1, size=n)
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, np.arange(n)[:, None] * 1000 + np.arange(width)[None, :], 0).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "labels": np.arange(n, dtype=np.int32)}, lengths


def test_batches_cut_to_the_bucket_of_their_longest_row():
    arrays, lengths = _variable_arrays()
    ladder = lengths_lib.bucket_ladder(40)
    batches = Batches(arrays, 8, seed=3, buckets=ladder)
    seen = []
    for step in range(batches.steps_per_epoch):
        batch = batches.batch_at(step)
        real = batch["example_weight"] > 0
        ids = batch["input_ids"][:, 0] // 1000
        width = batch["input_ids"].shape[1]
        assert width == lengths_lib.bucket_for(lengths[ids].max(), ladder)
        assert batch["attention_mask"].shape == (8, width) and batch["labels"].shape == (8,)
        # nothing real is cut: every row keeps all its tokens
        np.testing.assert_array_equal(batch["attention_mask"].sum(1), np.minimum(lengths[ids], width))
        assert (lengths[ids] <= width).all()
        seen += ids[real].tolist()
    assert sorted(seen) == list(range(50))
    again = Batches(arrays, 8, seed=3, buckets=ladder)  # a pure function of (seed, step)
    for step in (0, 5, 11):
        for key, value in batches.batch_at(step).items():
            np.testing.assert_array_equal(value, again.batch_at(step)[key])


def test_group_by_length_sorts_windows_and_keeps_every_example():
    arrays, lengths = _variable_arrays(n=200, seed=1)
    ladder = lengths_lib.bucket_ladder(40)
    plain = Batches(arrays, 8, seed=0, buckets=ladder)
    grouped = Batches(arrays, 8, seed=0, buckets=ladder, group_by_length=True, group_window=5)
    order = grouped.order(0)
    assert sorted(order.tolist()) == list(range(200))
    for start in range(0, 200, 40):  # windows of 5 batches, each sorted longest first
        window = lengths[order[start:start + 40]]
        assert (np.diff(window) <= 0).all()
    assert lengths[order[0]] == lengths.max()  # the longest window goes first

    def computed(b):
        return sum(b.batch_at(s)["input_ids"].size for s in range(b.steps_per_epoch))

    assert computed(grouped) < 0.8 * computed(plain)
    np.testing.assert_array_equal(order, Batches(arrays, 8, seed=0, buckets=ladder, group_by_length=True,
                                                 group_window=5).order(0))
    assert not np.array_equal(order, grouped.order(1))  # a new shuffle every epoch


def test_eval_batches_go_longest_first_and_cover_the_split():
    arrays, lengths = _variable_arrays(n=21)
    batches = Batches(arrays, 4, shuffle=False, buckets=lengths_lib.bucket_ladder(40))
    order = batches.eval_order()
    assert (np.diff(lengths[order]) <= 0).all()
    visited = []
    for batch in batches.eval_batches():
        visited += (batch["input_ids"][batch["example_weight"] > 0, 0] // 1000).tolist()
    assert visited == order.tolist()
    assert Batches(arrays, 4, shuffle=False).eval_order().tolist() == list(range(21))


# --- end to end: tiny models on data of varied lengths ---------------------------------------------------

def _varied_conll(path, count, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(count):
            rows = [(rng.choice(ENTITY_WORDS["PER"]), "B-PER"), ("visited", "O"), (rng.choice(ENTITY_WORDS["LOC"]), "B-LOC")]
            rows += [(rng.choice(FILLER), "O") for _ in range(rng.randint(0, 14))]
            f.write("".join(f"{w} NN {t}\n" for w, t in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    d = tmp_path_factory.mktemp("varied")
    return {
        "gpt2": tiny_gpt2(d / "gpt2"),
        "bert": tiny_bert(d / "bert"),
        "csv": {s: sentiment_csv(d / f"{s}.csv", n, i, max_filler=14) for i, (s, n) in enumerate((("train", 40), ("test", 13)))},
        "conll": {s: _varied_conll(d / f"{s}.conll", n, i) for i, (s, n) in enumerate((("train", 40), ("test", 13)))},
    }


def _config(varied, kind, *overrides):
    model = "bert" if kind == "token_classification" else "gpt2"
    files = varied["conll" if kind == "token_classification" else "csv"]
    config = config_lib.ExperimentConfig(
        model=config_lib.ModelConfig(name_or_path=varied[model], dropout=0.0),
        data=config_lib.DataConfig(format="conll" if kind == "token_classification" else "csv",
                                   train_file=files["train"], test_file=files["test"], text_column="review",
                                   label_column="sentiment", max_length=32),
        task=config_lib.TaskConfig(kind=kind),
        optimizer=config_lib.OptimizerConfig(name="adamw", learning_rate=3e-3, warmup_steps=0),
        train=config_lib.TrainConfig(batch_size=8, eval_batch_size=8, num_epochs=1, log_every=1, progress_bar=False,
                                     eval_splits=("test",), final_eval_splits=("test",)),
        checkpoint=config_lib.CheckpointConfig(enabled=False),
    )
    return config_lib.apply_overrides(config, list(overrides))


@pytest.mark.parametrize("kind", ["sequence_classification", "token_classification", "causal_lm"])
def test_bucketed_batch_gives_the_padded_loss_and_gradients(varied, kind):
    run = setup.build_run(_config(varied, kind))
    batches = run.batches("train", 8, shuffle=True)
    full = Batches(run.data.splits["train"], 8, run.config.train.seed)  # same order, max_length wide
    rng = jax.random.PRNGKey(0)
    grad_fn = jax.jit(functools.partial(gradients, model=run.model, task=run.task))
    for step in (0, 4):  # the last one is short: weight-0 padding rows
        cut, padded = batches.batch_at(step), full.batch_at(step)
        assert cut["input_ids"].shape[1] < padded["input_ids"].shape[1] == 32
        g_cut, s_cut, c_cut = grad_fn(run.params, cut, rng)
        g_pad, s_pad, c_pad = grad_fn(run.params, padded, rng)
        assert float(c_cut) == float(c_pad) > 0
        np.testing.assert_allclose(float(s_cut), float(s_pad), rtol=1e-5, atol=1e-5)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(g_cut),
                                                                    jax.tree_util.tree_leaves(g_pad)))
        assert diff < 1e-5


def _final(workdir):
    return [e for e in reporting.read_metrics(workdir) if e["kind"] == "final"][-1]


def test_bucketed_run_equals_padded_run_and_compiles_each_shape_once(varied, tmp_path):
    runs = {}
    for padding in ("buckets", "max_length"):
        workdir = str(tmp_path / padding)
        reports = loop.train(_config(varied, "token_classification", f"data.padding={padding}",
                                     "train.num_epochs=2"), workdir)
        events = reporting.read_metrics(workdir)
        runs[padding] = (reports["test"], [e for e in events if e["kind"] == "train"], _final(workdir))
    (rep_b, train_b, final_b), (rep_p, train_p, final_p) = runs["buckets"], runs["max_length"]
    np.testing.assert_allclose([e["loss"] for e in train_b], [e["loss"] for e in train_p], rtol=1e-5, atol=1e-6)
    # evaluation ran longest first over cut batches and reports in file order: the same report
    assert rep_b["f1"] == rep_p["f1"] and rep_b["accuracy"] == rep_p["accuracy"]
    np.testing.assert_allclose(rep_b["loss"], rep_p["loss"], rtol=1e-5)
    train_shapes = {k: v for k, v in final_b.items() if k.startswith("train_step_compilations/")}
    eval_shapes = {k: v for k, v in final_b.items() if k.startswith("eval_step_compilations/")}
    assert len(train_shapes) >= 2 and set(train_shapes.values()) == {1}
    assert len(eval_shapes) >= 2 and set(eval_shapes.values()) == {1}
    assert final_b["train_step_compilations"] == len(train_shapes)
    assert final_p["train_step_compilations"] == 1 and list(k for k in final_p if "/" in k) == [
        "train_step_compilations/8x32", "eval_step_compilations/8x32"]
    # what was computed: the padded run computes every row at 32 tokens, the bucketed one far fewer
    assert final_p["computed_tokens"] == final_p["train_steps"] * 8 * 32
    assert final_b["real_tokens"] == final_p["real_tokens"]
    assert final_b["computed_tokens"] < 0.75 * final_p["computed_tokens"]
    assert final_b["real_token_fraction"] == pytest.approx(final_b["real_tokens"] / final_b["computed_tokens"])
    assert 0 < final_b["compile_seconds"] < final_b["train_seconds"]
    assert final_b["epochs"] == 2.0


def train_steps(workdir):
    """step -> (loss, batch fingerprint) of a run's train events."""
    return {e["step"]: (e["loss"], e["batch_fingerprint"]) for e in reporting.read_metrics(workdir)
            if e["kind"] == "train"}


def test_grouped_run_resumes_exactly(varied, tmp_path):
    overrides = ("data.group_by_length=true", "data.group_window=2", "data.bucket_lengths=(16,)", "train.num_epochs=2",
                 "checkpoint.enabled=true", "checkpoint.async_save=false")
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train(_config(varied, "sequence_classification", *overrides), straight)
    assert loop.train(_config(varied, "sequence_classification", *overrides), resumed, stop_after=7) == {}
    loop.train(_config(varied, "sequence_classification", *overrides), resumed)

    a, b = train_steps(straight), train_steps(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for step in a:
        assert a[step][1] == b[step][1]
        np.testing.assert_allclose(a[step][0], b[step][0], rtol=1e-6)
    with open(os.path.join(straight, "eval_test.json")) as f, open(os.path.join(resumed, "eval_test.json")) as g:
        assert json.load(f)["accuracy"] == json.load(g)["accuracy"]


def test_bucket_options_are_validated(varied):
    with pytest.raises(ConfigError, match="data.bucket_lengths"):
        validate(_config(varied, "sequence_classification", "data.bucket_lengths=(16, 64)"))
    with pytest.raises(ConfigError, match="data.group_by_length"):
        validate(_config(varied, "sequence_classification", "data.padding=max_length", "data.group_by_length=true"))
    with pytest.raises(ConfigError, match="data.padding"):
        validate(_config(varied, "sequence_classification", "data.padding=longest"))
    validate(_config(varied, "sequence_classification", "data.bucket_lengths=(16,)", "data.group_by_length=true"))
