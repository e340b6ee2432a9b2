"""`nlpcli info [TASK]`: versions, devices, threads; with a task, its config fields and defaults."""

from __future__ import annotations

import platform

import typer
from rich.table import Table

from .common import cli_errors, out_console


@cli_errors
def info(task: str | None = typer.Argument(None, help="Show this task's config fields and defaults.")) -> None:
    """Show versions, devices and threads; or a task's options."""
    import torch

    from .. import __version__
    from ..registry import get_task, task_names

    if task:
        cls = get_task(task)
        config = cls.Config()
        table = Table(title=f"{task}: {cls.summary}")
        for col in ("section", "option", "default"):
            table.add_column(col)
        for section, values in config.to_dict().items():
            for name, value in values.items():
                # The bare name reaches the first section that has it; others need the dotted name.
                bare = config.locate(name) == (section, name)
                option = "--" + (name if bare else f"{section}.{name}").replace("_", "-")
                table.add_row(section, option, str(value))
        out_console.print(table)
        return
    table = Table(show_header=False, box=None)
    rows = [
        ("nlpcli", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("cuda", f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "not available"),
        (
            "mps",
            "available"
            if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
            else "not available",
        ),
        ("cpu threads", str(torch.get_num_threads())),
        ("tasks", ", ".join(task_names())),
    ]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        rows.append((f"cuda:{i}", torch.cuda.get_device_name(i)))
    try:
        import transformers

        rows.insert(3, ("transformers", transformers.__version__))
    except ImportError:
        rows.insert(3, ("transformers", "not installed"))
    for k, v in rows:
        table.add_row(k, v)
    out_console.print(table)
