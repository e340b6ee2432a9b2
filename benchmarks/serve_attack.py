"""Serving under attack: can one client stall `nlpcli serve` for everyone? (issue 25's "done when")

    python benchmarks/serve_attack.py                    # -> benchmarks/results/serve_attack.json (about 2 minutes)
    python benchmarks/serve_attack.py --model runs/ner   # a model of yours instead of a tiny one trained here

Three experiments, each against a fresh server on 127.0.0.1 (nothing leaves this machine), each ending by
itself:

1. **A greedy client.** One client sends the largest request the server allows (--max-request-chars of text
   in records of --max-record-chars; the server runs it a --max-batch-chars slice per model call, taking
   turns with the others) in a loop, while 8 clients send one CLUENER sentence each in a loop: their
   p50/p99 latency, against the same 8 clients alone. Then a request over the caps (case 3.34's 450 kB
   text): its status and how fast the 413 comes.
2. **Slowloris.** 300 sockets each send a request line, then one header line every 5 s, reconnecting when
   the server closes them; the server runs with 256 file descriptors (as case 3.33). Meanwhile /health is
   asked 4 times a second: how many answered, p99 and worst latency, and how many slow sockets the server
   closed (--read-timeout, default 10 s).
3. **SIGTERM.** With requests in flight whose batch waits longer than the drain bound (--max-wait-ms 60000,
   --drain-timeout 5): the exit status and seconds from the signal to the exit.

The server runs one torch thread (OMP_NUM_THREADS=1); clients share the machine's cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import CONFIGS, DATA, ROOT, Run, cpu_model, nlpcli
from serve_benchmark import _post, summary

SMALL_CLIENTS = 8
SLOW_SOCKETS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a trained ner model (default: a tiny one trained here)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nlpcli-serve-attack"))
    parser.add_argument("--seconds", type=float, default=10.0, help="per experiment")
    parser.add_argument(
        "--serve-args",
        default="",
        help='extra `nlpcli serve` options for the greedy-client run, e.g. "--max-batch-chars 1000"',
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    run = Run()
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = args.work / "ner"
        nlpcli("train", "ner", "--train", ROOT / "samples" / "ner" / "train.jsonl", "--output", model,
               "--config", CONFIGS / "tiny" / "ner.toml", "--max-steps", 30, "--overwrite", "--threads", 1)  # fmt: skip
    texts = sentences()
    figures: dict[str, Any] = {
        "setup": {
            "model": str(args.model) if args.model else "tiny ner (configs/tiny/ner.toml, 30 steps on samples/)",
            "server": "nlpcli serve --threads 1, default limits unless named",
            "cpu": cpu_model(),
            "small_requests": "one CLUENER test sentence each",
            "seconds_per_experiment": args.seconds,
            "greedy_client_serve_args": args.serve_args,
        }
    }
    figures["greedy_client"] = greedy_client(model, texts, args.seconds, args.work, args.serve_args.split())
    print(json.dumps(figures["greedy_client"], indent=1), flush=True)
    figures["slowloris"] = slowloris(model, args.seconds, args.work)
    print(json.dumps(figures["slowloris"], indent=1), flush=True)
    figures["sigterm"] = sigterm(model, texts, args.work)
    print(json.dumps(figures["sigterm"], indent=1), flush=True)
    run.finish("serve_attack", figures)


def sentences() -> list[str]:
    path = DATA / "cluener2020" / "test.json"
    if path.is_file():
        return [json.loads(x)["text"] for x in path.open(encoding="utf-8")][:500]
    return [json.loads(x)["text"] for x in (ROOT / "samples" / "ner" / "dev.jsonl").open(encoding="utf-8")]


@contextmanager
def server(model: Path, work: Path, *flags: Any, nofile: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`nlpcli serve` on a free loopback port, ready (warmed up); stopped with SIGTERM at the end."""
    cmd = [sys.executable, "-m", "nlpcli.cli", "serve", "--model", str(model), "--port", "0", "--threads", "1"]
    log_path = work / "serve.log"

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*cmd, *map(str, flags), "--log-level", "error"], cwd=ROOT, stderr=log, preexec_fn=limit
        )
    try:
        deadline = time.monotonic() + 300
        while not (found := re.search(r"at (http://127\.0\.0\.1:\d+) ", log_path.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"server did not start: {log_path.read_text()}")
            time.sleep(0.1)
        url = found.group(1)
        while _status(url + "/ready") != 200:
            if time.monotonic() > deadline:
                sys.exit("server not ready")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _status(url: str, timeout: float = 5) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# --- 1. a greedy client ---------------------------------------------------------------------------------
def greedy_client(model: Path, texts: list[str], seconds: float, work: Path, flags: list[str]) -> dict[str, Any]:
    record_chars, request_chars = 2_000, 50_000  # the server's defaults
    filler = "".join(texts)
    while len(filler) < record_chars:
        filler += filler
    big = [{"text": filler[: record_chars - len("text")]} for _ in range(request_chars // record_chars)]
    big_body = json.dumps(big, ensure_ascii=False).encode()
    over = json.dumps({"text": "张三在北京的华为公司工作。" * 11600}, ensure_ascii=False).encode()  # case 3.34
    small = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in texts]
    out: dict[str, Any] = {"largest_allowed_request": {"records": len(big), "chars": request_chars}}
    with server(model, work, *flags) as (url, _):
        out["alone"] = asyncio.run(_clients(url, small, None, seconds))
        out["with_greedy_client"] = asyncio.run(_clients(url, small, big_body, seconds))
        t0 = time.perf_counter()
        status = asyncio.run(_one(url, over))
        out["over_the_caps"] = {
            "body_bytes": len(over),
            "status": status,
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }
    p99 = out["with_greedy_client"]["small"]["p99_ms"]
    out["target_met"] = bool(p99 < 1000 and out["over_the_caps"]["status"] == 413)
    return out


async def _clients(url: str, small: list[bytes], big: bytes | None, seconds: float) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    latencies: dict[str, list[float]] = {"small": [], "greedy": []}
    statuses: dict[str, dict[int, int]] = {"small": {}, "greedy": {}}
    deadline = time.perf_counter() + seconds

    async def client(kind: str, bodies: list[bytes], offset: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status = await _post(reader, writer, bodies[i % len(bodies)])
                latencies[kind].append(time.perf_counter() - t0)
                statuses[kind][status] = statuses[kind].get(status, 0) + 1
                i += 1
        finally:
            writer.close()

    tasks = [client("small", small, c * 37) for c in range(SMALL_CLIENTS)]
    if big is not None:
        tasks.append(client("greedy", [big], 0))
    load = os.getloadavg()[0]
    await asyncio.gather(*tasks)
    out = {"small": summary(latencies["small"], seconds) | {"statuses": statuses["small"]}}
    if big is not None:
        out["greedy"] = summary(latencies["greedy"], seconds) | {"statuses": statuses["greedy"]}
    out["load_average_1min"] = round(load, 2)
    return out


async def _one(url: str, body: bytes) -> int:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        return await _post(reader, writer, body)
    finally:
        writer.close()


# --- 2. slowloris ---------------------------------------------------------------------------------------
def slowloris(model: Path, seconds: float, work: Path) -> dict[str, Any]:
    with server(model, work, nofile=256) as (url, _):
        result = asyncio.run(_slowloris(url, max(seconds, 15.0)))
        result["health_after"] = _status(url + "/health")
    result["server_file_descriptors"] = 256
    result["sockets"] = SLOW_SOCKETS
    result["target_met"] = bool(result["health"]["failed"] == 0 and result["health_after"] == 200)
    return result


async def _slowloris(url: str, seconds: float) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + seconds
    closed_by_server = 0
    opened = 0

    async def slow() -> None:
        nonlocal closed_by_server, opened
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.5)
                continue
            opened += 1
            try:
                writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())
                while time.monotonic() < deadline:
                    try:  # one header line every 5 s, unless the server closes first
                        data = await asyncio.wait_for(reader.read(4096), 5)
                        if not data:
                            closed_by_server += 1
                            break
                    except TimeoutError:
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()
            except OSError:
                closed_by_server += 1
            finally:
                writer.close()

    async def health() -> dict[str, Any]:
        latencies, failed = [], 0
        await asyncio.sleep(2)  # the slow sockets are open
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            status = await asyncio.to_thread(_status, url + "/health", 10)
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                failed += 1
            await asyncio.sleep(0.25)
        return summary(latencies, 1.0) | {"failed": failed, "worst_ms": round(max(latencies, default=0) * 1000, 1)}

    tasks = [asyncio.create_task(slow()) for _ in range(SLOW_SOCKETS)]
    checks = await health()
    await asyncio.gather(*tasks)
    checks.pop("requests_per_s")
    return {"health": checks, "slow_connections_opened": opened, "closed_by_server": closed_by_server}


# --- 3. SIGTERM -----------------------------------------------------------------------------------------
def sigterm(model: Path, texts: list[str], work: Path) -> dict[str, Any]:
    drain = 5.0
    with server(model, work, "--max-wait-ms", 60_000, "--drain-timeout", drain) as (url, proc):
        host, port = url.removeprefix("http://").split(":")
        clients = [
            subprocess.Popen(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    json.dumps({"text": t}, ensure_ascii=False),
                    f"{url}/predict",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for t in texts[:4]
        ]
        deadline = time.monotonic() + 60
        while 'nlpcli_requests_in_flight{route="/predict"} 4' not in _metrics(url):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            code = None
        exit_s = time.monotonic() - t0
        answers = [c.communicate(timeout=60)[0] for c in clients]
    return {
        "drain_timeout_s": drain,
        "requests_in_flight": len(clients),
        "their_batch_waits_s": 60,
        "exit_code": code,
        "exit_s": round(exit_s, 2),
        "client_statuses": answers,
        "target_met": bool(code == 0 and exit_s <= drain),
        "host": f"{host}:{port}",
    }


def _metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


if __name__ == "__main__":
    main()
