"""Micro-batching: the records of concurrent requests share one `predict_records` call in a worker thread.

A request is a job (its validated records, their size in characters, a deadline and a future). The worker
takes the first job waiting, then keeps collecting jobs for up to `max_wait_s` or until `max_records`
records (or `max_chars` characters) are in hand, runs the model once over all of them, and hands each job
back its own slice. A request is never split over two batches: a job that would overflow a batch starts the
next one. With micro-batching off, each job runs alone (what a server without batching does; the benchmark
compares the two).

Nobody waits behind work nobody waits for: a job whose request timed out leaves the queue at once (its
future is cancelled), and a running batch whose every job is past its deadline stops at the next forward
batch. `max_chars` (the server's per-request character cap) bounds how long one batch runs, and so how long
a short request can wait behind a long one.

The model runs in this one thread, so requests never run it concurrently (torch's own threads still work
inside a call), and the event loop that answers HTTP is never blocked by it.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..tasks.base import Pipeline


@dataclass(eq=False)  # identity: a job is removed from the queue by being itself
class Job:
    records: list[dict[str, Any]]
    chars: int = 0
    deadline: float = float("inf")  # time.monotonic() after which nobody waits for the answer
    wait: bool = True  # wait up to max_wait_s for company (the warm-up does not)
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker did, for /info, /metrics and the benchmark: batches run, records and requests in them."""

    batches: int = 0
    records: int = 0
    requests: int = 0
    largest_batch: int = 0
    abandoned_batches: int = 0  # stopped part-way because every request in them had timed out
    # records per batch -> batches of that size (what /metrics turns into a histogram)
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class Abandoned(Exception):
    """Raised inside a forward batch: every request of the running batch has timed out."""


class MicroBatcher:
    """One worker thread running one pipeline; `submit` is safe from any thread (the event loop's)."""

    def __init__(
        self,
        pipe: Pipeline,
        *,
        max_wait_s: float = 0.005,
        max_records: int = 64,
        max_chars: int | None = None,
        enabled: bool = True,
        batch_size: int | None = None,
        name: str = "model",
    ):
        self.pipe = pipe
        self.max_wait_s = max_wait_s
        self.max_records = max(1, max_records)
        self.max_chars = max_chars
        self.enabled = enabled
        self.batch_size = batch_size  # the forward batch inside predict_records (None: the model's setting)
        self.stats = BatchStats()
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running: list[Job] = []
        self._thread = threading.Thread(target=self._work, name=f"nlpcli-serve-{name}", daemon=True)
        self._guard_forward()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Answer every job submitted so far, then end the worker; False if it was still running at `timeout`
        (the thread is a daemon: it does not keep the process alive)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(
        self,
        records: list[dict[str, Any]],
        *,
        chars: int = 0,
        deadline: float = float("inf"),
        wait: bool = True,
    ) -> Future[list[dict[str, Any]]]:
        """The future of these records' predictions (in order). Cancelling it drops a job not yet started
        from the queue; a started one stops once every job of its batch is past its deadline."""
        job = Job(records, chars, deadline, wait)
        job.future.add_done_callback(lambda f: self._discard(job) if f.cancelled() else None)
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    def queued(self) -> int:
        return len(self._jobs)

    def _discard(self, job: Job) -> None:
        with self._cond, contextlib.suppress(ValueError):  # taken by the worker already
            self._jobs.remove(job)

    # --- the worker thread ----------------------------------------------------------------
    def _work(self) -> None:
        while True:
            jobs, stopping = self._collect()
            if jobs:
                self._run([j for j in jobs if j.future.set_running_or_notify_cancel()])
            if stopping:
                return

    def _collect(self) -> tuple[list[Job], bool]:
        """The jobs of the next batch, and whether to stop after it (stop: once the queue is empty)."""
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if not self._jobs:
                return [], True
            first = self._jobs.popleft()
            jobs, n, chars = [first], len(first.records), first.chars
            if not self.enabled or not first.wait:
                return jobs, False
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_records:
                if not self._jobs:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
                    continue
                job = self._jobs[0]
                if n + len(job.records) > self.max_records or (
                    self.max_chars is not None and chars + job.chars > self.max_chars
                ):
                    break  # it starts the next batch
                self._jobs.popleft()
                jobs.append(job)
                n += len(job.records)
                chars += job.chars
        return jobs, False

    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        records = [r for j in jobs for r in j.records]
        self._running = jobs
        try:
            outputs = list(self.pipe.predict_records(records, self.batch_size))
        except Abandoned:
            self.stats.abandoned_batches += 1
            for job in jobs:
                job.future.set_exception(TimeoutError("abandoned: the request timed out"))
            return
        except Exception as e:  # the records were validated; this is a fault of the model or the task code
            if len(jobs) > 1:  # find the job that caused it: the others still get their answers
                for job in jobs:
                    self._run([job])
            else:
                jobs[0].future.set_exception(e)
            return
        finally:
            self._running = []
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.requests += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(records))
        self.stats.sizes[len(records)] += 1
        start = 0
        for job in jobs:
            job.future.set_result(outputs[start : start + len(job.records)])
            start += len(job.records)

    def _guard_forward(self) -> None:
        """Check before each forward batch that someone still waits for the running batch.

        The pipeline's prediction loop has no hook between forward batches, so this worker (the only caller
        of its pipeline while serving) wraps the instance's `forward`: a long batch whose requests all timed
        out stops within one forward batch instead of running to the end for nobody."""
        forward = self.pipe.forward

        def guarded(pieces: list[Any], **params: Any) -> list[Any]:
            running = self._running
            if running and time.monotonic() > max(j.deadline for j in running):
                raise Abandoned
            return forward(pieces, **params)

        setattr(self.pipe, "forward", guarded)  # noqa: B010 (an instance attribute over the method)
