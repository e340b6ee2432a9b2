"""The HTTP application: POST /predict[/{name}], GET /health, /ready, /metrics, /info[/{name}], docs at /docs.

A prediction body is what `nlpcli predict` reads on one line (one record), or a list of such records; the
answer is what it writes (the record with its predictions, or the list). Bodies are read and checked here,
in the event loop (cheap); the model runs in each model's batcher thread (see batcher.py).

No client holds the model for long: a record and a request are capped in characters (413 naming the cap)
before they reach the model, a batch holds no more characters than one request may, and a request that
timed out leaves the queue. /health says the process answers (liveness); /ready says 200 only once every
model has run its example record (jieba's dictionary and the first forward loaded), 503 before.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ..errors import NlpcliError
from ..records.jsonl import dumps
from .batcher import MicroBatcher, record_chars
from .bodies import Problem, check_content_type, check_declared_size, parse_records, too_large
from .guard import ASGIApp, Guard, Receive, Scope, Send, send_json
from .metrics import Metrics
from .model_process import ModelProcess
from .models import ServedModel
from .schemas import body_schema, component_schemas, record_models

log = logging.getLogger("nlpcli.serve")

SETTINGS_ENV = "NLPCLI_SERVE_APP"  # how `--workers N` hands the models and settings to each worker process
STOP_JOIN_S = 1.0  # at shutdown, how long a batch still running may take before the process leaves it


@dataclass
class ServeSettings:
    """Micro-batching and the limits on a request (the `nlpcli serve` options of the same names)."""

    micro_batching: bool = True
    # Each model in a process of its own (model_process.py): the event loop and the model no longer take turns
    # on one GIL. Measured (docs/results.md, serving): faster at many clients on an idle machine, slower for a
    # lone client and on a machine whose other cores are busy; and the model's memory twice. So not the default.
    model_process: bool = False
    # How long the first record of a batch waits for company. 0: a batch is what queued while the model was
    # busy; measured (docs/results.md) as fast as waiting a few ms under load, and much faster for a lone client.
    max_wait_ms: float = 0.0
    max_batch: int = 64  # records in one micro-batch (a request is never split, so one may hold more)
    batch_size: int | None = None  # the model's forward batch inside a micro-batch (None: its inference setting)
    max_body_bytes: int = 1 << 20
    max_records: int = 256  # records in one request
    # Characters (every string of a record, counted) in one record, one request and one batch. A batch's
    # bounds how long a request waits behind others (a larger request runs a slice per batch, taking turns
    # with the requests that came after it); a record is never split, so it holds no more than a batch.
    max_record_chars: int = 2_000
    max_request_chars: int = 50_000
    max_batch_chars: int = 2_000
    timeout_s: float = 30.0  # a request not answered by then gets 504 (and its work is dropped)
    drain_s: float | None = None  # SIGTERM: exit within this (None: timeout_s + 5)
    read_timeout_s: float = 10.0  # from a connection's (or request's) first byte to its whole body
    max_connections: int = 1000  # open connections (and requests in flight) before new requests get 503
    allowed_hosts: list[str] | None = None  # Host names answered (None: any; `serve` sets the bound ones)
    api_key: str | None = field(default=None, repr=False)  # required on every route but /health and /ready

    @property
    def drain_bound_s(self) -> float:
        return self.drain_s if self.drain_s is not None else self.timeout_s + 5

    def shown(self) -> dict[str, Any]:
        """The settings as /info shows them: the key is not shown, only whether one is required."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"} | {"api_key": self.api_key is not None}


def example_record(model: ServedModel) -> dict[str, Any]:
    """The task's example input record: shown in the docs, and the warm-up's first forward."""
    return dict(type(model.pipe).example)


def json_bytes(content: Any) -> bytes:
    # the bytes `nlpcli predict` writes: strict JSON, Chinese as UTF-8 rather than \u escapes
    return dumps(content).encode("utf-8")


def json_response(content: Any, status: int = 200) -> Response:
    return Response(json_bytes(content), status_code=status, media_type="application/json")


def problem_response(status: int, message: str) -> Response:
    return json_response({"detail": message}, status)


def check_chars(records: list[dict[str, Any]], settings: ServeSettings) -> None:
    """413 naming the cap for a record or a request over it."""
    total = 0
    for i, record in enumerate(records, 1):
        n = record_chars(record)
        if n > settings.max_record_chars:
            raise Problem(
                413,
                f"request:{i}: {n} characters in one record; at most {settings.max_record_chars} "
                "(--max-record-chars): split the text",
            )
        total += n
    if total > settings.max_request_chars:
        raise Problem(
            413,
            f"{total} characters in one request; at most {settings.max_request_chars} (--max-request-chars): "
            "send fewer records per request",
        )


def create_app(models: dict[str, ServedModel], settings: ServeSettings | None = None) -> ServingApp:
    """The application for loaded models; their batcher threads start and stop with its lifespan."""
    settings = settings or ServeSettings()
    # a socket handed to a new process by number is POSIX's; on Windows the model runs in the server
    runners = model_processes(models) if settings.model_process and os.name == "posix" else {}
    batchers = {
        name: MicroBatcher(
            m.pipe,
            max_wait_s=settings.max_wait_ms / 1000,
            max_records=settings.max_batch,
            max_chars=max(settings.max_batch_chars, settings.max_record_chars),
            enabled=settings.micro_batching,
            batch_size=settings.batch_size,
            name=name,
            runner=runners.get(name),
        )
        for name, m in models.items()
    }
    warm = asyncio.Event()
    warm_ups: list[asyncio.Task[None]] = []

    async def warm_up() -> None:
        """Each model's example record through its batcher: jieba's dictionary, OpenCC and the first forward
        load now, not in a client's first request."""
        for name, model in models.items():
            example = example_record(model)
            try:
                model.pipe.validate_record(example, "example", 1)
                await asyncio.wrap_future(batchers[name].submit([example], wait=False))
            except Exception as e:  # e.g. an lm whose vocabulary lacks the example's words: it answers anyway
                log.warning("warm-up of %s skipped: %s", name, internal_message(e))
        warm.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for b in batchers.values():
            b.start()
        warm_ups.append(asyncio.create_task(warm_up()))
        yield
        # The server has stopped taking requests and answered (or, past the drain bound, dropped) those in
        # flight. A batch still running gets STOP_JOIN_S more: its thread does not hold the process.
        warm_ups[0].cancel()
        for b in batchers.values():
            if not await asyncio.to_thread(b.stop, STOP_JOIN_S):
                log.warning("a batch was still running at shutdown; left behind")

    tasks = ", ".join(sorted({m.task for m in models.values()}))
    sampled = sorted({m.task for m in models.values() if m.pipe.sampled})
    app = ServingApp(
        title="nlpcli",
        summary=f"Predictions of {', '.join(f'{n} ({m.task})' for n, m in models.items())}",
        description=(
            "POST a record, or a list of records, as `nlpcli predict` reads them (one JSON object per record); "
            "the answer is what `nlpcli predict` writes. Records of concurrent requests are micro-batched. "
            + (
                f"Deterministic tasks answer as `nlpcli predict` does (a score may differ in its last decimal, as "
                f"with another --batch-size: records batched with others are padded differently); "
                f"{', '.join(sampled)} sample, seeded per batch, so their replies may differ from one call to the next."
                if sampled
                else "Every model answers as `nlpcli predict` does (a score may differ in its last decimal, as with "
                "another --batch-size: records batched with others are padded differently)."
            )
        ),
        lifespan=lifespan,
    )

    # the model of POST /predict, where one is served (with several, a request names one)
    default = next(iter(models)) if len(models) == 1 else None

    async def predict(name: str | None, scope: Scope, receive: Receive) -> tuple[int, Any]:
        """POST /predict[/NAME]: the status and the JSON content of the answer (every error answered here)."""
        try:
            if name is None:
                raise Problem(400, f"several models are served; POST to /predict/NAME ({', '.join(models)})")
            model = models.get(name)
            if model is None:
                raise Problem(404, f"no model named {name!r}; serving: {', '.join(models)}")
            headers = dict(scope["headers"])  # ASGI names are lower case
            check_content_type(_latin1(headers.get(b"content-type")))
            body = await read_body(receive, _latin1(headers.get(b"content-length")), settings.max_body_bytes)
            records, single = parse_records(body, model.pipe, settings.max_records)
            if not records:
                return 200, []
            check_chars(records, settings)
            deadline = time.monotonic() + settings.timeout_s
            future = batchers[name].submit(records, deadline=deadline)
            try:
                outputs = await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout_s)
            except TimeoutError:  # cancelled with it: out of the queue, or its batch stops if nobody else waits
                raise Problem(504, f"no answer within {settings.timeout_s:g} s (--timeout)") from None
            except asyncio.CancelledError:  # past the drain bound of a SIGTERM: say so rather than a bare 500
                return 503, {"detail": "the server is shutting down (--drain-timeout)"}
        except Problem as p:
            return p.status, {"detail": p.message}
        except ClientDisconnect:  # the client went (or its body was not sent in time): nobody reads an answer
            return 408, {"detail": "the request's body did not arrive"}
        except NlpcliError as e:  # a record the task refused past its validate_record
            return 422, {"detail": str(e)}
        except Exception as e:  # a fault in the model or the task's code: this request fails, the server goes on
            log.exception("prediction failed")
            return 500, {"detail": internal_message(e)}
        return 200, outputs[0] if single else outputs

    async def predict_route(name: str | None, request: Request) -> Response:
        """What the declared routes answer (FastPredict answers the same requests before they get there)."""
        status, content = await predict(name, request.scope, request.receive)
        return json_response(content, status)

    errors_doc: dict[int | str, dict[str, Any]] = {
        400: {"description": "malformed JSON, or several models served and none named"},
        401: {"description": "no API key, or a wrong one (--api-key)"},
        404: {"description": "no model of that name"},
        408: {"description": "the body did not arrive within --read-timeout"},
        413: {"description": "over --max-body-bytes, --max-records, --max-record-chars or --max-request-chars"},
        415: {"description": "Content-Type is not application/json"},
        421: {"description": "a Host name the server is not bound to (--allowed-host)"},
        422: {"description": "a record the task cannot read (the message names it, as `nlpcli predict` does)"},
        503: {"description": "more than --max-connections connections or requests at once"},
        504: {"description": "not answered within --timeout"},
    }
    schemas: list[Any] = []

    def route_doc(name: str) -> dict[str, Any]:
        """The OpenAPI parts of a model's route: its request body and its answer, typed from its task."""
        example = example_record(models[name])
        request_model, response_model = record_models(name, models[name].pipe, example)
        schemas.extend([request_model, response_model])
        content: dict[str, Any] = {"schema": body_schema(request_model)}
        if example is not None:
            content["example"] = example
        answer = {"$ref": f"#/components/schemas/{response_model.__name__}"}
        ok = {
            "description": "the record with its predictions, or the list of them",
            "content": {"application/json": {"schema": {"anyOf": [answer, {"type": "array", "items": answer}]}}},
        }
        return {
            "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": content}}},
            "responses": {200: ok, **errors_doc},
        }

    async def predict_default(request: Request) -> Response:
        return await predict_route(default, request)

    if default is not None:
        app.post("/predict", summary=f"Predict with the one model ({models[default].task})", **route_doc(default))(
            predict_default
        )
    else:
        app.post("/predict", include_in_schema=False)(predict_default)

    for model_name in models:

        def named(name: str) -> Any:
            async def predict_model(request: Request) -> Response:
                return await predict_route(name, request)

            return predict_model

        app.post(
            f"/predict/{model_name}",
            summary=f"Predict with {model_name} ({models[model_name].task})",
            operation_id=f"predict_{model_name}",
            **route_doc(model_name),
        )(named(model_name))

    @app.post("/predict/{name}", include_in_schema=False)
    async def predict_unknown(name: str, request: Request) -> Response:
        return await predict_route(name, request)

    @app.get("/health", summary="Liveness: the process answers (and the models it serves)")
    async def health() -> Response:
        return json_response({"status": "ok", "models": {n: m.task for n, m in models.items()}})

    @app.get("/ready", summary="Readiness: 200 once every model has run its example record, 503 before")
    async def ready() -> Response:
        if not warm.is_set():
            return json_response({"status": "warming up"}, 503)
        return json_response({"status": "ready"})

    @app.get("/metrics", summary="Requests, errors, latency and batch sizes in Prometheus' text format")
    async def metrics_route() -> Response:
        text = metrics.render(batchers, warm.is_set())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/info", summary=f"Every model: task, metrics, model card, config ({tasks})")
    async def info() -> Response:
        return json_response({"models": {n: model_info(n) for n in models}, "settings": settings.shown()})

    @app.get("/info/{name}", summary="One model: task, metrics, model card, config")
    async def info_named(name: str) -> Response:
        if name not in models:
            return problem_response(404, f"no model named {name!r}; serving: {', '.join(models)}")
        return json_response(model_info(name))

    def model_info(name: str) -> dict[str, Any]:
        stats = asdict(batchers[name].stats)
        stats.pop("sizes")
        # where the model runs: its own process, or the server's (asked for, or its process could not load it)
        runs_in = "own process" if batchers[name].runner is not None else "server process"
        return models[name].info() | {"runs_in": runs_in, "batches": stats}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas(schemas))
            app.openapi_schema = doc
        return app.openapi_schema

    async def fast_answer(scope: Scope, receive: Receive) -> tuple[int, Any] | None:
        """POST /predict and /predict/NAME as their routes answer them; None for any other path."""
        path = scope["path"]
        if path == "/predict":
            return await predict(default, scope, receive)
        name = path.removeprefix("/predict/")
        if name != path and name and "/" not in name:
            return await predict(name, scope, receive)
        return None

    app.openapi = openapi  # type: ignore[method-assign]
    routes = ["/predict", "/health", "/ready", "/metrics", "/info", "/openapi.json", "/docs"]
    routes += [f"/{kind}/{n}" for n in models for kind in ("predict", "info")]
    metrics = Metrics(routes)
    fast = FastPredict(functools.partial(FastAPI.__call__, app), answer=fast_answer)
    app.front = Guard(fast, metrics=metrics, allowed_hosts=settings.allowed_hosts, api_key=settings.api_key)
    return app


def model_processes(models: dict[str, ServedModel]) -> dict[str, ModelProcess]:
    """A process (not started yet) for each model, loading it as the server did, with as many torch threads."""
    import torch

    return {
        name: ModelProcess(m.path, device=m.device, precision=m.precision, threads=torch.get_num_threads(), name=name)
        for name, m in models.items()
    }


class ServingApp(FastAPI):
    """FastAPI, entered through `front`: every HTTP request passes the Guard (Host, API key, metrics) first,
    then POST /predict[/NAME] is answered by FastPredict, and only the other requests reach FastAPI."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.front is not None:
            await self.front(scope, receive, send)
        else:  # lifespan (the batchers start and stop there)
            await super().__call__(scope, receive, send)


class FastPredict:
    """POST /predict[/NAME] straight to its handler, on the ASGI messages themselves, past every layer of
    FastAPI and Starlette (error pages, telemetry, body limit, routing, exit stacks, Request and Response).

    With a fast model the event loop's Python per request is what bounds requests/s at many clients, and
    those layers took about as much of it as the handler itself (a profile of a server at 32 clients). The
    routes stay declared, for the OpenAPI docs; every other request goes through FastAPI. The handler answers
    every error itself."""

    def __init__(self, app: ASGIApp, answer: Callable[[Scope, Receive], Awaitable[tuple[int, Any] | None]]):
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"].startswith("/predict"):
            answer = await self.answer(scope, receive)
            if answer is not None:
                status, content = answer
                await send_json(send, status, json_bytes(content))
                return
        await self.app(scope, receive, send)


def app_from_env() -> FastAPI:
    """The application of a `--workers N` worker process: the models and settings its parent put in
    $NLPCLI_SERVE_APP (uvicorn's workers start from an import string, not from an object)."""
    from ..device import set_threads
    from .models import load_models

    conf = json.loads(os.environ[SETTINGS_ENV])
    set_threads(conf["threads"])
    models = load_models(conf["specs"], conf["device"], conf["precision"])
    return create_app(models, ServeSettings(**conf["settings"]))


def internal_message(e: BaseException) -> str:
    # One line, as the CLI reports an internal error (the traceback goes to the server's log).
    return "internal error: " + f"{type(e).__name__}: {e}".strip().splitlines()[0]


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (a Content-Length over it is refused before reading);
    ClientDisconnect if the client goes first."""
    check_declared_size(content_length, limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, too_large(size, limit) + " (or more)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
