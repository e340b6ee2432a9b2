"""The HTTP application: POST /predict[/{name}], GET /health, GET /info[/{name}], OpenAPI docs at /docs.

A prediction body is what `nlpcli predict` reads on one line (one record), or a list of such records; the
answer is what it writes (the record with its predictions, or the list). Bodies are read and checked here,
in the event loop (cheap); the model runs in each model's batcher thread (see batcher.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..errors import NlpcliError
from ..records.jsonl import dumps
from .batcher import MicroBatcher
from .bodies import Problem, check_content_type, check_declared_size, parse_records, too_large
from .models import ServedModel

log = logging.getLogger("nlpcli.serve")


@dataclass
class ServeSettings:
    """Micro-batching and the limits on a request (the `nlpcli serve` options of the same names)."""

    micro_batching: bool = True
    # How long the first record of a batch waits for company. 0: a batch is what queued while the model was
    # busy; measured (README) as fast as waiting a few ms under load, and much faster for a lone client.
    max_wait_ms: float = 0.0
    max_batch: int = 64  # records in one micro-batch (a request is never split, so one may hold more)
    batch_size: int | None = None  # the model's forward batch inside a micro-batch (None: its inference setting)
    max_body_bytes: int = 1 << 20
    max_records: int = 256  # records in one request
    timeout_s: float = 30.0  # a request not answered by then gets 504 (and is dropped if not started yet)


def json_response(content: Any, status: int = 200) -> Response:
    # the bytes `nlpcli predict` writes: strict JSON, Chinese as UTF-8 rather than \u escapes
    body = dumps(content).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def problem_response(status: int, message: str) -> Response:
    return json_response({"detail": message}, status)


def create_app(models: dict[str, ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The application for loaded models; their batcher threads start and stop with its lifespan."""
    settings = settings or ServeSettings()
    batchers = {
        name: MicroBatcher(
            m.pipe,
            max_wait_s=settings.max_wait_ms / 1000,
            max_records=settings.max_batch,
            enabled=settings.micro_batching,
            batch_size=settings.batch_size,
            name=name,
        )
        for name, m in models.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for b in batchers.values():
            b.start()
        yield
        # The server has stopped taking requests and answered those in flight (a SIGTERM drains).
        for b in batchers.values():
            await asyncio.to_thread(b.stop)

    tasks = ", ".join(sorted({m.task for m in models.values()}))
    examples = {m.task: m.pipe.example for m in models.values()}  # each task's own example record
    sampled = sorted({m.task for m in models.values() if m.pipe.sampled})
    app = FastAPI(
        title="nlpcli",
        summary=f"Predictions of {', '.join(f'{n} ({m.task})' for n, m in models.items())}",
        description=(
            "POST a record, or a list of records, as `nlpcli predict` reads them (one JSON object per record); "
            "the answer is what `nlpcli predict` writes. Records of concurrent requests are micro-batched. "
            + (
                f"Deterministic tasks answer exactly as `nlpcli predict`; {', '.join(sampled)} sample, seeded per "
                "batch, so their replies may differ from one call to the next."
                if sampled
                else "Every model answers exactly as `nlpcli predict`."
            )
        ),
        lifespan=lifespan,
    )

    async def predict(name: str, request: Request) -> Response:
        try:
            model = models.get(name)
            if model is None:
                raise Problem(404, f"no model named {name!r}; serving: {', '.join(models)}")
            check_content_type(request.headers.get("content-type"))
            body = await read_body(request, settings.max_body_bytes)
            records, single = parse_records(body, model.pipe, settings.max_records)
            if not records:
                return json_response([])
            future = batchers[name].submit(records)
            try:
                outputs = await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout_s)
            except TimeoutError:  # the job is cancelled with it: if it has not started, it never will
                raise Problem(504, f"no answer within {settings.timeout_s:g} s (--timeout)") from None
        except Problem as p:
            return problem_response(p.status, p.message)
        except NlpcliError as e:  # a record the task refused past its validate_record
            return problem_response(422, str(e))
        except Exception as e:  # a fault in the model or the task's code: this request fails, the server goes on
            log.exception("prediction failed")
            return problem_response(500, internal_message(e))
        return json_response(outputs[0] if single else outputs)

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"type": "object", "description": "one record"},
                            {"type": "array", "items": {"type": "object"}, "description": "a list of records"},
                        ]
                    },
                    "examples": {t: {"value": examples[t]} for t in sorted(examples)},
                }
            },
        }
    }
    errors_doc: dict[int | str, dict[str, Any]] = {
        400: {"description": "malformed JSON, or several models served and none named"},
        404: {"description": "no model of that name"},
        413: {"description": "body over --max-body-bytes, or more records than --max-records"},
        415: {"description": "Content-Type is not application/json"},
        422: {"description": "a record the task cannot read (the message names it, as `nlpcli predict` does)"},
        504: {"description": "not answered within --timeout"},
    }

    @app.post("/predict", openapi_extra=body_doc, responses=errors_doc, summary="Predict with the one model")
    async def predict_default(request: Request) -> Response:
        if len(models) != 1:
            return problem_response(400, f"several models are served; POST to /predict/NAME ({', '.join(models)})")
        return await predict(next(iter(models)), request)

    @app.post("/predict/{name}", openapi_extra=body_doc, responses=errors_doc, summary="Predict with a model")
    async def predict_named(name: str, request: Request) -> Response:
        return await predict(name, request)

    @app.get("/health", summary="Whether the server answers, and the models it serves")
    async def health() -> Response:
        return json_response({"status": "ok", "models": {n: m.task for n, m in models.items()}})

    @app.get("/info", summary=f"Every model: task, metrics, model card, config ({tasks})")
    async def info() -> Response:
        return json_response({"models": {n: model_info(n) for n in models}, "settings": asdict(settings)})

    @app.get("/info/{name}", summary="One model: task, metrics, model card, config")
    async def info_named(name: str) -> Response:
        if name not in models:
            return problem_response(404, f"no model named {name!r}; serving: {', '.join(models)}")
        return json_response(model_info(name))

    def model_info(name: str) -> dict[str, Any]:
        return models[name].info() | {"batches": asdict(batchers[name].stats)}

    return app


def internal_message(e: BaseException) -> str:
    # One line, as the CLI reports an internal error (the traceback goes to the server's log).
    return "internal error: " + f"{type(e).__name__}: {e}".strip().splitlines()[0]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (a Content-Length over it is refused before reading)."""
    check_declared_size(request.headers.get("content-length"), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, too_large(size, limit) + " (or more)")
        chunks.append(chunk)
    return b"".join(chunks)
