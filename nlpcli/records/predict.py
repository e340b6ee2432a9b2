"""Streaming prediction over records: an input's lines or a table's rows in, the records with their
predictions out, in input order; under torchrun the lines shared over the ranks (`RankedPredict`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..errors import DataError, NlpcliError
from .formats import TABLE_FORMATS
from .jsonl import parse_record
from .lines import CHUNK_BATCHES, STALL_LINE
from .sink import Predictions
from .source import LineParser, Source, read_records
from .stats import PredictStats
from .tables import Table, table_records
from .task import RecordTask

if TYPE_CHECKING:
    from ..device import DistContext


def predict(
    task: RecordTask,
    lines: Iterable[str],
    path: str,
    batch_size: int | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
    parse: LineParser = parse_record,
) -> Iterator[dict[str, Any]]:
    """Stream predictions: input lines (JSON Lines by default, see `parse`) in, records with predictions out,
    in order."""
    stats = stats if stats is not None else PredictStats()
    for out in task.predict_records(read_records(lines, path, task, skip_bad, stats, parse), batch_size):
        stats.written += 1
        yield out


def predict_source(
    task: RecordTask,
    source: Source,
    columns: dict[str, list[str]] | None = None,
    options: dict[str, str] | None = None,
    batch_size: int | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
) -> Predictions:
    """Predictions for every record of an opened input, as they come (see `sink.write`). A line input is
    shared over the ranks of a torchrun launch; `columns` and `options` are a table's (see `table_records`)."""
    stats = stats if stats is not None else PredictStats()
    if source.fmt in TABLE_FORMATS:
        table = source.table
        assert table is not None
        out = Predictions(
            predict_table(task, table, columns, batch_size, skip_bad, stats, options),
            source.path,
            stats,
            lambda: stats.read + stats.skipped,
            len(table.rows),
            table.columns,
            table.bom,
        )
        out.lists = frozenset(c for c in table.columns if any(isinstance(r.get(c), list) for r in table.rows[:100]))
        return out
    parse = source.parser(task)  # before any line is read: a task that reads no plain text says so first

    def records() -> Iterator[dict[str, Any]]:
        with predict_ranks(task) as ranks:
            yield from ranks.predict(source.lines, source.path, batch_size, skip_bad, stats, parse)

    reader = source.reader
    if reader is None:
        return Predictions(records(), source.path, stats, lambda: stats.read)
    return Predictions(records(), source.path, stats, lambda: reader.bytes_read, reader.size)


@contextmanager
def predict_ranks(task: RecordTask) -> Iterator[RankedPredict]:
    """`predict` over the ranks of a torchrun launch (a plain run is one rank, and `predict` itself).

    Under torchrun the process group is joined (gloo on CPU, nccl on CUDA) and left on the way out."""
    from ..device import init_distributed, shutdown_distributed

    dist = init_distributed(task.device)
    try:
        yield RankedPredict(task, dist)
    finally:
        shutdown_distributed()


@dataclass
class RankedPredict:
    """Prediction sharded over ranks: line i of the input goes to rank (i - 1) % N, and rank 0 gets every
    output back, in input order, to write one file. Every rank reads the same input file (a shared or copied
    path), so the line numbers of errors are the file's, and one bad line stops every rank with its message.

    The input is taken a round of lines at a time (`round_records` per rank), so memory stays bounded on
    every rank: after each round rank 0 gathers the round's outputs (over the process group, so no shared
    filesystem is needed for them) and yields them sorted by line."""

    pipe: RecordTask
    dist: DistContext
    round_records: int | None = None  # records per rank and round (default: as a prediction chunk)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def predict(
        self,
        lines: Iterable[str],
        path: str,
        batch_size: int | None = None,
        skip_bad: bool = False,
        stats: PredictStats | None = None,
        parse: LineParser = parse_record,
    ) -> Iterator[dict[str, Any]]:
        """As `predict`; with several ranks, outputs come out of rank 0 only (the others yield nothing), and
        `stats` hold the totals over all ranks on every rank."""
        stats = stats if stats is not None else PredictStats()
        if not self.dist.enabled:
            yield from predict(self.pipe, lines, path, batch_size, skip_bad, stats, parse)
            return
        import torch.distributed as tdist

        world, rank = self.dist.world_size, self.dist.rank
        per_rank = self.round_records or CHUNK_BATCHES * (batch_size or self.pipe.config.inference.batch_size)
        numbered = ((n, line) for n, line in enumerate(lines, 1) if line is not STALL_LINE)
        while block := list(islice(numbered, per_rank * world)):  # the same blocks on every rank: same file
            mine = [(n, line) for n, line in block if (n - 1) % world == rank]
            outputs, status = self._round(mine, path, batch_size, skip_bad, parse)
            statuses: list[Any] = [None] * world
            tdist.all_gather_object(statuses, status)
            errors = sorted(s["error"] for s in statuses if s["error"] is not None)
            if errors:
                raise NlpcliError(errors[0][1])  # the first bad line of the file, as a single process reports
            stats.read += sum(s["read"] for s in statuses)
            stats.skipped += sum(s["skipped"] for s in statuses)
            reasons = sorted(r for s in statuses for r in s["reasons"])
            stats.reasons.extend(text for _, text in reasons[: 5 - len(stats.reasons)])
            gathered: list[Any] = [None] * world if self.is_main else []
            tdist.gather_object(outputs, gathered if self.is_main else None, dst=0)
            if self.is_main:
                for _, record in sorted((pair for part in gathered for pair in part), key=lambda p: p[0]):
                    stats.written += 1
                    yield record
            else:
                stats.written += sum(s["read"] for s in statuses)

    def _round(
        self, mine: list[tuple[int, str]], path: str, batch_size: int | None, skip_bad: bool, parse: LineParser
    ) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]:
        """This rank's share of a round: (line, output) pairs, and what the other ranks need to know (records
        read, skipped with their reasons, or the error that stops every rank: (line, message))."""
        records: list[tuple[int, dict[str, Any]]] = []
        status: dict[str, Any] = {"read": 0, "skipped": 0, "reasons": [], "error": None}
        try:
            for n, line in mine:
                if not line.strip():
                    continue
                try:
                    records.append((n, parse(line, path, n, self.pipe)))
                except DataError as err:
                    if not skip_bad:
                        raise
                    status["skipped"] += 1
                    status["reasons"].append((n, str(err)))
            outputs = list(self.pipe.predict_records([r for _, r in records], batch_size))
        except NlpcliError as e:  # caught, so that every rank stops together instead of waiting on this one
            status["error"] = (getattr(e, "line", None) or 0, str(e))
            return [], status
        except Exception as e:
            text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
            status["error"] = (0, f"internal error on rank {self.dist.rank}: {text}")
            return [], status
        status["read"] = len(records)
        status["reasons"] = status["reasons"][:5]
        return [(n, out) for (n, _), out in zip(records, outputs)], status


def predict_table(
    task: RecordTask,
    table: Table,
    columns: dict[str, list[str]] | None = None,
    batch_size: int | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
    options: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each good row of a table with the prediction columns added (its own cells as read, every column kept;
    a prediction column of the same name as an input column replaces it), in order. See `table_records`."""
    stats = stats if stats is not None else PredictStats()
    fed: deque[int] = deque()

    def records() -> Iterator[dict[str, Any]]:
        for index, record in table_records(task, table, columns, skip_bad, stats, options):
            fed.append(index)
            yield record

    for out in task.predict_records(records(), batch_size):
        row = table.rows[fed.popleft()]
        stats.written += 1
        yield row | {k: v for k, v in out.items() if k not in task.table_fields}
