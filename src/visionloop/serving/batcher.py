"""Micro-batching: images of concurrent requests go through the model in one forward pass.

Requests put their images on a queue and await the result. One worker task takes what is
queued, up to `max_batch` images, and runs the model in a single inference thread. It waits
up to `max_wait_ms` for more only while other requests are known to be on their way (they
announced themselves with `expecting()` and are still reading or decoding), so a lone
request never waits and a burst fills a batch.

A request carries the model it started with: a batch only mixes requests of one model, so
requests in flight during a swap finish on the old model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from visionloop.serving.metrics import Metrics
from visionloop.serving.source import LoadedModel


@dataclass
class Job:
    model: LoadedModel
    images: np.ndarray
    result: asyncio.Future


class MicroBatcher:
    def __init__(self, max_batch: int, max_wait_ms: float, metrics: Metrics) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics
        self._queue: asyncio.Queue[Job] | None = None
        self._carry: Job | None = None  # taken from the queue, but for another model
        self._expected = 0
        self._task: asyncio.Task | None = None
        # One inference thread: forward passes run one at a time, each using every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce a request that will submit images soon (it is reading or decoding)."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1

    async def predict(self, model: LoadedModel, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(model, images, future))
        return await future

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            try:
                await self._forward(jobs)
            except Exception as exc:  # a failed batch fails its requests, never the worker
                for job in jobs:
                    if not job.result.done():
                        job.result.set_exception(exc)

    async def _collect(self) -> list[Job]:
        first = self._carry or await self._queue.get()
        self._carry = None
        jobs, count = [first], len(first.images)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while count < self.max_batch:
            job = self._next_queued()
            if job is None:
                remaining = deadline - asyncio.get_running_loop().time()
                if self._expected == 0 or remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job.model is not first.model or count + len(job.images) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            count += len(job.images)
        return jobs

    def _next_queued(self) -> Job | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _forward(self, jobs: list[Job]) -> None:
        model = jobs[0].model
        batch = np.concatenate([job.images for job in jobs]) if len(jobs) > 1 else jobs[0].images
        loop = asyncio.get_running_loop()
        size = max(len(batch), 1)
        probs = await loop.run_in_executor(self._executor, model.runtime.predict_proba, batch, size)
        self.metrics.batch_images.observe(len(batch))
        start = 0
        for job in jobs:
            end = start + len(job.images)
            if not job.result.done():  # a request whose client went away is cancelled
                job.result.set_result(probs[start:end])
            start = end
