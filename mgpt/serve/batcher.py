"""Request batching: concurrent requests gathered into one model call over fixed shapes.

The pure parts choose shapes: batch sizes and lengths come from small ladders fixed at start-up
(:func:`batch_ladder`, :func:`length_ladder`), so every model call has a shape compiled before the first
request. :class:`Batcher` is the asyncio side: a bounded queue, a short wait window to gather requests,
and one worker thread that runs the model (JAX calls stay off the event loop).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
from typing import Any, Callable, Hashable, Sequence

import numpy as np


class QueueFull(Exception):
    """The batcher holds ``max_queue`` waiting items already: the server answers 503."""


def batch_ladder(max_batch: int) -> tuple[int, ...]:
    """Batch sizes compiled at start-up: powers of two below ``max_batch``, then ``max_batch``."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return tuple(sizes + [max_batch])


def length_ladder(max_length: int, smallest: int = 16) -> tuple[int, ...]:
    """Sequence lengths compiled at start-up: ``smallest`` doubling below ``max_length``, then ``max_length``
    (coarser than training's ladder: each length is one more compilation before serving starts)."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    lengths, length = [], smallest
    while length < max_length:
        lengths.append(length)
        length *= 2
    return tuple(lengths + [max_length])


def smallest_fit(value: int, ladder: Sequence[int]) -> int:
    """The smallest entry of the sorted ``ladder`` that is >= ``value``; ValueError when none is."""
    for entry in ladder:
        if entry >= value:
            return int(entry)
    raise ValueError(f"{value} exceeds the largest compiled size {ladder[-1]}")


def pad_batch(rows: Sequence[Sequence[int]], batch: int, length: int, pad_id: int,
              left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` int32 ``(batch, length)``: each row right-padded (or right-aligned with ``left``);
    rows past ``len(rows)`` repeat the first row, so no row is all padding (their outputs are dropped)."""
    if not rows or len(rows) > batch:
        raise ValueError(f"{len(rows)} rows do not fit a batch of {batch}")
    ids = np.full((batch, length), pad_id, np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i in range(batch):
        row = list(rows[i] if i < len(rows) else rows[0])
        if len(row) > length:
            raise ValueError(f"row {i} has {len(row)} tokens, more than the length {length}")
        start = length - len(row) if left else 0
        ids[i, start:start + len(row)] = row
        mask[i, start:start + len(row)] = 1
    return ids, mask


@dataclasses.dataclass
class _Waiting:
    key: Hashable
    item: Any
    future: asyncio.Future


class Batcher:
    """Gathers items submitted concurrently into calls of ``run(key, items) -> results`` (one result per
    item, same order). Items with the same ``key`` (e.g. the endpoint) share a call; at most ``max_batch``
    per call; at most ``max_queue`` waiting, beyond which :meth:`submit` raises :class:`QueueFull`.
    ``calls`` counts model calls (tests check that requests were batched)."""

    def __init__(self, run: Callable[[Hashable, list], list], max_batch: int, max_queue: int,
                 wait_s: float = 0.005):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.run, self.max_batch, self.max_queue, self.wait_s = run, max_batch, max_queue, wait_s
        self.calls = 0
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgpt-model")

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for waiting in self._waiting:
            waiting.future.cancel()
        self._waiting.clear()
        self._executor.shutdown(wait=True)

    async def submit_many(self, key: Hashable, items: Sequence[Any]) -> list:
        """The results of ``items``, run in the same or later batches; all are queued or none is."""
        if self._wake is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if len(self._waiting) + len(items) > self.max_queue:
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            futures.append(loop.create_future())
            self._waiting.append(_Waiting(key, item, futures[-1]))
        self._wake.set()
        return list(await asyncio.gather(*futures))

    def _take_group(self) -> tuple[Hashable, list[_Waiting]]:
        """The oldest item's key and up to ``max_batch`` waiting items with it, oldest first."""
        key = self._waiting[0].key
        group, rest = [], collections.deque()
        while self._waiting:
            waiting = self._waiting.popleft()
            (group if waiting.key == key and len(group) < self.max_batch else rest).append(waiting)
        self._waiting = rest
        return key, group

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._waiting:
                self._wake.clear()
                continue
            if len(self._waiting) < self.max_batch:
                await asyncio.sleep(self.wait_s)  # the window in which concurrent requests join the batch
            key, group = self._take_group()
            group = [w for w in group if not w.future.done()]  # a client that went away
            if not group:
                continue
            self.calls += 1
            try:
                results = await loop.run_in_executor(self._executor, self.run, key, [w.item for w in group])
            except Exception as error:  # noqa: BLE001 -- handed to each request, which answers it
                for waiting in group:
                    if not waiting.future.done():
                        waiting.future.set_exception(error)
                continue
            for waiting, result in zip(group, results):
                if not waiting.future.done():
                    waiting.future.set_result(result)
