"""What every request passes before the application: the Host check, the API key, and the request metrics.

A plain ASGI middleware (no body buffering, no thread): it looks at the request line and headers only.

- Host: a page on another site that rebinds its DNS name to 127.0.0.1 reaches a localhost server with its
  own name in `Host:`; answering only the names the server is bound to (and `--allowed-host` ones) keeps
  such pages out (421). An IP-literal Host can only come from someone who addressed the server by number,
  so it is accepted when it is the bound address, or any address for a wildcard bind (0.0.0.0, ::).
- API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time; every route but the
  health checks wants it (401).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/ready"})  # liveness and readiness probes carry no key
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def default_hosts(bind_host: str) -> list[str]:
    """The Host names a server bound to `bind_host` answers to (before `--allowed-host` ones)."""
    host = bind_host.strip("[]").lower()
    if host in LOOPBACK_NAMES or _is_loopback(host):
        return list(dict.fromkeys([*LOOPBACK_NAMES, host]))
    if host in WILDCARDS:
        return ["localhost", host or "0.0.0.0"]
    return [host]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """`Host:` without its port, lower case: `[::1]:8000` -> `::1`, `Example.COM.:80` -> `example.com`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class HostCheck:
    def __init__(self, allowed: list[str]):
        self.names = frozenset(host_name(h) for h in allowed)
        self.any_host = "*" in allowed
        self.any_ip = bool(self.names & WILDCARDS)

    def allows(self, header: str | None) -> bool:
        if self.any_host:
            return True
        if not header:
            return False
        name = host_name(header)
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_ip


class Guard:
    """Host check, API key and metrics around the application (see the module's docstring)."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, allowed_hosts: list[str] | None = None, api_key: str | None = None
    ):
        self.app = app
        self.metrics = metrics
        self.hosts = HostCheck(allowed_hosts) if allowed_hosts is not None else None
        self.key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an application that fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.started(scope.get("path", ""))
        try:
            refused = self.refusal(scope)
            if refused is not None:
                code, detail, extra = refused
                await _answer(sending, code, detail, extra)
            else:
                await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(scope.get("path", ""), status, time.perf_counter() - start)

    def refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.hosts is not None and not self.hosts.allows(headers.get("host")):
            shown = headers.get("host", "")
            return 421, f"Host {shown!r} is not served here (add it with --allowed-host)", []
        if self.key is not None and scope.get("path") not in OPEN_PATHS:
            given = _given_key(headers)
            if given is None or not hmac.compare_digest(given.encode("utf-8"), self.key):
                what = "a wrong API key" if given is not None else "no API key"
                return 401, f"{what}: send Authorization: Bearer KEY", [(b"www-authenticate", b"Bearer")]
        return None


def _given_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return headers.get("x-api-key")


async def _answer(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
    await send_json(send, status, json.dumps({"detail": detail}, ensure_ascii=False).encode("utf-8"), extra)


async def send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON answer as its two ASGI messages (no Starlette Response in between)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
