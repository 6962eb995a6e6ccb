"""Batches: a pure function of (seed, step), fixed shapes, weight-0 padding."""

import numpy as np
import pytest

from mgpt.data import Batches, DataError

N, B = 10, 4  # 3 steps per epoch, the last with 2 real rows


def arrays(n=N):
    return {
        "input_ids": np.arange(n * 3, dtype=np.int32).reshape(n, 3),
        "labels": np.arange(n, dtype=np.int32) + 100,
    }


def real_ids(batch):
    """Example ids (input_ids[:, 0] // 3) of the rows with weight 1."""
    return (batch["input_ids"][batch["example_weight"] == 1, 0] // 3).tolist()


def test_steps_and_shapes():
    batches = Batches(arrays(), B, seed=0)
    assert batches.num_examples == N and batches.steps_per_epoch == 3 and len(batches) == 3
    for step in range(7):
        batch = batches.batch_at(step)
        assert batch["input_ids"].shape == (B, 3) and batch["labels"].shape == (B,)
        assert batch["example_weight"].dtype == np.float32


def test_same_seed_and_step_give_the_same_batch_in_a_fresh_object():
    first = Batches(arrays(), B, seed=7).batch_at(5)
    again = Batches(arrays(), B, seed=7)
    again.batch_at(0)  # touching other steps first must not matter
    second = again.batch_at(5)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    other_seed = Batches(arrays(), B, seed=8)
    orders = [np.concatenate([real_ids(b.batch_at(s)) for s in range(3)]) for b in (Batches(arrays(), B, 7), other_seed)]
    assert not np.array_equal(orders[0], orders[1])


def test_every_example_once_per_epoch_and_epochs_differ():
    batches = Batches(arrays(), B, seed=3)
    epochs = []
    for epoch in range(3):
        ids = sum((real_ids(batches.batch_at(epoch * 3 + s)) for s in range(3)), [])
        assert sorted(ids) == list(range(N))
        epochs.append(ids)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    # The permutation is numpy's, seeded with (seed, epoch).
    assert epochs[1] == np.random.default_rng([3, 1]).permutation(N).tolist()


def test_last_batch_padded_with_weight_zero_copies():
    batches = Batches(arrays(), B, seed=0)
    last = batches.batch_at(2)
    np.testing.assert_array_equal(last["example_weight"], [1, 1, 0, 0])
    np.testing.assert_array_equal(last["input_ids"][2], last["input_ids"][0])
    np.testing.assert_array_equal(last["input_ids"][3], last["input_ids"][0])
    assert last["labels"][2:].tolist() == [-100, -100]
    assert last["labels"][0] == last["input_ids"][0, 0] // 3 + 100
    full = batches.batch_at(0)
    np.testing.assert_array_equal(full["example_weight"], [1, 1, 1, 1])


def test_float_labels_keep_values_on_padding_rows():
    data = {"input_ids": np.zeros((3, 2), np.int32), "labels": np.array([0.5, 1.5, 2.5], np.float32)}
    batch = Batches(data, 2, shuffle=False).batch_at(1)
    assert batch["labels"].tolist() == [2.5, 2.5]
    assert batch["example_weight"].tolist() == [1.0, 0.0]


def test_eval_batches_in_order():
    batches = list(Batches(arrays(), B, seed=0).eval_batches())
    assert len(batches) == 3
    assert [real_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[-1]["labels"].tolist() == [108, 109, -100, -100]


def test_no_shuffle_is_file_order():
    batches = Batches(arrays(), B, seed=0, shuffle=False)
    assert real_ids(batches.batch_at(3)) == [0, 1, 2, 3]


def test_bad_inputs():
    with pytest.raises(DataError, match="same number of rows"):
        Batches({"a": np.zeros(3), "b": np.zeros(4)}, 2)
    with pytest.raises(DataError, match="at least one example"):
        Batches({"a": np.zeros(0)}, 2)
