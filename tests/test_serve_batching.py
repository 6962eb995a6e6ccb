"""The pure parts of `mgpt serve`'s batching and decoding against hand values: ladders, bucket choice,
padding, the asyncio batcher (grouping, order, bounded queue) and per-row sampling filters."""

import asyncio
import time

import jax.numpy as jnp
import numpy as np
import pytest

from mgpt.generate import DecodeSettings, filter_logits
from mgpt.serve.batcher import Batcher, QueueFull, batch_ladder, length_ladder, pad_batch, smallest_fit
from mgpt.serve.decoding import next_tokens, row_filtered_logits


def test_ladders_and_bucket_choice():
    assert batch_ladder(1) == (1,)
    assert batch_ladder(8) == (1, 2, 4, 8)
    assert batch_ladder(6) == (1, 2, 4, 6)
    assert length_ladder(12) == (12,)
    assert length_ladder(64) == (16, 32, 64)
    assert length_ladder(100) == (16, 32, 64, 100)
    assert [smallest_fit(n, (16, 32, 64)) for n in (1, 16, 17, 64)] == [16, 16, 32, 64]
    with pytest.raises(ValueError, match="65 exceeds the largest compiled size 64"):
        smallest_fit(65, (16, 32, 64))


def test_pad_batch_right_and_left_with_filler_rows():
    ids, mask = pad_batch([[5, 6], [7]], batch=3, length=4, pad_id=0)
    assert ids.tolist() == [[5, 6, 0, 0], [7, 0, 0, 0], [5, 6, 0, 0]]  # the filler repeats row 0
    assert mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
    ids, mask = pad_batch([[5, 6], [7]], batch=2, length=3, pad_id=9, left=True)
    assert ids.tolist() == [[9, 5, 6], [9, 9, 7]]
    assert mask.tolist() == [[0, 1, 1], [0, 0, 1]]
    assert ids.dtype == np.int32
    with pytest.raises(ValueError, match="row 0 has 3 tokens, more than the length 2"):
        pad_batch([[1, 2, 3]], batch=1, length=2, pad_id=0)


def _run_batcher(coroutine):
    return asyncio.run(coroutine)


def test_batcher_gathers_concurrent_items_per_key_in_order():
    seen = []

    def run(key, items):
        seen.append((key, list(items)))
        return [f"{key}:{item}" for item in items]

    async def main():
        batcher = Batcher(run, max_batch=4, max_queue=100, wait_s=0.01)
        await batcher.start()
        results = await asyncio.gather(batcher.submit_many("a", list(range(6))), batcher.submit_many("b", [10]),
                                       batcher.submit_many("a", [6, 7, 8]))
        await batcher.stop()
        return results, batcher.calls

    results, calls = _run_batcher(main())
    assert results == [[f"a:{i}" for i in range(6)], ["b:10"], ["a:6", "a:7", "a:8"]]
    # 10 "a" items in calls of at most 4, oldest first; "b" waits for its own call
    assert seen == [("a", [0, 1, 2, 3]), ("a", [4, 5, 6, 7]), ("b", [10]), ("a", [8])]
    assert calls == 4


def test_batcher_refuses_beyond_the_queue_and_keeps_serving():
    def slow(key, items):
        time.sleep(0.2)
        return items

    async def main():
        batcher = Batcher(slow, max_batch=1, max_queue=2, wait_s=0.0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit_many("k", [1]))
        await asyncio.sleep(0.05)  # item 1 is running; the queue is empty again
        queued = asyncio.ensure_future(batcher.submit_many("k", [2, 3]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="queue is full"):
            await batcher.submit_many("k", [4])
        done = await asyncio.gather(first, queued)
        after = await batcher.submit_many("k", [5])
        await batcher.stop()
        return done, after

    assert _run_batcher(main()) == ([[1], [2, 3]], [5])


def test_a_failing_call_fails_its_requests_only():
    def run(key, items):
        if 0 in items:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = Batcher(run, max_batch=1, max_queue=10, wait_s=0.0)
        await batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit_many("k", [0])
        ok = await batcher.submit_many("k", [3])
        await batcher.stop()
        return ok

    assert _run_batcher(main()) == [3]


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 2, 1.0), (1.3, 0, 0.6), (0.5, 3, 0.8)])
def test_per_row_filter_equals_the_generate_filter(temperature, top_k, top_p):
    logits = jnp.asarray([[1.0, 2.0, 3.0, 4.0, 0.5], [0.1, -1.0, 2.5, 2.4, 0.0]])
    expected = filter_logits(logits, DecodeSettings(temperature=temperature, top_k=top_k, top_p=top_p))
    got = row_filtered_logits(logits, jnp.full((2,), temperature), jnp.full((2,), top_k), jnp.full((2,), top_p))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6)


def test_per_row_filter_hand_values_and_greedy_rows():
    logits = jnp.asarray([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    got = np.asarray(row_filtered_logits(logits, jnp.asarray([1.0, 2.0]), jnp.asarray([2, 0]),
                                         jnp.asarray([1.0, 1.0])))
    assert got[0].tolist() == [-np.inf, -np.inf, 3.0, 4.0]  # top-2
    assert got[1].tolist() == [0.5, 1.0, 1.5, 2.0]  # temperature 2 alone
    keys = jnp.zeros((2, 2), jnp.uint32)
    tokens = next_tokens(jnp.asarray([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]]), keys, jnp.zeros(2), jnp.zeros(2, jnp.int32),
                         jnp.ones(2))
    assert tokens.tolist() == [1, 0]  # temperature 0: arg-max
