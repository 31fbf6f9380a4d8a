"""Micro-batching: texts of concurrent requests gathered into one model call per batch.

Requests wait in a bounded asyncio queue. One worker takes the first waiting request, then keeps
collecting until the batch holds `max_texts` texts or `max_wait_ms` has passed since it started,
and runs the model once, in a worker thread, so the event loop keeps accepting requests
meanwhile (those then form the next batch at once). A full queue is refused (`OverloadedError`)
instead of growing without bound. With batching off, every request is its own model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kit.serve.settings import BatchingConfig

log = logging.getLogger(__name__)

__all__ = ["BatchStats", "MicroBatcher", "OverloadedError"]


class OverloadedError(Exception):
    """The request queue is full: the caller should answer 503 and let the client retry."""


@dataclass
class BatchStats:
    """Counters since start: model calls, the requests and texts they served."""

    calls: int = 0
    requests: int = 0
    texts: int = 0


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Feeds `predict` (texts -> (n, K) array) with batches of concurrent requests."""

    def __init__(self, predict: Callable[[list[str]], np.ndarray],
                 config: BatchingConfig | None = None):
        self.predict_fn = predict
        self.config = config or BatchingConfig()
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: _Request | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker (inside the running event loop)."""
        self._queue = asyncio.Queue(maxsize=self.config.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-model")
        self._worker = asyncio.create_task(self._run(), name="kit-microbatch")

    async def stop(self) -> None:
        """Stop the worker; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        waiting = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for request in waiting:
            request.future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def predict(self, texts: list[str]) -> np.ndarray:
        """The model's rows for `texts`, computed in some batch; OverloadedError when full."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        request = _Request(list(texts), asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull as err:
            raise OverloadedError(f"{self._queue.qsize()} requests are waiting") from err
        return await request.future

    async def _next(self, timeout: float | None) -> _Request | None:
        """The next waiting request: the one carried over first; None when `timeout` passes."""
        assert self._queue is not None
        if self._carry is not None:
            request, self._carry = self._carry, None
            return request
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _collect(self) -> list[_Request]:
        """One batch: the first request, then more until full or the wait is over."""
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        batch, n = [first], len(first.texts)
        if not self.config.enabled:
            return batch
        deadline = loop.time() + self.config.max_wait_ms / 1000
        while n < self.config.max_texts:
            request = await self._next(deadline - loop.time())
            if request is None:
                break
            if n + len(request.texts) > self.config.max_texts:
                self._carry = request  # starts the next batch
                break
            batch.append(request)
            n += len(request.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            batch = [r for r in batch if not r.future.done()]  # clients that gave up
            if not batch:
                continue
            texts = [t for r in batch for t in r.texts]
            try:
                rows = await loop.run_in_executor(self._executor, self.predict_fn, texts)
            except Exception as err:  # every waiting request learns why, the worker goes on
                log.exception("prediction failed for a batch of %d texts", len(texts))
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(err)
                continue
            self.stats.calls += 1
            self.stats.requests += len(batch)
            self.stats.texts += len(texts)
            start = 0
            for r in batch:
                end = start + len(r.texts)
                if not r.future.done():
                    r.future.set_result(rows[start:end])
                start = end
