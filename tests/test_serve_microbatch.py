"""Micro-batching: concurrent requests share model calls, get their own rows back, bounds hold."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from kit.serve.microbatch import MicroBatcher, OverloadedError
from kit.serve.settings import BatchingConfig


class FakeModel:
    """Row i of the result is [len(text_i), call number]; records each call's batch size."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.batches: list[int] = []
        self.delay = delay
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        if self.fail_on in texts:
            raise ValueError(f"cannot predict {self.fail_on!r}")
        time.sleep(self.delay)
        self.batches.append(len(texts))
        return np.array([[len(t), len(self.batches)] for t in texts], dtype=float)


async def _serve(model: FakeModel, config: BatchingConfig, requests: list[list[str]]) -> list:
    batcher = MicroBatcher(model, config)
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.predict(r) for r in requests),
                                    return_exceptions=True)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    model = FakeModel(delay=0.02)
    requests = [["x" * (i + 1)] * (1 + i % 3) for i in range(30)]
    results = asyncio.run(_serve(model, BatchingConfig(max_texts=16, max_wait_ms=50), requests))
    for request, rows in zip(requests, results, strict=True):
        assert rows[:, 0].tolist() == [len(t) for t in request]  # its own rows, in its order
    assert sum(model.batches) == sum(map(len, requests))
    assert len(model.batches) < len(requests) and max(model.batches) <= 16
    assert model.threads == {"kit-model_0"}  # one worker thread runs the model


def test_without_batching_every_request_is_one_call():
    model = FakeModel()
    requests = [["a"], ["b", "c"], ["d"]]
    asyncio.run(_serve(model, BatchingConfig(enabled=False), requests))
    assert sorted(model.batches) == [1, 1, 2]


def test_a_request_larger_than_a_batch_runs_alone():
    model = FakeModel()
    rows = asyncio.run(_serve(model, BatchingConfig(max_texts=4), [["t"] * 10]))[0]
    assert rows.shape == (10, 2) and model.batches == [10]


def test_a_full_queue_refuses_and_a_failing_batch_reports_to_its_requests():
    model = FakeModel(delay=0.05, fail_on="boom")
    config = BatchingConfig(max_texts=1, max_wait_ms=0, max_queue=2)
    results = asyncio.run(_serve(model, config, [["a"], ["b"], ["c"], ["d"], ["e"]]))
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert refused and all(isinstance(r, np.ndarray) or r in refused for r in results)

    failed = asyncio.run(_serve(FakeModel(fail_on="boom"), BatchingConfig(max_texts=1),
                                [["boom"], ["fine"]]))
    assert isinstance(failed[0], ValueError) and failed[1].shape == (1, 2)


def test_predict_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(MicroBatcher(FakeModel()).predict(["a"]))
