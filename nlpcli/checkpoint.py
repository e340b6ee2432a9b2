"""One checkpoint format for every task: a directory written atomically.

    config.json        task name, format version, nlpcli version, the task config in sections
                       (format 1, before config sections, kept one flat dict; format 2, before the
                       renames of format 3: both still read)
    vocab.json         the task's assets (vocabularies, label sets)
    model.safetensors  weights (no pickle)
    metrics.json       metrics of this checkpoint (optional)
    README.md          the model card: task, dev metrics, data files (size, sha256), commands, config,
                       versions, training time, base encoder and its licence (`nlpcli.card`)
    train_state.pt     optimizer/scheduler/step/RNG for --resume (optional; weights_only load)
    <extra>/           task files such as a Hugging Face tokenizer and config

An exported directory (`nlpcli export`, `nlpcli.onnx_runtime`) holds onnx.json and ONNX graphs in place of
model.safetensors and train_state.pt.

A training output directory holds `best/` (what --model loads) and `last/` (what --resume loads).

One module above the usual size: writing and reading share the swap protocol below (names, order, recovery),
and a reader that races a writer must know every step of it.

Character offsets in predictions are an output format, not a fact of the model: ends are exclusive
(`text[start:end]`) whatever the checkpoint's format, where nlpcli once wrote inclusive ones for formats 1
and 2 alike (docs/offsets.md). No checkpoint file changed with it, so the format version did not either.

Saving survives a kill (or a power cut) at any point. A checkpoint is written into `.NAME.XXXX`, synced
to disk, renamed to `NAME.new`, then `NAME` becomes `NAME.old`, `NAME.new` becomes `NAME`, and `NAME.old`
is renamed to a `.NAME.*` name and deleted. So `NAME.new`, `NAME` and `NAME.old` only ever hold complete
checkpoints, the newest first: readers take the first that exists (`current_version`) and a run starts by
finishing or rolling back whatever swap was cut short (`recover_run`); `.NAME.*` entries are debris.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file

from . import safefiles
from .data.io import fsync_dir, os_reason, umask
from .errors import CheckpointError
from .models import resolve_model_dir
from .safefiles import MiB
from .version import __version__

# 3: fields renamed (`max_len` split by meaning: windows.window, model.max_positions, model.train_window,
# inference.max_sentence_len, model.context_len); format 2's names are read through TaskConfig.MOVED.
FORMAT_VERSION = 3
BEST, LAST = "best", "last"
NEW, OLD = ".new", ".old"  # suffixes of a checkpoint's next and previous versions during a swap
LOCK_FILE = ".lock"
ONNX_META = "onnx.json"  # marks an exported directory: ONNX graphs instead of model.safetensors


@dataclass
class Checkpoint:
    """A loaded checkpoint directory (weights are read on demand)."""

    path: Path
    task: str
    config: dict[str, Any]
    assets: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The weights of this very version, opened with the rest (a swap may rename or delete it after loading).
    weights_file: BinaryIO | None = field(default=None, repr=False, compare=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        p = self.path / "model.safetensors"
        f, self.weights_file = self.weights_file, None  # read once; a second call opens the file anew
        try:
            if f is None:
                f = os.fdopen(safefiles.open_regular(p, within=self.path), "rb")
            held = Path(f"/proc/self/fd/{f.fileno()}")
            if held.exists():  # the open file itself, mapped as load_file maps it (Linux)
                return load_file(str(held))
            return load(f.read())
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: damaged weights file ({_first_line(e)})") from None
        finally:
            if f is not None:
                f.close()

    def train_state(self) -> dict[str, Any] | None:
        p = self.path / "train_state.pt"
        try:
            fd = safefiles.open_regular(p, within=self.path)
        except FileNotFoundError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception:
            state = None
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{p}: damaged or unsafe training state (only tensors and plain values are read; not loaded)"
            )
        return state


def save_checkpoint(
    path: str | Path,
    task: str,
    config: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    assets: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    readme: str | None = None,
) -> Path:
    """Write a checkpoint into a temp dir, then swap it into place (never a half checkpoint); `readme` is its
    model card (README.md)."""
    with signals_deferred():
        return _save_checkpoint(
            Path(path), task, config, model_state, assets, metrics, train_state, write_extra, readme
        )


def _save_checkpoint(
    dest: Path,
    task: str,
    config: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    assets: dict[str, Any],
    metrics: dict[str, Any] | None,
    train_state: dict[str, Any] | None,
    write_extra: Callable[[Path], None] | None,
    readme: str | None,
) -> Path:
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        meta = {"format_version": FORMAT_VERSION, "nlpcli_version": __version__, "task": task, "config": config}
        _write_json(tmp / "config.json", meta, indent=2)
        _write_json(tmp / "vocab.json", assets)
        # Clones break weight sharing (tied embeddings), which safetensors refuses to store.
        weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"task": task})
        if metrics is not None:
            _write_json(tmp / "metrics.json", metrics, indent=2)
        if train_state is not None:
            _torch_save(train_state, tmp / "train_state.pt")
        if write_extra is not None:
            write_extra(tmp)
        if readme is not None:
            _write_bytes(tmp / "README.md", readme.encode("utf-8"))
        _sync_tree(tmp)
        _swap_into_place(tmp, dest)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{dest}: cannot save the checkpoint ({os_reason(e)})") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# Stop signals that a checkpoint save holds back until it is done: Ctrl-C, SIGTERM, and SIGHUP (a closed
# terminal or ssh session). Raised in the middle of a swap or its clean-up, they would leave a temporary
# directory behind.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold stop signals back while the block runs, then deliver the first one that came (to the handler
    that was in place). Only the main thread handles signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class _RecordingWriter:
    """A file for torch.save that keeps the OS error of a failed write (torch reports only its own)."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(obj, writer)  # type: ignore[arg-type]  # a write/flush object is all it uses
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def _write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    _write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8"))


def _sync_tree(root: Path) -> None:
    """Modes as the umask says (temp dirs are made 0700) and every file and directory flushed to disk."""
    mask = umask()
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            f = os.path.join(dirpath, name)
            os.chmod(f, 0o666 & ~mask)
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(dirpath, 0o777 & ~mask)
        fsync_dir(dirpath)


def _versions(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + NEW), dest.with_name(dest.name + OLD)


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename a complete, synced checkpoint in `tmp` to `dest`; every intermediate state is recoverable."""
    new, old = _versions(dest)
    _settle(dest)  # a swap cut short earlier is finished first: from here on only `dest` may exist
    os.replace(tmp, new)
    fsync_dir(dest.parent)
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    fsync_dir(dest.parent)
    _discard(old, dest.name)


def _settle(dest: Path) -> None:
    """Finish a swap of `dest` that was cut short (roll forward to `.new`), or roll back to `.old`."""
    new, old = _versions(dest)
    if new.is_dir():
        if dest.exists():
            _discard(old, dest.name)
            os.replace(dest, old)
        os.replace(new, dest)
        fsync_dir(dest.parent)
    elif old.is_dir() and not dest.exists():
        os.replace(old, dest)
        fsync_dir(dest.parent)
    _discard(old, dest.name)


def _discard(path: Path, name: str) -> None:
    """Delete a checkpoint directory: renamed out of the way first, so a kill never leaves half of it
    under a name that readers trust."""
    if not path.exists():
        return
    trash = path.with_name(f".{name}.{uuid.uuid4().hex[:8]}.del")
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def current_version(dest: str | Path) -> Path | None:
    """The complete checkpoint that `dest` stands for, also in the middle of a swap: `dest.new` (written,
    not yet in place), `dest`, or `dest.old` (moved aside, the new one not yet in place); None if none."""
    dest = Path(dest)
    new, old = _versions(dest)
    for candidate in (new, dest, old):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def recover_run(output_dir: str | Path) -> None:
    """Finish or roll back the swaps of `best/` and `last/` that a killed run left, and remove its debris."""
    out = Path(output_dir)
    if not out.is_dir():
        return
    try:
        with signals_deferred():
            _recover(out)
    except OSError as e:
        raise CheckpointError(f"{out}: cannot repair an interrupted checkpoint save ({os_reason(e)})") from None


def _recover(out: Path) -> None:
    for name in (BEST, LAST):
        _settle(out / name)
        for debris in out.glob(f".{name}.*"):
            if debris.is_dir() and not debris.is_symlink():
                shutil.rmtree(debris, ignore_errors=True)
            else:
                debris.unlink(missing_ok=True)


@contextmanager
def run_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a training output directory: one writer per run.

    The lock is an flock on `DIR/.lock` (which holds the pid), so it dies with its process, kill -9 included:
    a lock file left by a dead run is taken over. A second run gets a CheckpointError naming the holder.
    """
    out = Path(output_dir)
    created = not out.exists()
    path = out / LOCK_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        while True:
            fd = _open_lock_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                raise CheckpointError(
                    f"{out}: another training is writing here (pid {holder or 'unknown'}); "
                    "wait for it to end or choose another --output"
                ) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else its holder removed the file between our open and flock: take the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as e:
        raise CheckpointError(f"{out}: cannot lock the output directory ({os_reason(e)})") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock (see the inode check above)
        os.close(fd)
        if created:
            with suppress(OSError):
                out.rmdir()  # a run that stopped before writing anything leaves no empty directory


def _open_lock_file(path: Path) -> int:
    """The lock file, opened or created without following a link: a link planted there (a shared output
    directory) must not make the run truncate and write its pid into the file it points to."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: is a symbolic link, not a lock file of nlpcli; remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: not a regular file, not a lock file of nlpcli; remove it")
    return fd


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint dir itself, or a training output dir (its best/, else last/); a swap cut short by a kill
    still resolves, to the newest complete version (see `current_version`). A built model's name (`nlpcli
    models build NAME`) that is no path here stands for its directory in the model cache."""
    p = resolve_model_dir(path)
    found = current_version(p)
    if found is not None:
        return found
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint directory")
    for name in (BEST, LAST):
        found = current_version(p / name)
        if found is not None:
            return found
    raise CheckpointError(f"{p}: not an nlpcli checkpoint (no config.json)")


def load_checkpoint(path: str | Path, expect_task: str | None = None) -> Checkpoint:
    """Read config and assets; refuse checkpoints of another task or a newer format, and damaged files.

    A training may swap a new version in while this reads: every file comes from the one directory resolved
    first (never two versions mixed), and when that version is deleted under the reader (a later swap), the
    read starts again from the newest. The weights file is opened here, so `state_dict` reads this version."""
    for attempt in range(_LOAD_TRIES):
        d = resolve_checkpoint_dir(path)
        try:
            return _load_version(d, expect_task)
        except _Vanished:
            if attempt == _LOAD_TRIES - 1:
                raise CheckpointError(f"{d}: replaced while being read, {_LOAD_TRIES} times; try again") from None
    raise AssertionError("unreachable")


_LOAD_TRIES = 5
JSON_LIMIT = 256 * MiB  # vocab.json of a word vocabulary is a few MB; anything near this is not a checkpoint's


class _Vanished(Exception):
    """Internal: the checkpoint version being read was deleted by a swap."""


def _load_version(d: Path, expect_task: str | None) -> Checkpoint:
    try:
        dir_fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        raise _Vanished() from None
    except OSError as e:
        raise CheckpointError(f"{d}: cannot read ({os_reason(e)})") from None
    weights: BinaryIO | None = None
    try:
        meta = _read_json(d / "config.json", dir_fd)
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CheckpointError(
                f"{d / 'config.json'}: format_version {version!r} is not a checkpoint format (a positive integer)"
            )
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{d}: checkpoint format {version} is newer than this nlpcli reads ({FORMAT_VERSION}); upgrade nlpcli"
            )
        task = meta.get("task")
        if expect_task is not None and task != expect_task:
            raise CheckpointError(f"{d}: this is a '{task}' checkpoint, not '{expect_task}'")
        if not isinstance(task, str) or not isinstance(meta.get("config", {}), dict):
            raise CheckpointError(f"{d / 'config.json'}: not an nlpcli checkpoint config (no task or config)")
        assets = _read_json(d / "vocab.json", dir_fd)
        metrics = _read_json(d / "metrics.json", dir_fd, optional=True)
        try:
            weights = os.fdopen(safefiles.open_regular(d / "model.safetensors", dir_fd=dir_fd), "rb")
        except FileNotFoundError:
            _missing(d, dir_fd)
            if not _exported(d, dir_fd):  # an exported (ONNX) directory has graphs instead of weights
                raise CheckpointError(f"{d}: model.safetensors is missing") from None
        where = _trusted_name(d, dir_fd)
        if where is None:  # moved out to be deleted while read: a file read above may be of no version
            raise _Vanished()
        ckpt = Checkpoint(
            path=where,
            task=task,
            config=meta.get("config", {}),
            assets=assets,
            metrics=metrics,
            format_version=version,
            weights_file=weights,
        )
        weights = None
        return ckpt
    finally:
        os.close(dir_fd)
        if weights is not None:
            weights.close()


def _exported(d: Path, dir_fd: int) -> bool:
    try:
        os.close(safefiles.open_regular(d / ONNX_META, dir_fd=dir_fd))
    except FileNotFoundError:
        return False
    return True


def _trusted_name(d: Path, dir_fd: int) -> Path | None:
    """Where the version open as `dir_fd` is now, under a name readers trust (it may have moved from NAME.new
    to NAME to NAME.old), or None once it was moved out to be deleted."""
    st = os.fstat(dir_fd)
    dest = d.with_name(d.name.removesuffix(NEW).removesuffix(OLD)) if d.name.endswith((NEW, OLD)) else d
    for candidate in (d, *_versions(dest), dest):
        try:
            cs = os.stat(candidate)
        except OSError:
            continue
        if (cs.st_dev, cs.st_ino) == (st.st_dev, st.st_ino):
            return candidate
    return None


def _missing(d: Path, dir_fd: int) -> None:
    """A file of the version open as `dir_fd` is missing: `_Vanished` when a swap is deleting that version."""
    if _trusted_name(d, dir_fd) is None:
        raise _Vanished()


def _read_json(path: Path, dir_fd: int, optional: bool = False) -> dict[str, Any]:
    """A JSON object from a checkpoint file (a regular file, not a link, of bounded size) read from the
    directory open as `dir_fd`; anything else is a CheckpointError naming the file ({} for a missing optional
    one)."""
    try:
        text = safefiles.read_text(path, JSON_LIMIT, dir_fd=dir_fd)
    except FileNotFoundError as e:
        _missing(path.parent, dir_fd)
        if optional:
            return {}
        raise CheckpointError(f"{path}: cannot read ({os_reason(e)})") from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint file ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: damaged checkpoint file (expected a JSON object)")
    return obj
