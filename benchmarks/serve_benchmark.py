"""Serving benchmark: `nlpcli serve` with and without micro-batching, with the model beside the event loop (the
default) or in a process of its own, and with two worker processes, at 1, 8 and 32 concurrent clients, against one
`nlpcli predict` process per request and against the Python API called in the benchmark's own process.

    python benchmarks/serve_benchmark.py                  # -> benchmarks/results/serve.json (about 5 minutes)
    python benchmarks/serve_benchmark.py --skip-train     # reuse the models under --work
    python benchmarks/serve_benchmark.py --result NAME    # -> benchmarks/results/NAME.json
    python benchmarks/serve_benchmark.py --tasks ner --ner-model ner-msra   # a trained ner model or a built name

Models: the default ner and qa models (the architecture a user serves), trained for --train-minutes each on a
slice of real data (CLUENER train, WebQA), so the speed is that of the real model; its scores are beside the
point here. Requests: one record each: a CLUENER test sentence (ner), a WebQA question with its evidence
passages (qa). Clients are one asyncio loop in this process speaking HTTP/1.1 with keep-alive (one connection
per client), each sending its next request as soon as the last is answered, for --seconds per level. Server,
API and `predict` processes run one torch thread (OMP_NUM_THREADS=1); everything shares this machine's cores
with the clients, so the figures are for a 2-core box doing all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from _common import DATA, ROOT, Run, nlpcli, write_jsonl

LEVELS = (1, 8, 32)
T = TypeVar("T")
REPEATS = 5  # timings of the in-process rates (the median is kept)
GROUP = 16  # records per model call that micro-batching formed at 32 clients (records_per_model_call)
MODES = {  # server options of each mode
    "micro_batching": ["--micro-batching"],  # the defaults: --max-wait-ms 0, the model in a thread of the server
    "no_micro_batching": ["--no-micro-batching"],  # one request per model call
    # The model in a process of its own: the event loop's Python and the model's no longer take turns on one GIL.
    "micro_batching_model_process": ["--micro-batching", "--model-process"],
    # One worker process per core (two here), each with one torch thread and its models in a thread of its own.
    "micro_batching_2_workers": ["--micro-batching", "--workers", "2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nlpcli-serve-bench"))
    parser.add_argument("--seconds", type=float, default=6.0, help="per concurrency level and mode")
    parser.add_argument("--train-minutes", type=float, default=1.0)
    parser.add_argument("--cli-runs", type=int, default=3, help="`nlpcli predict` processes timed per task")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--result", default="serve", help="result name: benchmarks/results/RESULT.json")
    parser.add_argument("--tasks", default="ner,qa", help="comma-separated: ner, qa")
    parser.add_argument("--ner-model", default="", help="serve this ner model (a directory or a built name)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # for the server and predict processes started from here
    import torch

    torch.set_num_threads(1)
    run = Run()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.work)
    tasks = [t for t in args.tasks.split(",") if t]
    models = {t: args.work / t for t in tasks}
    if args.ner_model:
        from nlpcli.models import resolve_model_dir

        models["ner"] = resolve_model_dir(args.ner_model)
    if not args.skip_train:
        for task in tasks:
            if task == "ner" and args.ner_model:
                continue
            train = data[task]["train"]
            nlpcli("train", task, "--train", train, "--output", args.work / task, "--overwrite",
                   "--time-budget", args.train_minutes, "--threads", 1)  # fmt: skip
    figures: dict[str, Any] = {
        "setup": {
            "models": "the default ner and qa models, trained "
            f"{args.train_minutes:g} min on {data['ner']['what']} / {data['qa']['what']}"
            + (f"; ner: {args.ner_model}" if args.ner_model else ""),
            "requests": "one record each: a CLUENER test sentence (ner); a WebQA question with its evidence "
            "passages (qa)",
            "clients": "one event loop (uvloop where installed) in the benchmark process, HTTP/1.1 keep-alive, a "
            "connection per client",
            "seconds_per_level": args.seconds,
            "server": "nlpcli serve --threads 1 (--max-wait-ms 0 --max-batch 64, the model in a thread of the "
            "server by default); micro_batching_model_process: --model-process; micro_batching_2_workers: "
            "--workers 2 (two processes, one torch thread each)",
            "torch_threads_everywhere": 1,
        },
        "tasks": {},
    }
    for task in tasks:
        records = data[task]["requests"]
        model = models[task]
        result: dict[str, Any] = {
            "request_chars": round(statistics.mean(len(json.dumps(r)) for r in records)),
            "encoder": json.loads(
                next(p for p in (model / "best" / "config.json", model / "config.json") if p.is_file()).read_text()
            )["config"]["encoder"]["name"],
        }
        result["in_process"] = in_process(model, records, args.seconds)
        result["predict_process_per_request"] = predict_processes(task, model, records[: args.cli_runs])
        for mode, flags in MODES.items():
            with server(model, flags) as (url, pid):
                # /info answers for the worker that takes the request: batch sizes only from a lone worker
                one = "--workers" not in flags
                result[mode] = {str(c): http_level(url, pid, records, c, args.seconds, one) for c in LEVELS}
                result[mode]["answers_equal_in_process"] = same_answers(url, model, records[:50])
        figures["tasks"][task] = result
        print(json.dumps({task: result}, indent=1), flush=True)
    run.finish(args.result, figures)


# --- data and models --------------------------------------------------------------------------
def prepare(work: Path) -> dict[str, dict[str, Any]]:
    """Training slices and request records from ../shared/data."""
    cluener = [json.loads(x) for x in (DATA / "cluener2020" / "train.json").open(encoding="utf-8")]
    write_jsonl(work / "ner_train.jsonl", cluener[:3000])
    ner_requests = [
        {"text": json.loads(x)["text"]} for x in (DATA / "cluener2020" / "test.json").open(encoding="utf-8")
    ]
    webqa = json.loads((DATA / "webqa" / "me_test.ann.json").read_text(encoding="utf-8"))
    rows = []
    for key in sorted(webqa):
        ev = list(webqa[key]["evidences"].values())
        rows.append(
            {
                "question": webqa[key]["question"],
                "passages": [{"passage": e["evidence"], "answer": e["answer"][0]} for e in ev],
            }
        )
    write_jsonl(work / "qa_train.jsonl", rows[:1500])
    qa_requests = [{"question": r["question"], "passages": [p["passage"] for p in r["passages"]]} for r in rows[-1000:]]
    return {
        "ner": {"train": work / "ner_train.jsonl", "requests": ner_requests[:1000], "what": "3,000 CLUENER sentences"},
        "qa": {"train": work / "qa_train.jsonl", "requests": qa_requests, "what": "1,500 WebQA questions"},
    }


# --- the three ways to get predictions ----------------------------------------------------------
def in_process(model: Path, records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """`nlpcli.load(model).pipeline.predict_checked([record])` (what `pipe(record)` does with a record), one record per
    call in a loop; all records in one call; and the records in calls of GROUP, in the order they come."""
    import nlpcli

    pipe = nlpcli.load(model, device="cpu").pipeline
    pipe.predict_checked(records[:1])  # warm up
    latencies, deadline = [], time.perf_counter() + seconds
    for record in itertools.cycle(records):
        t0 = time.perf_counter()
        pipe.predict_checked([record])
        latencies.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    # What a server's model thread can reach at 32 clients: micro-batching forms calls of about 16 records
    # that arrived together, of any lengths, where one big call sorts all of them by length (less padding).
    # Each rate is the median of REPEATS, taken in turns: one timing of a second or less moves by a fifth on a
    # shared machine, and the server's ratios are read against these.
    groups = [records[i : i + GROUP] for i in range(0, len(records), GROUP)]
    pipe.predict_checked(records)
    rates: dict[str, list[float]] = {"one": [], "groups": []}
    for _ in range(REPEATS):
        for kind, calls in (("one", [records]), ("groups", groups)):
            t0 = time.perf_counter()
            for call in calls:
                pipe.predict_checked(call)
            rates[kind].append(len(records) / (time.perf_counter() - t0))
    batched, grouped = statistics.median(rates["one"]), statistics.median(rates["groups"])
    return {
        "one_record_per_call": summary(latencies, sum(latencies)),
        "all_in_one_call_records_per_s": round(batched, 1),
        f"calls_of_{GROUP}_records_per_s": round(grouped, 1),
        "timings_records_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }


def predict_processes(task: str, model: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One `nlpcli predict` process per request (start, load, predict one line, exit)."""
    latencies = []
    for record in records:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "nlpcli.cli", "predict", task, "--model", str(model)],
            input=json.dumps(record, ensure_ascii=False),
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        latencies.append(time.perf_counter() - t0)
    return summary(latencies, sum(latencies))


@contextmanager
def server(model: Path, flags: list[str]) -> Iterator[tuple[str, int]]:
    """The server's URL and process id, once /ready says every model has warmed up (a model in a process of its
    own loads there after the server listens: timed before that, a level would time its loading)."""
    cmd = [sys.executable, "-m", "nlpcli.cli", "serve", "--model", str(model), "--port", "0", "--threads", "1"]
    log_path = model.parent / "serve.log"  # a file, not a pipe: a server that logs much never blocks on it
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*cmd, *flags, "--log-level", "warning"], cwd=ROOT, stderr=log)
    try:
        while not (found := re.search(r"at (http://[^ ]+) ", log_path.read_text())):
            if proc.poll() is not None:
                sys.exit(f"server did not start: {log_path.read_text()}")
            time.sleep(0.1)
        url = found.group(1)
        while True:
            try:
                urllib.request.urlopen(url + "/ready", timeout=5).read()  # 200 once every model has warmed up
                break
            except OSError:
                time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        if proc.wait(60) != 0:
            sys.exit(f"server exited with {proc.returncode}")


def http_level(
    url: str, pid: int, records: list[dict[str, Any]], clients: int, seconds: float, batches: bool = True
) -> dict[str, Any]:
    """`clients` concurrent keep-alive clients for `seconds`: requests/s, latency, mean records per model call
    (`batches`: read from /info, which only a single-worker server answers for all its requests), and the CPU
    time each part took per request."""
    before = _batches(url) if batches else None
    load = os.getloadavg()[0]
    cpu_before, clients_before = cpu_seconds(pid), _own_cpu_seconds()
    latencies, errors, elapsed = run_clients(_drive(url, records, clients, seconds))
    cpu_after, clients_after = cpu_seconds(pid), _own_cpu_seconds()
    out = summary(latencies, elapsed)
    out["errors"] = errors
    if latencies and cpu_after:
        used = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
        used["clients"] = clients_after - clients_before
        out["cpu_us_per_request"] = {k: round(v / len(latencies) * 1e6) for k, v in used.items()}
    if before is not None:
        after = _batches(url)
        calls = after["batches"] - before["batches"]
        out["records_per_model_call"] = round((after["records"] - before["records"]) / max(1, calls), 2)
    out["load_average_1min"] = round(load, 2)
    return out


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's main thread (its event loop; with --workers, the supervisor), of its
    other threads (the model's, with the batcher in it), and of its child processes (a model's own process, or
    the workers); read from /proc, so {} off Linux. A process that ended in between counts no more."""
    tasks = Path(f"/proc/{pid}/task")
    tick = os.sysconf("SC_CLK_TCK")
    out = {"server_main_thread": 0.0, "server_other_threads": 0.0, "child_processes": 0.0}
    try:
        children = [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
        for task in tasks.iterdir():
            out["server_main_thread" if task.name == str(pid) else "server_other_threads"] += _task_cpu(task) / tick
        for child in children:
            out["child_processes"] += sum(_task_cpu(t) for t in Path(f"/proc/{child}/task").iterdir()) / tick
    except OSError:  # not Linux, or a process gone
        return {}
    return out


def _task_cpu(task: Path) -> int:
    """utime + stime of a thread, in clock ticks (/proc/PID/task/TID/stat: after the name in parentheses)."""
    fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _own_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_clients(main: Coroutine[Any, Any, T]) -> T:
    """The clients on uvloop where it is installed (the serve extra brings it): they share the machine's cores
    with the server, and the less of them they take, the more the server's figures measure the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def same_answers(url: str, model: Path, records: list[dict[str, Any]]) -> bool:
    import nlpcli

    body = json.dumps(records, ensure_ascii=False).encode()
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return bool(json.loads(resp.read()) == nlpcli.load(model, device="cpu").pipeline.predict_checked(records))


def _batches(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "/info", timeout=30) as resp:
        info = json.loads(resp.read())
    return next(iter(info["models"].values()))["batches"]


async def _drive(
    url: str, records: list[dict[str, Any]], clients: int, seconds: float
) -> tuple[list[float], int, float]:
    host, port = url.removeprefix("http://").split(":")
    bodies = itertools.cycle([json.dumps(r, ensure_ascii=False).encode() for r in records])
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            await _post(reader, writer, next(bodies))  # warm-up, not counted
            await ready.wait()
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status = await _post(reader, writer, next(bodies))
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(0.5)  # connections open, warm-up requests answered
    start = time.perf_counter()
    deadline = start + seconds
    ready.set()
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - start


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> int:
    # Host: the address connected to (the server answers only the names it is bound to)
    host, port = writer.get_extra_info("peername")[:2]
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "requests_per_s": round(len(ms) / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": round(_quantile(ms, 0.50), 1),
        "p99_ms": round(_quantile(ms, 0.99), 1),
    }


def _quantile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))]


if __name__ == "__main__":
    main()
