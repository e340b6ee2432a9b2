"""`GET /metrics`: requests, errors and latency by route and status, and batch sizes, in Prometheus' text format.

Written by hand (the format is a few lines of text; no client library to install). Each worker process
(`--workers N`) counts its own requests: a scrape reads the worker that answered it.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batcher import MicroBatcher

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, routes: Iterable[str]):
        self.routes = frozenset(routes)  # any other path counts as "other" (label values stay few)
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency: dict[str, list[int]] = {}  # route -> count per bucket (non-cumulative), +Inf last
        self.latency_sum: dict[str, float] = collections.defaultdict(float)
        self.in_flight: collections.Counter[str] = collections.Counter()

    def route(self, path: str) -> str:
        return path if path in self.routes else "other"

    def started(self, path: str) -> None:
        self.in_flight[self.route(path)] += 1

    def observe(self, path: str, status: int, seconds: float) -> None:
        """A request answered (`started` before): its status and how long it took."""
        route = self.route(path)
        self.in_flight[route] -= 1
        self.requests[route, status] += 1
        counts = self.latency.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[route] += seconds

    def render(self, batchers: dict[str, MicroBatcher], ready: bool) -> str:
        out = [
            "# HELP nlpcli_ready Whether the models are warmed up and the server takes predictions.",
            "# TYPE nlpcli_ready gauge",
            f"nlpcli_ready {int(ready)}",
            "# HELP nlpcli_requests_total HTTP requests answered, by route and status.",
            "# TYPE nlpcli_requests_total counter",
        ]
        out += [f'nlpcli_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
        out += [
            "# HELP nlpcli_request_errors_total HTTP requests answered with a 4xx or 5xx status, by route and status.",
            "# TYPE nlpcli_request_errors_total counter",
        ]
        out += [
            f'nlpcli_request_errors_total{{route="{r}",status="{s}"}} {n}'
            for (r, s), n in sorted(self.requests.items())
            if s >= 400
        ]
        out += [
            "# HELP nlpcli_request_duration_seconds Time from the request's headers to the end of its answer.",
            "# TYPE nlpcli_request_duration_seconds histogram",
        ]
        for route, counts in sorted(self.latency.items()):
            out += _histogram("nlpcli_request_duration_seconds", f'route="{route}"', LATENCY_BUCKETS, counts)
            out.append(f'nlpcli_request_duration_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}')
        out += [
            "# HELP nlpcli_batch_records Records in one model call (micro-batch), by model.",
            "# TYPE nlpcli_batch_records histogram",
        ]
        for name, b in batchers.items():
            counts = [0] * (len(BATCH_BUCKETS) + 1)
            for size, n in b.stats.sizes.items():
                counts[bisect.bisect_left(BATCH_BUCKETS, size)] += n
            out += _histogram("nlpcli_batch_records", f'model="{name}"', BATCH_BUCKETS, counts)
            out.append(f'nlpcli_batch_records_sum{{model="{name}"}} {b.stats.records}')
        out += [
            "# HELP nlpcli_requests_in_flight Requests received and not yet answered, by route.",
            "# TYPE nlpcli_requests_in_flight gauge",
        ]
        out += [f'nlpcli_requests_in_flight{{route="{r}"}} {n}' for r, n in sorted(self.in_flight.items())]
        out += [
            "# HELP nlpcli_queued_requests Requests waiting for their model.",
            "# TYPE nlpcli_queued_requests gauge",
        ]
        out += [f'nlpcli_queued_requests{{model="{name}"}} {b.queued()}' for name, b in batchers.items()]
        return "\n".join(out) + "\n"


def _histogram(name: str, label: str, bounds: Iterable[float], counts: list[int]) -> list[str]:
    lines, total = [], 0
    for bound, n in zip([*bounds, "+Inf"], counts):
        total += n
        lines.append(f'{name}_bucket{{{label},le="{bound}"}} {total}')
    lines.append(f"{name}_count{{{label}}} {total}")
    return lines
