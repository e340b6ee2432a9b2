"""`nlpcli serve`: a real server in a subprocess, spoken to over HTTP with urllib and http.client.

Answers equal `nlpcli predict`'s on the same records (one record, a list, concurrent clients whose records
are micro-batched together); bad requests get their 4xx with the CLI's one-line message and leave the server
up; SIGTERM answers the request in flight and exits 0.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from util import ROOT, SAMPLES, cli_env, run_cli

import nlpcli

ONE = '{"text": "好"}'.encode()
LONG_TEXT = "记者从西安获悉，徐明将加盟百度公司。" * 20  # longer than a window: predicted in overlapping windows


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    for task in ("ner", "qa"):
        nlpcli.train(
            task,
            train=SAMPLES / task / "train.jsonl",
            output=root / task,
            config=ROOT / "configs" / "tiny" / f"{task}.toml",
            max_steps=30,
            epochs=100,
        )
    return {"ner": root / "ner", "qa": root / "qa"}


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict[str, Any]]]:
    ner = [{"id": i, "text": json.loads(line)["text"]} for i, line in enumerate(_lines(SAMPLES / "ner" / "dev.jsonl"))]
    ner += [{"text": LONG_TEXT}, {"text": ""}, {"text": "北京"}]
    qa = [json.loads(line) for line in _lines(SAMPLES / "qa" / "train.jsonl")]
    qa += [json.loads(line) for line in _lines(SAMPLES / "qa" / "input.jsonl")]
    return {"ner": ner, "qa": qa}


@pytest.fixture(scope="module")
def expected(models: dict[str, Path], records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """What `nlpcli predict` writes for the records, one line each."""
    out = {}
    for task, recs in records.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        proc = run_cli("predict", task, "--model", models[task], input=lines, check=True)
        out[task] = [json.loads(x) for x in proc.stdout.splitlines()]
        assert len(out[task]) == len(recs)
    return out


class Server:
    """`nlpcli serve ...` in a subprocess, on a port it picks (--port 0) and prints."""

    def __init__(self, tmp: Path, *args: Any):
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nlpcli.cli", "serve", "--port", "0", "--log-level", "warning", *map(str, args)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(),
                cwd=ROOT,
            )
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
            found = re.search(r"at (http://127\.0\.0\.1:\d+) ", self.log.read_text())
            if found:
                try:
                    status, body = get(found.group(1) + "/health")
                    if status == 200 and body["status"] == "ok":
                        return found.group(1)
                except OSError:
                    pass  # listening, not answering yet
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout} s: {self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    # A wait long enough that concurrent test clients share batches even on a loaded machine.
    srv = Server(
        tmp_path_factory.mktemp("server"),
        *("--model", f"ner={models['ner']}", "--model", f"qa={models['qa']}"),
        *("--max-body-bytes", 20_000, "--max-records", 64, "--max-wait-ms", 50),
    )
    yield srv
    assert srv.stop() == 0, srv.log.read_text()


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def request(
    url: str, body: bytes | None = None, content_type: str | None = "application/json", timeout: float = 60
) -> tuple[int, Any]:
    """(status, decoded JSON) of a GET (no body) or POST; 4xx and 5xx answers are returned, not raised."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, Any]:
    return request(url, timeout=5)


def post_json(url: str, obj: Any) -> tuple[int, Any]:
    return request(url, json.dumps(obj, ensure_ascii=False).encode("utf-8"))


@pytest.mark.parametrize("task", ["ner", "qa"])
def test_answers_equal_nlpcli_predict_one_record_and_a_list(server, records, expected, task):
    url = f"{server.url}/predict/{task}"
    status, many = post_json(url, records[task])
    assert status == 200 and many == expected[task]
    for record, want in zip(records[task], expected[task]):
        assert post_json(url, record) == (200, want)


def test_served_offsets_are_exclusive(server, records):
    """The server's offsets slice the text to what it names (`text[start:end]`), as the CLI's and the API's."""
    status, ner = post_json(f"{server.url}/predict/ner", records["ner"])
    entities = [(r["text"], e) for r in ner for e in r["entities"]]
    assert status == 200 and entities
    assert all(e["end"] <= len(text) and text[e["start"] : e["end"]] == e["text"] for text, e in entities)
    status, qa = post_json(f"{server.url}/predict/qa", records["qa"])
    answered = [r for r in qa if r["answer"]]
    assert status == 200 and answered
    for r in answered:
        passage = r["passages"][r["passage_index"]]
        passage = passage if isinstance(passage, str) else passage["passage"]
        assert r["end"] <= len(passage) and passage[r["start"] : r["end"]] == r["answer"]


def test_one_model_answers_on_predict_and_info_describes_it(models, records, expected, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"])
    try:
        assert post_json(f"{srv.url}/predict", records["ner"][0]) == (200, expected["ner"][0])
        status, info = get(f"{srv.url}/info/ner")  # named by its task
        assert status == 200 and info["task"] == "ner" and info["sampled"] is False
        assert info["metrics"]["f1"] >= 0 and info["config"]["inference"]["threshold"] == 0.5
        status, docs = get(f"{srv.url}/openapi.json")
        assert status == 200 and "/predict/{name}" in docs["paths"]
    finally:
        assert srv.stop() == 0, srv.log.read_text()


def test_bad_requests_get_their_4xx_and_the_server_stays_up(server, models):
    url = f"{server.url}/predict/ner"
    status, body = request(url, b'{"text": "abc"')
    assert status == 400 and body["detail"].startswith("request: malformed JSON")
    status, body = request(url, b"\xff\xfe{}")
    assert status == 400 and body["detail"] == "request: not UTF-8 text"
    # A missing field: the task's own message, as `nlpcli predict` prints it for the same line.
    cli = run_cli("predict", "ner", "--model", models["ner"], input='{"text": "好"}\n{"txt": "好"}\n')
    assert cli.returncode == 1 and cli.stderr == "error: -:2: missing string field 'text'\n"
    status, body = post_json(url, [{"text": "好"}, {"txt": "好"}])
    assert status == 422 and body["detail"] == "request:2: missing string field 'text'"  # the request, not stdin
    assert post_json(f"{server.url}/predict/qa", {"passages": ["张三。"]})[0] == 422
    assert post_json(url, [1, 2])[1]["detail"] == "request:1: expected a JSON object"
    assert post_json(url, "text")[0] == 422
    # Too large: a declared Content-Length, a chunked body (read no further than the limit), too many records.
    status, body = post_json(url, {"text": "长" * 10_000})
    assert status == 413 and "--max-body-bytes" in body["detail"]
    assert _chunked_post(url, [b'{"text": "', b"x" * 15_000, b"x" * 15_000, b'"}']) == 413
    status, body = post_json(url, [{"text": "好"}] * 65)
    assert status == 413 and body["detail"] == "65 records in one request; at most 64 (--max-records)"
    # Wrong content type, or none.
    status, body = request(url, ONE, content_type="text/plain")
    assert status == 415 and "application/json" in body["detail"]
    assert request(url, ONE, content_type=None)[0] == 415
    assert request(url, ONE, content_type="application/json; charset=utf-8")[0] == 200
    # Unknown model; /predict with two models served.
    assert post_json(f"{server.url}/predict/nope", {"text": "好"})[0] == 404
    status, body = post_json(f"{server.url}/predict", {"text": "好"})
    assert status == 400 and "/predict/NAME" in body["detail"]
    assert get(f"{server.url}/health") == (200, {"status": "ok", "models": {"ner": "ner", "qa": "qa"}})
    assert post_json(url, {"text": "好"})[0] == 200


def _chunked_post(url: str, parts: list[bytes]) -> int:
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        path = "/" + url.split("//")[1].split("/", 1)[1]
        conn.request("POST", path, body=iter(parts), headers={"Content-Type": "application/json"}, encode_chunked=True)
        return conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError):  # the server answered 413 and closed before all was sent
        return 413
    finally:
        conn.close()


def test_concurrent_clients_get_their_own_answers_batched_together(server, records, expected):
    n_clients, rounds = 12, 3
    answers: dict[tuple[int, int], Any] = {}
    start = threading.Barrier(n_clients)

    def client(c: int) -> None:
        start.wait()
        for r in range(rounds):
            task = ("ner", "qa")[(c + r) % 2]
            i = (c * rounds + r) % len(records[task])
            body = records[task][i] if c % 3 else records[task][i : i + 3]  # a record or a list of them
            answers[c, r] = (task, i, body, post_json(f"{server.url}/predict/{task}", body))

    before = get(f"{server.url}/info")[1]["models"]
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == n_clients * rounds
    for task, i, body, (status, got) in answers.values():
        want = expected[task][i] if isinstance(body, dict) else expected[task][i : i + 3]
        assert status == 200 and got == want
    after = get(f"{server.url}/info")[1]["models"]
    requests = sum(after[t]["batches"]["requests"] - before[t]["batches"]["requests"] for t in after)
    batches = sum(after[t]["batches"]["batches"] - before[t]["batches"]["batches"] for t in after)
    assert requests == n_clients * rounds and batches < requests  # several requests shared a model call


def test_sigterm_answers_the_request_in_flight_and_exits_0(models, records, expected, tmp_path):
    # A batch waits 3 s for company: the request is surely in flight when SIGTERM comes.
    srv = Server(tmp_path, "--model", models["ner"], "--max-wait-ms", 3000)
    answer: list[Any] = []
    client = threading.Thread(target=lambda: answer.append(post_json(f"{srv.url}/predict", records["ner"][1])))
    client.start()
    time.sleep(1.0)
    srv.proc.send_signal(signal.SIGTERM)
    client.join(60)
    assert answer == [(200, expected["ner"][1])]
    assert srv.proc.wait(60) == 0, srv.log.read_text()
    assert "Traceback" not in srv.log.read_text()


def test_a_request_past_the_timeout_gets_504_and_is_dropped(models, records, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"], "--max-wait-ms", 2000, "--timeout", 0.3)
    try:
        status, body = post_json(f"{srv.url}/predict", records["ner"][0])
        assert status == 504 and body["detail"] == "no answer within 0.3 s (--timeout)"
        time.sleep(2.0)
        batches = get(f"{srv.url}/info/ner")[1]["batches"]
        assert batches["requests"] == 0  # cancelled before the model ran it
    finally:
        assert srv.stop() == 0, srv.log.read_text()
