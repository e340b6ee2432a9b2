"""Model cards: the README.md that every saved checkpoint carries (and `nlpcli info --model DIR` prints).

A card says what the model is and how it came about: the task, its metrics on dev, the data files it was
trained on (size and sha256, so a file can be checked later), the exact commands, the whole config (as TOML
that `--config` reads back), the versions, the training time, and the base encoder with its licence.
No torch at import: `nlpcli info` reads versions from here.
"""

from __future__ import annotations

import json
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import safefiles
from .errors import NlpcliError

if TYPE_CHECKING:
    from .config import TaskConfig

CARD_FILE = "README.md"
# A card that came with converted weights is kept as MODEL_CARD.md (beside nlpcli's own README.md).
CARD_FILES = (CARD_FILE, "MODEL_CARD.md")
CARD_LIMIT = 4 * safefiles.MiB  # a card is a few kB; a bound keeps a planted huge file from being read whole
SCRATCH_LICENCE = "none: trained from scratch in this run (no pretrained weights)"


def package_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata (nothing is imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def file_facts(path: str, role: str) -> dict[str, Any]:
    """Size and sha256 of a data file (`FILE#split` names a split of FILE: FILE is hashed)."""
    from .models.archive import sha256_file

    p = Path(path.split("#", 1)[0]) if not Path(path).exists() and "#" in path else Path(path)
    facts: dict[str, Any] = {"role": role, "path": path}
    try:
        digest = sha256_file(p)
        facts |= {"bytes": p.stat().st_size, "sha256": digest}
    except OSError as e:
        facts |= {"bytes": None, "sha256": f"unreadable ({e.strerror or e})"}
    return facts


def licence_of(name: str) -> str:
    """The licence of a base model: a catalogue entry's, a local Hugging Face directory's model card
    (`license:` in its README.md front matter), or what is known of it."""
    from .models.catalogue import CATALOGUE

    if name in ("", "dgcnn"):
        return SCRATCH_LICENCE
    entry = CATALOGUE.get(name) or CATALOGUE.get(Path(name).name)
    if entry is not None:
        return entry.licence
    base = Path(name).expanduser()
    readme = base / CARD_FILE
    if readme.is_file():
        try:
            found = re.search(r"^license:\s*(\S.*)$", safefiles.read_text(readme, CARD_LIMIT, within=base), re.M)
        except (OSError, NlpcliError):
            found = None
        if found:
            return found.group(1).strip().strip("\"'")
    return "unknown: not in nlpcli's catalogue; see the model's own card"


def base_models(config: TaskConfig) -> list[tuple[str, str]]:
    """(role, name) of the pretrained weights a config builds on (the from-scratch encoder included)."""
    out: list[tuple[str, str]] = []
    encoder = getattr(config, "encoder", None)
    if encoder is not None:
        out.append(("encoder", encoder.name))
        if encoder.word_vectors:
            out.append(("word vectors", encoder.word_vectors))
    init = getattr(config.model, "init", None)
    if isinstance(init, str):
        out.append(("initial model", init or "dgcnn"))
    return out


def versions() -> dict[str, str]:
    from .version import __version__

    found = {"nlpcli": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "numpy"):
        v = package_version(name)
        if v:
            found[name] = v
    found["platform"] = platform.platform()
    return found


def render_card(
    task: str,
    summary: str,
    main_metric: str,
    config: TaskConfig,
    metrics: dict[str, Any] | None,
    run: dict[str, Any] | None = None,
) -> str:
    """The model card (Markdown with a Hugging Face style front matter) of a checkpoint.

    `run` is what the trainer knows: checkpoint (best | last), step, epoch, elapsed_s, tokens_per_s, device,
    precision (and precision_reason, when `auto` chose it), dev (where dev came from), data
    ([{role, path, bytes, sha256}]), commands ([{command, step}])."""
    run = run or {}
    lines = [
        "---",
        "library_name: nlpcli",
        f"tags: [nlpcli, {task}]",
        "language: [zh]",
        "---",
        "",
        f"# nlpcli {task} model",
        "",
        f"{summary}." if summary else "",
        "",
    ]
    which = run.get("checkpoint")
    if which == "best":
        lines.append(f"This is the best checkpoint by dev {main_metric} (step {run.get('step', '?')}).")
    elif which == "last":
        lines.append(f"This is the latest training state (step {run.get('step', '?')}), kept for `--resume`.")
    lines += [
        "",
        f"Use: `nlpcli predict {task} --model DIR --input FILE` or, in Python, `nlpcli.load(DIR)`; "
        f"`nlpcli info --model DIR` prints this card.",
        "",
        "## Metrics on dev",
        "",
    ]
    lines += _metrics_lines(metrics, main_metric, run)
    lines += ["", "## Training data", ""]
    data = run.get("data") or []
    if data:
        lines += ["| role | file | bytes | sha256 |", "|---|---|---:|---|"]
        lines += [
            f"| {d['role']} | `{_cell(d['path'])}` | {d['bytes'] if d['bytes'] is not None else ''} | `{d['sha256']}` |"
            for d in data
        ]
        if run.get("dev"):
            lines += ["", f"Dev: {_cell(str(run['dev']))}."]
        if run.get("teacher"):
            lines += [
                "",
                f"Teacher: `{_cell(str(run['teacher']))}`. Its predictions on the unlabelled text "
                f"({run.get('taught_examples', '?')} examples, the `teacher labels` file) were trained on beside the "
                "gold (distillation).",
            ]
    else:
        lines.append("Not recorded (this checkpoint was not saved by `nlpcli train`).")
    lines += ["", "## Training", ""]
    commands = run.get("commands") or []
    if commands:
        lines.append("Commands (a resumed run adds one):")
        lines.append("")
        lines += [f"- from step {c['step']}: `{c['command']}`" for c in commands]
        lines.append("")
    if run.get("cwd"):
        lines.append(f"- working directory: `{_cell(str(run['cwd']))}` (relative paths above start here)")
    if "step" in run:
        lines.append(
            f"- steps: {run['step']} (epoch {run.get('epoch', 0)}), training time {clock(run.get('elapsed_s', 0.0))}"
            + (f", {run['tokens_per_s']:,.0f} tokens/s" if run.get("tokens_per_s") else "")
        )
        why = f" (auto: {run['precision_reason']})" if run.get("precision_reason") else ""
        lines.append(f"- device: {run.get('device', '?')}, precision {run.get('precision', '?')}{why}")
    lines.append(f"- saved: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    lines += ["", "## Base model", "", "| role | name | licence |", "|---|---|---|"]
    lines += [f"| {role} | `{_cell(name)}` | {_cell(licence_of(name))} |" for role, name in base_models(config)]
    lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in versions().items()]
    lines += [
        "",
        "## Config",
        "",
        f"Save this block as a file and `nlpcli train {task} --config FILE` trains with the same settings.",
        "",
        "```toml",
        config.to_toml(comments=False).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def _metrics_lines(metrics: dict[str, Any] | None, main_metric: str, run: dict[str, Any]) -> list[str]:
    if not metrics:
        return ["None yet (no dev evaluation before this save)."]
    out = ["| metric | value |", "|---|---:|"]
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and key != "per_type":
            flat |= {f"{key}.{k}": v for k, v in value.items()}
        elif key != "step":
            flat[key] = value
    for key, value in flat.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = f"**{key}**" if key == main_metric else key
            out.append(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    per_type = metrics.get("per_type")
    if isinstance(per_type, dict) and per_type:
        out += ["", "| type | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
        for name, m in per_type.items():
            prf = f"{m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f}"
            out.append(f"| {_cell(str(name))} | {prf} | {m.get('gold', '')} |")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss (the card's training time, the progress lines, `nlpcli report`)."""
    s = max(round(seconds), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def read_card(*directories: Path) -> str | None:
    """The model card in the first of `directories` that holds one (README.md, else MODEL_CARD.md): a
    checkpoint, then the training output above it. None when there is none (a checkpoint from before
    cards); an unreadable card is a CheckpointError (see `card_text`)."""
    for directory in dict.fromkeys(directories):
        text = card_text(directory, CARD_FILES)
        if text is not None:
            return text
    return None


def card_text(directory: str | Path, names: tuple[str, ...] = (CARD_FILE,)) -> str | None:
    """The first of `names` in `directory` as text, or None when there is none. Only a regular file inside
    the directory is read, and a bounded one: a card linking to /etc/passwd is a CheckpointError, never
    read (so `info --model` and a server's /info cannot be made to show another file)."""
    from .errors import CheckpointError

    for name in names:
        path = Path(directory) / name
        try:
            # a stray byte that is not UTF-8 shows as U+FFFD rather than hiding the card
            return safefiles.read_bytes(path, CARD_LIMIT, within=directory).decode("utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    return None


def commands_from_json(text: str | None) -> list[dict[str, Any]]:
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []
