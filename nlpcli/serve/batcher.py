"""Micro-batching: the records of concurrent requests share one `predict_records` call in a worker thread.

A request is a job (its validated records, a deadline and a future). The worker takes the first job waiting,
then keeps collecting jobs for up to `max_wait_s` or until `max_records` records or `max_chars` characters
are in hand, runs the model once over all of them, and hands each job back its records' predictions. With
micro-batching off, each batch holds one job's records (what a server without batching does; the benchmark
compares the two).

No client holds the model for everyone: a batch holds at most `max_chars` characters (at least one record),
so a request larger than that runs a slice of its records per batch, and goes back to the end of the queue
between slices: requests that came after it are answered in between, each waiting about one batch, not
the whole large request. (A record is never split: the server caps a record's characters at or below a
batch's.) Nobody waits behind work nobody waits for: a job whose request timed out leaves the queue at once
(its future is cancelled), its remaining slices are dropped, and a running batch whose every job is past its
deadline stops at the next forward batch.

The model runs in this one thread, so requests never run it concurrently (torch's own threads still work
inside a call), and the event loop that answers HTTP is never blocked by it. With a `runner` (a
ModelProcess), this thread hands each batch to the model's own process instead and waits for it, holding
no lock the event loop needs.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..tasks.base import Pipeline

log = logging.getLogger("nlpcli.serve")


def record_chars(record: Any) -> int:
    """Characters in every string of a record (keys included), however deep: what the model may read."""
    total, stack = 0, [record]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


@dataclass(eq=False)  # identity: a job is removed from the queue by being itself
class Job:
    records: list[dict[str, Any]]
    chars: list[int]  # of each record
    deadline: float = float("inf")  # time.monotonic() after which nobody waits for the answer
    wait: bool = True  # wait up to max_wait_s for company (the warm-up does not)
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)
    taken: int = 0  # records handed to batches so far
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Slice:
    job: Job
    start: int
    end: int


@dataclass
class BatchStats:
    """What the worker did, for /info, /metrics and the benchmark: batches run, records and requests in them."""

    batches: int = 0
    records: int = 0
    requests: int = 0  # answered
    largest_batch: int = 0
    sliced_requests: int = 0  # run over several batches (more characters than one batch holds)
    abandoned_batches: int = 0  # stopped part-way because every request in them had timed out
    # records per batch -> batches of that size (what /metrics turns into a histogram)
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class Abandoned(Exception):
    """Raised inside a forward batch: every request of the running batch has timed out."""


class Runner(Protocol):
    """Runs a batch elsewhere (model_process.ModelProcess): started by the worker thread, closed at stop."""

    def start(self) -> None: ...

    def predict_records(self, records: list[dict[str, Any]], batch_size: int | None, deadline: float) -> list[Any]: ...

    def close(self, timeout: float = 5.0) -> None: ...


class MicroBatcher:
    """One worker thread running one pipeline; `submit` is safe from any thread (the event loop's)."""

    def __init__(
        self,
        pipe: Pipeline,
        *,
        max_wait_s: float = 0.005,
        max_records: int = 64,
        max_chars: int | None = None,
        measure: Callable[[dict[str, Any]], int] = record_chars,
        enabled: bool = True,
        batch_size: int | None = None,
        name: str = "model",
        runner: Runner | None = None,
    ):
        self.pipe = pipe
        self.max_wait_s = max_wait_s
        self.max_records = max(1, max_records)
        self.max_chars = max_chars  # characters in one batch (at least one record)
        self.measure = measure
        self.enabled = enabled
        self.batch_size = batch_size  # the forward batch inside predict_records (None: the model's setting)
        self.name = name
        self.runner = runner  # None: the model runs in the worker thread, on `pipe`
        self.stats = BatchStats()
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running: list[Job] = []
        self._thread = threading.Thread(target=self._work, name=f"nlpcli-serve-{name}", daemon=True)
        # a long batch whose requests all timed out stops within one forward batch, not at its end for nobody
        guard_forward(pipe, lambda: max((j.deadline for j in self._running), default=float("inf")))

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
        stopped = not self._thread.is_alive()
        if self.runner is not None:  # a batch still running past the timeout fails with its process
            self.runner.close(timeout if stopped and timeout is not None else 1.0)
        return stopped

    def submit(
        self, records: list[dict[str, Any]], *, deadline: float = float("inf"), wait: bool = True
    ) -> Future[list[dict[str, Any]]]:
        """The future of these records' predictions (in order). Cancelling it drops a job not yet started
        from the queue; a started one stops at its next slice, or its batch once every job in it is late."""
        job = Job(records, [self.measure(r) for r in records], deadline, wait)
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
        if self.runner is not None:
            try:
                self.runner.start()
            except Exception as e:  # e.g. a task registered by the serving script alone, unknown to a new process
                log.warning("%s runs in the server's process: its own process did not load it (%s)", self.name, e)
                self.runner.close()
                self.runner = None
        while True:
            slices, stopping = self._collect()
            if slices:
                self._run(slices)
            if stopping:
                return

    def _usable(self, job: Job) -> bool:
        """Whether to run (more of) a job: not cancelled, not failed, and, once started, not past its deadline."""
        if job.taken == 0:
            return job.future.set_running_or_notify_cancel()
        if job.future.done():
            return False
        if time.monotonic() > job.deadline:  # its request got 504: the rest of its records are not run
            job.future.set_exception(TimeoutError("the request timed out"))
            return False
        return True

    def _collect(self) -> tuple[list[Slice], bool]:
        """The slices of the next batch, and whether to stop after it (stop: once the queue is empty)."""
        with self._cond:
            while True:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    return [], True
                first = self._jobs.popleft()
                if self._usable(first):
                    break
            slices: list[Slice] = []
            again: list[Job] = []  # jobs with records left: back to the end of the queue after this batch
            n = chars = 0

            def fits(job: Job, i: int) -> bool:  # record i of the job, in the batch so far
                return n < self.max_records and (self.max_chars is None or chars + job.chars[i] <= self.max_chars)

            def take(job: Job) -> None:
                nonlocal n, chars
                start = end = job.taken
                # a batch's first record always (a record is never split), then what fits
                while end < len(job.records) and ((not slices and end == start) or fits(job, end)):
                    n += 1
                    chars += job.chars[end]
                    end += 1
                if end > start:
                    slices.append(Slice(job, start, end))
                    job.taken = end
                if job.taken < len(job.records):
                    again.append(job)

            take(first)
            if self.enabled and first.wait and not again:
                deadline = time.monotonic() + self.max_wait_s
                while n < self.max_records and (self.max_chars is None or chars < self.max_chars):
                    if not self._jobs:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self._stopping:
                            break
                        self._cond.wait(remaining)
                        continue
                    job = self._jobs[0]
                    if not fits(job, job.taken):
                        break  # its next record starts the next batch
                    self._jobs.popleft()
                    if self._usable(job):
                        take(job)
                        if again:
                            break  # a sliced job filled the batch
            self._jobs.extend(again)
        return slices, False

    def _run(self, slices: list[Slice]) -> None:
        records = [r for s in slices for r in s.job.records[s.start : s.end]]
        self._running = [s.job for s in slices]
        try:
            if self.runner is not None:
                deadline = max(s.job.deadline for s in slices)
                outputs = self.runner.predict_records(records, self.batch_size, deadline)
            else:
                outputs = list(self.pipe.predict_records(records, self.batch_size))
        except Abandoned:
            self.stats.abandoned_batches += 1
            for s in slices:
                if not s.job.future.done():
                    s.job.future.set_exception(TimeoutError("abandoned: the request timed out"))
            return
        except Exception as e:  # the records were validated; this is a fault of the model or the task code
            if len(slices) > 1:  # find the job that caused it: the others still get their answers
                for s in slices:
                    self._run([s])
            elif not slices[0].job.future.done():
                slices[0].job.future.set_exception(e)
            return
        finally:
            self._running = []
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.largest_batch = max(self.stats.largest_batch, len(records))
        self.stats.sizes[len(records)] += 1
        at = 0
        for s in slices:
            job = s.job
            job.outputs += outputs[at : at + s.end - s.start]
            at += s.end - s.start
            if len(job.outputs) == len(job.records) and not job.future.done():
                self.stats.requests += 1
                self.stats.sliced_requests += s.start > 0
                job.future.set_result(job.outputs)


def guard_forward(pipe: Pipeline, deadline: Callable[[], float]) -> None:
    """Raise Abandoned before a forward batch of `pipe` once `deadline()` (time.monotonic()) has passed: every
    request of the running batch has timed out.

    The pipeline's prediction loop has no hook between forward batches, so the one caller of a pipeline while
    serving (a batcher's thread, or a model's own process) wraps the instance's `forward`."""
    forward = pipe.forward

    def guarded(pieces: list[Any], **params: Any) -> list[Any]:
        if time.monotonic() > deadline():
            raise Abandoned
        return forward(pieces, **params)

    setattr(pipe, "forward", guarded)  # noqa: B010 (an instance attribute over the method)
