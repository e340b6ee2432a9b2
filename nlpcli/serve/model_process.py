"""A served model in a process of its own: the HTTP event loop and the model stop taking turns on one GIL.

In one process, the event loop's Python (parsing, checking and answering each request) and the Python of the
model thread (tokens, windows, decoding) share the interpreter lock, so at many concurrent clients the server
ran well below the model's own batched rate (docs/results.md, serving). Here the batcher thread stays in the
server process (queue, slices, deadlines, stats) and only `predict_records` crosses a socket to a child that
holds the model: records out, predictions back, one batch at a time. This is `nlpcli serve --model-process`;
it needs a free core for the child, so it is not the default (the measurements are in docs/results.md).

The child is a fresh interpreter (`python -c CHILD FD SETTINGS`), not a fork of a process that already
runs torch's thread pools and an event loop, nor a `multiprocessing` spawn (which would import the user's
main script again). It loads the model from its directory, as the server did: twice the model's memory, once
per process. It ignores Ctrl-C and SIGTERM, which a terminal or a service manager sends to the server's whole
group while the server drains and still needs its answers; it leaves when the server closes the socket, and so
with the server whatever way it ends. A child that dies (killed, out of memory) fails the batch it held, and
the next batch starts a new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .batcher import Abandoned, guard_forward

START_TIMEOUT_S = 600.0  # importing torch and loading a large model on a busy machine
# The child's program: this module imported (not run as __main__, which the serve package has imported already)
CHILD = "import sys; from nlpcli.serve.model_process import child_main; child_main(sys.argv[1:])"


class ModelProcessError(RuntimeError):
    """The model's process could not be started, or exited while it held a batch."""


class ModelProcess:
    """`predict_records` of the model at `path`, run in a child process (see the module's docstring)."""

    def __init__(self, path: str, *, device: str = "auto", precision: str = "auto", threads: int = 1, name: str = ""):
        self.path = path
        self.device = device
        self.precision = precision
        self.threads = threads
        self.name = name or path
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one batch in the pipe at a time (the batcher is the only caller anyway)
        self.starts = 0  # processes started (a restart after a crash counts)
        self._closed = False  # by close(): no new process after it

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child and wait until it has loaded the model (raises ModelProcessError if it cannot)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._closed:
            raise ModelProcessError(f"model {self.name}: the server is stopping")
        ours, theirs = socket.socketpair()
        settings = json.dumps([self.path, self.device, self.precision, self.threads])
        # the modules this process imports, found the same way (a checkout on sys.path, not installed, say)
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(theirs.fileno()), settings],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # tasks do not print; warnings and logs go to the server's stderr
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()  # only the child's copy stays open: its exit is an EOF here
        parent = Connection(ours.detach())
        self.starts += 1
        self._proc, self._conn = proc, parent
        if not parent.poll(START_TIMEOUT_S):
            self._kill()
            raise ModelProcessError(f"the process of model {self.name} did not load it in {START_TIMEOUT_S:g} s")
        try:
            kind, value = parent.recv()
        except (EOFError, OSError):
            code = self._kill()
            raise ModelProcessError(f"the process of model {self.name} exited while loading it (code {code})") from None
        if kind != "ready":
            self._kill()
            raise value

    def predict_records(self, records: list[dict[str, Any]], batch_size: int | None, deadline: float) -> list[Any]:
        """The predictions of `records`, computed in the child; Abandoned if every request of the batch is
        past `deadline` (time.monotonic(), one clock for both processes) before one of its forward batches."""
        with self._lock:
            if self._conn is None:
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((records, batch_size, deadline))
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                code = self._kill()
                raise ModelProcessError(
                    f"the process of model {self.name} exited (code {code}) during a batch; the next batch starts "
                    "a new one"
                ) from None
        if kind == "ok":
            return list(value)
        if kind == "abandoned":
            raise Abandoned
        raise value

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to leave (after the batch it holds), and end it if it has not within `timeout`.
        Safe while a batch is running in another thread: that batch then fails."""
        self._closed = True
        conn, proc = self._conn, self._proc
        if proc is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):  # already gone
                conn.send(None)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if conn is not None:
            conn.close()
        self._conn = self._proc = None

    def _kill(self) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait(10)


def _portable(e: BaseException) -> BaseException:
    """The exception as it can cross the pipe: itself if it pickles back, else a RuntimeError naming it; with
    the child's traceback as a note (the server logs it)."""
    trace = "".join(traceback.format_exception(e)).rstrip()
    try:
        out: BaseException = pickle.loads(pickle.dumps(e))
    except Exception:
        out = RuntimeError(f"{type(e).__name__}: {e}")
    out.add_note(f"in the model's process:\n{trace}")
    return out


def _child_main(conn: Connection, path: str, device: str, precision: str, threads: int) -> None:
    # Not a signal's to stop: a Ctrl-C reaches the whole process group and a service manager may signal every
    # process of the service, while the server still drains and needs its answers. It leaves when the server
    # closes the socket, and so with the server, whatever way that ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import torch

        from .. import api

        torch.set_num_threads(max(1, threads))
        pipe = api.load(path, device=device, precision=precision).pipeline
    except BaseException as e:  # a model that loaded in the server should load here; if not, say why
        conn.send(("error", _portable(e)))
        return
    deadline = float("inf")  # of the batch in hand: the batcher's check, here where the model runs
    guard_forward(pipe, lambda: deadline)
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server has gone
            return
        if message is None:
            return
        records, batch_size, deadline = message
        try:
            reply: tuple[str, Any] = ("ok", list(pipe.predict_records(records, batch_size)))
        except Abandoned:
            reply = ("abandoned", None)
        except Exception as e:
            reply = ("error", _portable(e))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def child_main(argv: list[str]) -> None:
    """The child's entry point: the socket's descriptor, then the model's settings as JSON."""
    fd, given = argv[:2]
    _child_main(Connection(int(fd)), *json.loads(given))
