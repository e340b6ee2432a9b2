"""Micro-batching: the records of concurrent requests share one `predict_records` call in a worker thread.

A request is a job (its validated records and a future). The worker takes the first job waiting, then keeps
collecting jobs for up to `max_wait_s` or until `max_records` records are in hand, runs the model once over
all of them, and hands each job back its own slice. A request is never split over two batches: a job that
would overflow a batch starts the next one. With micro-batching off, each job runs alone (what a server
without batching does; the benchmark compares the two).

The model runs in this one thread, so requests never run it concurrently (torch's own threads still work
inside a call), and the event loop that answers HTTP is never blocked by it.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..tasks.base import Pipeline


@dataclass
class Job:
    records: list[dict[str, Any]]
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker did, for /info and the benchmark: batches run, records and requests in them."""

    batches: int = 0
    records: int = 0
    requests: int = 0
    largest_batch: int = 0


_STOP = None  # queued by `stop`: the worker finishes the jobs before it, then exits


class MicroBatcher:
    """One worker thread running one pipeline; `submit` is safe from any thread (the event loop's)."""

    def __init__(
        self,
        pipe: Pipeline,
        *,
        max_wait_s: float = 0.005,
        max_records: int = 64,
        enabled: bool = True,
        batch_size: int | None = None,
        name: str = "model",
    ):
        self.pipe = pipe
        self.max_wait_s = max_wait_s
        self.max_records = max(1, max_records)
        self.enabled = enabled
        self.batch_size = batch_size  # the forward batch inside predict_records (None: the model's setting)
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._carry: Job | None = None  # a job taken that did not fit the last batch
        self._thread = threading.Thread(target=self._work, name=f"nlpcli-serve-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Answer every job submitted so far, then end the worker."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def submit(self, records: list[dict[str, Any]]) -> Future[list[dict[str, Any]]]:
        """The future of these records' predictions (in order); cancel it to drop a job not yet started."""
        job = Job(records)
        self._queue.put(job)
        return job.future

    # --- the worker thread ----------------------------------------------------------------
    def _work(self) -> None:
        while True:
            jobs, stopping = self._collect()
            if jobs:
                self._run([j for j in jobs if j.future.set_running_or_notify_cancel()])
            if stopping:
                return

    def _collect(self) -> tuple[list[Job], bool]:
        """The jobs of the next batch, and whether the stop marker came (jobs before it are still run)."""
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is None:
            return [], True
        jobs, n = [first], len(first.records)
        if not self.enabled:
            return jobs, False
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_records:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if job.future.cancelled():  # its caller timed out while it waited
                continue
            if n + len(job.records) > self.max_records:
                self._carry = job
                break
            jobs.append(job)
            n += len(job.records)
        return jobs, False

    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        records = [r for j in jobs for r in j.records]
        try:
            outputs = list(self.pipe.predict_records(records, self.batch_size))
        except Exception as e:  # the records were validated; this is a fault of the model or the task code
            if len(jobs) > 1:  # find the job that caused it: the others still get their answers
                for job in jobs:
                    self._run([job])
            else:
                jobs[0].future.set_exception(e)
            return
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.requests += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(records))
        start = 0
        for job in jobs:
            job.future.set_result(outputs[start : start + len(job.records)])
            start += len(job.records)
