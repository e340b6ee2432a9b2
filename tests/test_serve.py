"""`nlpcli serve`: a real server in a subprocess, spoken to over HTTP with urllib, http.client and raw
sockets; the application itself through Starlette's TestClient where no process is needed.

Answers equal `nlpcli predict`'s on the same records (one record, a list, concurrent clients whose records
are micro-batched together, two worker processes); bad requests get their 4xx with the CLI's one-line
message and leave the server up; SIGTERM answers the request in flight and exits 0, within its drain bound.
No client stalls the server: records and requests over their character caps get 413, a request that timed
out leaves the queue (and its running batch stops), slow or short requests are timed out and closed.
Other hosts' names (DNS rebinding) get 421, a missing API key 401; /ready waits for the warm-up; /info
shows no path of the serving machine.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from util import ROOT, SAMPLES, cli_env, run_cli

import nlpcli
from nlpcli.serve import ServeSettings, create_app, load_models
from nlpcli.serve.batcher import Abandoned, MicroBatcher
from nlpcli.serve.guard import HostCheck, default_hosts
from nlpcli.serve.model_process import ModelProcess, ModelProcessError

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

    def __init__(self, tmp: Path, *args: Any, group: bool = False):
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nlpcli.cli", "serve", "--port", "0", "--log-level", "warning", *map(str, args)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(),
                cwd=ROOT,
                start_new_session=group,  # a process group of its own, to be signalled as a terminal does
            )
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
            found = re.search(r"at (http://127\.0\.0\.1:\d+) ", self.log.read_text())
            if found:
                try:  # listening, then warmed up
                    if get(found.group(1) + "/health")[0] == 200 and get(found.group(1) + "/ready")[0] == 200:
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


def wait_in_flight(url: str, route: str = "/predict", timeout: float = 120) -> None:
    """Until the server's /metrics counts one request of `route` received and not answered (no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while f'nlpcli_requests_in_flight{{route="{route}"}} 1' not in (text := _metrics(url)):
        assert time.monotonic() < deadline, text
        time.sleep(0.02)


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
        assert info["runs_in"] == "server process"  # the default
        status, docs = get(f"{srv.url}/openapi.json")
        assert status == 200 and {"/predict", "/predict/ner", "/ready", "/metrics"} <= set(docs["paths"])
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
    told = [line for line in cli.stderr.splitlines() if not line.startswith("precision auto: ")]  # test_precision
    assert cli.returncode == 1 and told == ["error: -:2: missing string field 'text'"], cli.stderr
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
    wait_in_flight(srv.url)
    srv.proc.send_signal(signal.SIGTERM)
    client.join(60)
    assert answer == [(200, expected["ner"][1])]
    assert srv.proc.wait(60) == 0, srv.log.read_text()
    assert "Traceback" not in srv.log.read_text()


def test_a_request_past_the_timeout_gets_504_and_is_dropped(models, records, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"], "--max-wait-ms", 2000, "--timeout", 0.3)
    try:
        batches = get(f"{srv.url}/info/ner")[1]["batches"]
        before, abandoned = batches["requests"], batches["abandoned_batches"]  # the warm-up's
        status, body = post_json(f"{srv.url}/predict", records["ner"][0])
        assert status == 504 and body["detail"] == "no answer within 0.3 s (--timeout)"
        # The model thread took it and waits 2 s for company, then stops the batch at its first forward (all
        # in it are late); a machine too busy to take it within 0.3 s dropped it from the queue instead, and
        # the wait below runs to its end. Either way it is never answered.
        deadline = time.monotonic() + 30
        while batches["abandoned_batches"] == abandoned and time.monotonic() < deadline:
            time.sleep(0.05)
            batches = get(f"{srv.url}/info/ner")[1]["batches"]
        assert batches["requests"] == before
    finally:
        assert srv.stop() == 0, srv.log.read_text()


# --- the application, in process (TestClient) ------------------------------------------------------
def client(models: dict[str, Path], **settings: Any) -> TestClient:
    """The application for the ner model (TestClient sends Host: testserver)."""
    settings.setdefault("allowed_hosts", ["testserver"])
    return TestClient(create_app(load_models([str(models["ner"])]), ServeSettings(**settings)))


def wait_ready(c: TestClient) -> None:
    deadline = time.monotonic() + 120
    while c.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "not warmed up"
        time.sleep(0.05)


def test_records_and_requests_over_their_character_caps_get_413_naming_the_cap(models):
    with client(models, max_record_chars=100, max_request_chars=250) as c:
        r = c.post("/predict", json={"text": "张" * 101})
        assert r.status_code == 413
        assert r.json()["detail"] == (
            "request:1: 105 characters in one record; at most 100 (--max-record-chars): split the text"
        )  # every string counts, the key too: 101 + len("text")
        r = c.post("/predict", json=[{"text": "好"}, {"id": "x" * 200, "text": "好"}])
        assert r.status_code == 413 and "at most 100 (--max-record-chars)" in r.json()["detail"]
        r = c.post("/predict", json=[{"text": "张" * 90}] * 3)
        assert r.status_code == 413
        assert r.json()["detail"].startswith("282 characters in one request; at most 250 (--max-request-chars)")
        assert c.post("/predict", json=[{"text": "张" * 90}] * 2).status_code == 200


def test_only_the_bound_host_names_are_answered(models):
    with client(models, allowed_hosts=[*default_hosts("127.0.0.1"), "nlp.internal"]) as c:
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "nlp.internal"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host
        # A page whose name was rebound to 127.0.0.1 sends its own name.
        for host in ("attacker.example:8000", "localhost.attacker.example", "10.0.0.7", ""):
            r = c.get("/info", headers={"Host": host})
            assert r.status_code == 421 and "--allowed-host" in r.json()["detail"], host
        assert c.post("/predict", json={"text": "好"}, headers={"Host": "evil.example"}).status_code == 421
    wildcard = HostCheck(default_hosts("0.0.0.0"))  # any address typed by number, no name but localhost
    assert wildcard.allows("192.168.1.20:8000") and wildcard.allows("localhost")
    assert not wildcard.allows("attacker.example")
    assert HostCheck(default_hosts("10.1.2.3")).allows("10.1.2.3:80")
    assert not HostCheck(default_hosts("10.1.2.3")).allows("localhost")
    assert HostCheck(["*"]).allows("anything.example")


def test_info_shows_no_path_command_or_working_directory(models):
    card = (models["ner"] / "best" / "README.md").read_text(encoding="utf-8")
    assert str(models["ner"]) in card or os.getcwd() in card  # the card on disk records where it was trained
    with client(models) as c:
        text = c.get("/info").text
    info = json.loads(text)["models"]["ner"]
    for secret in (str(models["ner"]), os.getcwd(), str(ROOT), str(SAMPLES)):
        assert secret not in text, secret
    assert info["model"] == "ner" and info["checkpoint"] == "best"
    assert "## Metrics on dev" in info["model_card"] and "## Training data" in info["model_card"]
    assert "working directory" not in info["model_card"] and "from step" not in info["model_card"]
    assert info["config"]["inference"]["threshold"] == 0.5


def test_ready_only_after_the_warm_up_and_health_before(models, monkeypatch):
    import threading as th

    gate, entered, seen = th.Event(), th.Event(), []
    pipes = load_models([str(models["ner"])])
    pipe = pipes["ner"].pipe
    forward = pipe.forward

    def slow_forward(pieces: list[Any], **params: Any) -> list[Any]:
        seen.append(pieces)
        entered.set()
        assert gate.wait(60)
        return forward(pieces, **params)

    monkeypatch.setattr(pipe, "forward", slow_forward)
    # in this process: the patched forward is what runs
    with TestClient(create_app(pipes, ServeSettings(allowed_hosts=None, model_process=False))) as c:
        assert entered.wait(60)  # the warm-up's first forward is running
        assert c.get("/health").status_code == 200  # alive
        r = c.get("/ready")
        assert r.status_code == 503 and r.json() == {"status": "warming up"}
        assert "nlpcli_ready 0" in c.get("/metrics").text
        gate.set()
        wait_ready(c)
        assert "nlpcli_ready 1" in c.get("/metrics").text
    assert seen and seen[0][0].text == "张伟在北京的华为公司担任工程师。"  # the task's example record


def test_api_key_is_required_on_every_route_but_the_health_checks(models):
    with client(models, api_key="s3cret") as c:
        for path in ("/health", "/ready"):
            assert c.get(path).status_code in (200, 503), path
        for path in ("/info", "/info/ner", "/metrics", "/openapi.json", "/docs"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert c.post("/predict", json={"text": "好"}).status_code == 401
        wrong = c.post("/predict", json={"text": "好"}, headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401 and wrong.json()["detail"].startswith("a wrong API key")
        ok = c.post("/predict", json={"text": "好"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["text"] == "好"
        assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/info").status_code == 401
        assert c.get("/info", headers={"Authorization": "Bearer s3cret"}).json()["settings"]["api_key"] is True


def test_metrics_count_requests_errors_latency_and_batch_sizes(models):
    with client(models, max_record_chars=100) as c:
        wait_ready(c)
        c.post("/predict", json={"text": "好"})
        c.post("/predict", json=[{"text": "好"}, {"text": "北京"}])
        c.post("/predict", json={"text": "长" * 200})
        c.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert 'nlpcli_requests_total{route="/predict",status="200"} 2' in lines
    assert 'nlpcli_request_errors_total{route="/predict",status="413"} 1' in lines
    assert 'nlpcli_request_errors_total{route="/predict",status="400"} 1' in lines
    assert 'nlpcli_request_duration_seconds_bucket{route="/predict",le="+Inf"} 4' in lines
    assert 'nlpcli_request_duration_seconds_count{route="/predict"} 4' in lines
    # batches of 1 (the warm-up and the first request) and of 2 records
    assert 'nlpcli_batch_records_bucket{model="ner",le="1"} 2' in lines
    assert 'nlpcli_batch_records_bucket{model="ner",le="2"} 3' in lines
    assert 'nlpcli_batch_records_sum{model="ner"} 4' in lines
    assert "# TYPE nlpcli_request_duration_seconds histogram" in lines


def test_openapi_types_each_task_from_its_fields_and_a_typed_client_round_trips(models):
    pipes = load_models([f"ner={models['ner']}", f"qa={models['qa']}"])
    with TestClient(create_app(pipes, ServeSettings())) as c:
        doc = c.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        qa = schemas["QaRecord"]
        assert qa["properties"]["question"]["type"] == "string" and qa["properties"]["passages"]["type"] == "array"
        assert set(qa["required"]) == {"question", "passages"}
        for name in ("ner", "qa"):
            post = doc["paths"][f"/predict/{name}"]["post"]
            body = post["requestBody"]["content"]["application/json"]
            ref = body["schema"]["anyOf"][0]["$ref"].rsplit("/", 1)[1]
            record = schemas[ref]
            assert record["properties"] and record.get("additionalProperties") is True
            answer = post["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"][0]["$ref"]
            prediction = schemas[answer.rsplit("/", 1)[1]]
            assert prediction != {} and prediction["properties"]
            # A client built from the document: its example, checked against its schema, then the answer.
            example = body["example"]
            assert set(record["required"]) <= set(example)
            for field, spec in record["properties"].items():
                assert isinstance(example[field], {"string": str, "array": list}[spec["type"]])
            r = c.post(f"/predict/{name}", json=example)
            assert r.status_code == 200
            got = r.json()
            assert all(got[f] == example[f] for f in prediction["properties"])
            assert set(got) > set(example)  # the predictions added
        assert "/predict/{name}" not in doc["paths"]  # the catch-all (404 for unknown names) is not documented


# --- the batcher: no work for nobody ------------------------------------------------------------------
class _Gated:
    """A pipeline stand-in whose forward waits for a gate: what is queued, batched and dropped is visible."""

    def __init__(self) -> None:
        import threading as th

        self.gate, self.entered, self.calls = th.Event(), th.Event(), []

    def forward(self, pieces: list[Any], **params: Any) -> list[Any]:
        self.calls.append(list(pieces))
        self.entered.set()
        assert self.gate.wait(60)
        return pieces

    def predict_records(self, records: list[dict[str, Any]], batch_size: int | None = None) -> Any:
        bs = batch_size or 1
        for s in range(0, len(records), bs):
            yield from self.forward(records[s : s + bs])


def test_a_timed_out_request_leaves_the_queue_and_a_batch_nobody_waits_for_stops():
    pipe = _Gated()
    # {"text": "x"} is 5 characters (the key counts); a batch holds 10
    b = MicroBatcher(pipe, max_wait_s=0, max_records=64, max_chars=10, batch_size=1)  # type: ignore[arg-type]
    b.start()
    try:
        first = b.submit([{"text": "a"}])
        assert pipe.entered.wait(60)  # running, blocked
        waiting = b.submit([{"text": "b"}])
        assert b.queued() == 1
        assert waiting.cancel() and b.queued() == 0  # gone from the queue at once, not skipped later
        pipe.gate.set()
        assert first.result(60) == [{"text": "a"}]
        # A batch whose every request is past its deadline stops before its next forward batch.
        pipe.gate.clear()
        pipe.entered.clear()
        late = b.submit([{"text": "1"}, {"text": "2"}], deadline=time.monotonic() - 1)
        with pytest.raises(TimeoutError):
            late.result(60)
        assert b.stats.abandoned_batches == 1 and not pipe.entered.is_set()  # no forward ran for it
    finally:
        pipe.gate.set()
        assert b.stop(60)


def test_a_large_request_takes_turns_with_the_requests_after_it():
    pipe = _Gated()
    b = MicroBatcher(pipe, max_wait_s=0, max_records=64, max_chars=10, batch_size=1)  # type: ignore[arg-type]
    b.start()
    try:
        blocker = b.submit([{"text": "0"}])
        assert pipe.entered.wait(60)
        large = b.submit([{"text": t} for t in "12345"])  # 25 characters: three batches
        small = b.submit([{"text": "s"}])
        pipe.gate.set()
        assert large.result(60) == [{"text": t} for t in "12345"] and small.result(60) == [{"text": "s"}]
        assert blocker.result(60) == [{"text": "0"}]
        order = [piece["text"] for call in pipe.calls for piece in call]
        assert order == ["0", "1", "2", "s", "3", "4", "5"]  # the small request ran after one slice, not five
        assert b.stats.batches == 4 and b.stats.sliced_requests == 1 and b.stats.largest_batch == 2
        # A sliced request that times out between slices runs no more of them.
        pipe.gate.clear()
        pipe.entered.clear()
        pipe.calls.clear()
        b.batch_size = 2  # a slice is one forward call: the check between slices is what stops it
        slow = b.submit([{"text": t} for t in "6789"], deadline=time.monotonic() + 0.5)
        assert pipe.entered.wait(60)
        while time.monotonic() <= slow_deadline(b):  # wait until it is late (the first slice is held)
            time.sleep(0.05)
        pipe.gate.set()
        with pytest.raises(TimeoutError):
            slow.result(60)
        assert pipe.calls == [[{"text": "6"}, {"text": "7"}]]
    finally:
        pipe.gate.set()
        assert b.stop(60)


def slow_deadline(b: MicroBatcher) -> float:
    return max((j.deadline for j in b._running), default=0.0)


# --- the model in its own process ------------------------------------------------------------------
def test_the_model_process_answers_as_the_model_and_a_dead_one_is_replaced(models, records):
    pipe = nlpcli.load(models["ner"]).pipeline
    want = list(pipe.predict_records(records["ner"], None))
    proc = ModelProcess(str(models["ner"]), threads=1, name="ner")
    proc.start()
    try:
        assert proc.predict_records(records["ner"], None, float("inf")) == want
        with pytest.raises(Abandoned):  # every request of the batch already late: it stops before a forward
            proc.predict_records(records["ner"], None, time.monotonic() - 1)
        with pytest.raises(KeyError) as bad:  # the task's own exception, with where it came from
            proc.predict_records([{"txt": "no text field"}], None, float("inf"))
        assert "in the model's process" in "".join(bad.value.__notes__)
        # killed (out of memory, say): the batch it held fails, the next one starts a new process
        pid = proc.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        proc._proc.wait(60)  # dead before the next batch is sent
        with pytest.raises(ModelProcessError, match="exited"):
            proc.predict_records(records["ner"][:2], None, float("inf"))
        assert proc.predict_records(records["ner"], None, float("inf")) == want
        assert proc.starts == 2 and proc.pid != pid
    finally:
        proc.close()
    assert proc.pid is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_the_model_process_leaves_with_a_killed_server(models, records, expected, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"], "--model-process")
    children = _children(srv.proc.pid)
    assert len(children) == 1  # the model's process
    assert post_json(f"{srv.url}/predict", records["ner"][0]) == (200, expected["ner"][0])
    srv.proc.kill()  # no drain, no clean-up: the model process sees its socket close
    srv.proc.wait(60)
    deadline = time.monotonic() + 60
    while _alive(children[0]):
        assert time.monotonic() < deadline, "the model process outlived the server"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_ctrl_c_to_the_whole_group_still_answers_the_request_in_flight(models, records, expected, tmp_path):
    # Ctrl-C in a terminal signals every process of the group, the model's too; its batch is sent to it
    # during the drain (the batch waits 3 s for company), so a model process that died of it would fail it.
    srv = Server(tmp_path, "--model", models["ner"], "--model-process", "--max-wait-ms", 3000, group=True)
    answer: list[Any] = []
    client = threading.Thread(target=lambda: answer.append(post_json(f"{srv.url}/predict", records["ner"][1])))
    client.start()
    wait_in_flight(srv.url)
    os.killpg(srv.proc.pid, signal.SIGINT)
    client.join(60)
    assert answer == [(200, expected["ner"][1])]
    assert srv.proc.wait(60) == 0, srv.log.read_text()


def test_the_server_answers_as_predict_with_the_model_in_its_own_process(models, records, expected, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"], "--model-process")
    try:
        status, got = post_json(f"{srv.url}/predict", records["ner"][:5])
        assert status == 200 and got == expected["ner"][:5]
        assert get(f"{srv.url}/info/ner")[1]["runs_in"] == "own process"
    finally:
        assert srv.stop() == 0, srv.log.read_text()


# --- a real server: slow clients, workers, the drain bound --------------------------------------------
def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _read_until_closed(sock: socket.socket, drip: bytes | None = None, limit_s: float = 60) -> bytes:
    """What the server sends until it closes the connection; with `drip`, one more header line sent each
    time the server stays quiet for 0.2 s (a slowloris client)."""
    data, deadline = b"", time.monotonic() + limit_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if not readable:
            if drip is not None:
                try:
                    sock.sendall(drip)
                except OSError:
                    return data
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {limit_s} s; got {data!r}")


def test_slow_headers_and_short_bodies_are_timed_out_while_health_answers(models, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"], "--read-timeout", 1)
    try:
        host, port = _host_port(srv.url)
        slow = []
        for _ in range(4):
            s = socket.create_connection((host, port), timeout=30)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode())
            slow.append(s)
        short = socket.create_connection((host, port), timeout=30)
        short.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        assert get(f"{srv.url}/health")[0] == 200  # answered while they hang
        for s in slow:
            answer = _read_until_closed(s, drip=b"X-Slow: 1\r\n")
            assert answer.startswith(b"HTTP/1.1 408"), answer
            s.close()
        answer = _read_until_closed(short)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        short.close()
        assert get(f"{srv.url}/health")[0] == 200
        assert post_json(f"{srv.url}/predict", {"text": "好"})[0] == 200  # and predictions still come
    finally:
        assert srv.stop() == 0, srv.log.read_text()


def test_a_kept_alive_connection_gets_a_read_deadline_per_request_not_between_them(models, tmp_path):
    # Each request's deadline ends with its body: an answered connection idle past --read-timeout is still
    # open (uvicorn's keep-alive timeout, 5 s, closes idle ones), and the next request there gets a deadline.
    srv = Server(tmp_path, "--model", models["ner"], "--read-timeout", 1)
    try:
        host, port = _host_port(srv.url)
        conn = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/predict", json.dumps({"text": "好"}), headers)
        assert conn.getresponse().read() and conn.sock is not None
        first = conn.sock
        time.sleep(1.5)  # past the read deadline, within the keep-alive timeout
        conn.request("POST", "/predict", json.dumps({"text": "好"}), headers)
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read()
        assert conn.sock is first  # the same connection answered both
        first.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\n".encode())  # a third, never finished
        assert _read_until_closed(first).startswith(b"HTTP/1.1 408")
        conn.close()
    finally:
        assert srv.stop() == 0, srv.log.read_text()


def test_past_max_connections_the_oldest_slow_connection_makes_room(models, tmp_path):
    # Read timeout far away: only the connection cap can free a place (uvicorn answers 503 at 20 connections).
    srv = Server(tmp_path, "--model", models["ner"], "--read-timeout", 600, "--max-connections", 20)
    try:
        host, port = _host_port(srv.url)
        slow = []
        for _ in range(30):
            s = socket.create_connection((host, port), timeout=30)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode())
            slow.append(s)
        assert get(f"{srv.url}/health")[0] == 200  # not 503: the oldest slow sockets were closed
        closed = 0
        for s in slow[:10]:  # the first ones made room for the later ones
            closed += _read_until_closed(s) == b""
            s.close()
        assert closed == 10
        for s in slow[10:]:
            s.close()
    finally:
        assert srv.stop() == 0, srv.log.read_text()


def test_two_workers_give_the_same_answers_as_predict(models, records, expected, tmp_path):
    srv = Server(tmp_path, "--model", models["ner"], "--workers", 2)
    try:
        children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children")
        if children.exists():
            assert len(children.read_text().split()) >= 2
        for _ in range(2):  # a new connection per request: the kernel spreads them over the workers
            for record, want in zip(records["ner"], expected["ner"]):
                assert post_json(f"{srv.url}/predict", record) == (200, want)
    finally:
        assert srv.stop() == 0, srv.log.read_text()


def test_sigterm_exits_0_within_the_drain_bound_with_a_request_still_in_flight(models, records, tmp_path):
    # The request's batch waits ten minutes for company: without a drain bound the exit waits for it.
    srv = Server(tmp_path, "--model", models["ner"], "--max-wait-ms", 600_000, "--drain-timeout", 3)
    answer: list[Any] = []
    client = threading.Thread(target=lambda: answer.append(_post_or_error(f"{srv.url}/predict", records["ner"][1])))
    client.start()
    wait_in_flight(srv.url)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(60) == 0, srv.log.read_text()  # not the ten minutes
    client.join(60)
    assert answer and answer[0] != 200  # dropped at the bound (connection closed), not answered late


def _post_or_error(url: str, obj: Any) -> Any:
    try:
        return post_json(url, obj)[0]
    except urllib.error.HTTPError as e:  # uvicorn's own plain-text answer to a request cut at the bound
        return e.code
    except (OSError, ValueError) as e:
        return e


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        return resp.read().decode()
