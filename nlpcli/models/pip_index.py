"""Finding and downloading one exact file from the package index the user's pip is set up for.

Why not `pip download` for sdists: pip prepares an sdist's metadata before it saves it, which runs the
package's setup.py (checked with pip 26.3, also with --no-deps --no-binary :all: --no-build-isolation).
So for sdists we read pip's own settings (`pip config list`, which includes the PIP_* variables), ask
each index's simple API (PEP 503 HTML or PEP 691 JSON; mirrors and file:// indexes work the same) for
the file's URL, and download that one file.
"""

from __future__ import annotations

import ast
import base64
import json
import netrc
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from .errors import FetchError

DEFAULT_INDEX = "https://pypi.org/simple"
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class PipSettings:
    index_url: str = DEFAULT_INDEX
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    cert: str | None = None
    proxy: str | None = None
    trusted_hosts: list[str] = field(default_factory=list)
    timeout: float = 15.0

    @property
    def indexes(self) -> list[str]:
        return [] if self.no_index else [self.index_url, *self.extra_index_urls]


@dataclass
class Link:
    url: str
    sha256: str | None  # as the index states it, if it does


def pip_settings() -> PipSettings:
    """pip's effective settings for `pip download`: PIP_* variables over the [download] section over [global]."""
    values = _pip_config_values()

    def pick(key: str) -> str | None:
        return next((values[k] for k in (f":env:.{key}", f"download.{key}", f"global.{key}") if k in values), None)

    timeout = pick("timeout") or pick("default-timeout")
    return PipSettings(
        index_url=(pick("index-url") or DEFAULT_INDEX).strip(),
        extra_index_urls=(pick("extra-index-url") or "").split(),
        find_links=(pick("find-links") or "").split(),
        no_index=(pick("no-index") or "").strip().lower() in _TRUE,
        cert=pick("cert"),
        proxy=pick("proxy"),
        trusted_hosts=(pick("trusted-host") or "").split(),
        timeout=float(timeout) if timeout else 15.0,
    )


def _pip_config_values() -> dict[str, str]:
    """`pip config list` as a dict ('global.index-url' -> value); PIP_* variables alone when pip is missing."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is None or proc.returncode != 0:
        return {f":env:.{k[4:].lower().replace('_', '-')}": v for k, v in os.environ.items() if k.startswith("PIP_")}
    values = {}
    for line in proc.stdout.splitlines():
        key, eq, raw = line.partition("=")
        if eq:
            try:
                values[key.strip()] = str(ast.literal_eval(raw.strip()))
            except (ValueError, SyntaxError):
                values[key.strip()] = raw.strip().strip("'\"")
    return values


def find_file(project: str, filename: str, settings: PipSettings) -> Link | Path:
    """The file in a find-links directory (a Path), or its Link on the first index or page that lists it."""
    errors = []
    for location in settings.find_links:
        local = _local_dir(location)
        if local is not None:
            if (local / filename).is_file():
                return local / filename
            continue
        try:
            links = _page_links(location, settings)
        except FetchError as e:
            errors.append(str(e))
            continue
        if filename in links:
            return links[filename]
    for index in settings.indexes:
        page = index.rstrip("/") + "/" + _canonical(project) + "/"
        try:
            links = _page_links(page, settings)
        except FetchError as e:
            errors.append(str(e))
            continue
        if filename in links:
            return links[filename]
    where = ", ".join(_redact(i) for i in settings.indexes + settings.find_links) or "no index (pip has no-index set)"
    if errors:
        raise FetchError(f"could not get {filename}: {errors[0]}")
    raise FetchError(f"{filename} is not on {where}")


def download(link: Link, dest: Path, settings: PipSettings) -> Path:
    """Stream the file to `dest`; a failure leaves no partial file behind."""
    part = dest.with_name(dest.name + ".part")
    try:
        with _open(link.url, settings) as resp, open(part, "wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
        part.replace(dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise FetchError(f"download of {_redact(link.url)} failed: {_reason(e)}") from None
    return dest


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_dir(location: str) -> Path | None:
    if location.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    elif "://" in location:
        return None
    else:
        path = Path(location).expanduser()
    return path if path.is_dir() else None


def _page_links(url: str, settings: PipSettings) -> dict[str, Link]:
    """filename -> Link for a simple-API project page (JSON or HTML), or a find-links HTML page."""
    if url.startswith("file:") and not Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)).exists():
        return {}  # a file:// index without the project: "not listed", as a 404 would say
    try:
        with _open(url, settings) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "") if resp.headers else ""
            base = resp.geturl() or url
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise FetchError(f"{_redact(url)}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FetchError(f"cannot reach {_redact(url)}: {_reason(e)}") from None
    if "json" in ctype:
        files = json.loads(body).get("files", [])
        return {
            f["filename"]: Link(urllib.parse.urljoin(base, f["url"]), f.get("hashes", {}).get("sha256")) for f in files
        }
    return _html_links(body.decode("utf-8", errors="replace"), base)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _html_links(html: str, base: str) -> dict[str, Link]:
    parser = _Anchors()
    parser.feed(html)
    links = {}
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
        sha = fragment[7:] if fragment.startswith("sha256=") else None
        links[name] = Link(url, sha)
    return links


def _open(url: str, settings: PipSettings) -> Any:
    """urlopen with pip's certificate, proxy, trusted hosts and timeout; credentials from the URL or ~/.netrc."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        if path.is_dir():  # a file:// index directory serves its index.html
            url = (path / "index.html").as_uri()
        return urllib.request.urlopen(url, timeout=settings.timeout)
    headers = {"Accept": ACCEPT, "User-Agent": "nlpcli (pip index client)"}
    auth = _credentials(parts)
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    handlers: list = [urllib.request.HTTPSHandler(context=_ssl_context(parts.hostname, settings))]
    if settings.proxy:
        handlers.append(urllib.request.ProxyHandler({"http": settings.proxy, "https": settings.proxy}))
    opener = urllib.request.build_opener(*handlers)
    return opener.open(urllib.request.Request(url, headers=headers), timeout=settings.timeout)


def _credentials(parts: urllib.parse.SplitResult) -> str | None:
    if parts.username:
        return f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    try:
        found = netrc.netrc().authenticators(parts.hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return f"{found[0]}:{found[2]}" if found else None


def _ssl_context(host: str | None, settings: PipSettings) -> ssl.SSLContext:
    if host and any(host == h.split(":")[0] for h in settings.trusted_hosts):
        return ssl._create_unverified_context()  # what pip's --trusted-host means for https
    return ssl.create_default_context(cafile=settings.cert) if settings.cert else ssl.create_default_context()


def _redact(url: str) -> str:
    """A URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"))
    return url


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
    return str(reason)
