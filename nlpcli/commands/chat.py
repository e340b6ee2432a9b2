"""`nlpcli chat`: an interactive multi-turn chat in the terminal (replies stream as they are generated)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from .common import DEVICE_HELP, PRECISION_HELP, SAVED_SEED_HELP, cli_errors, err_console, print_note

HELP = "commands: /reset forgets the conversation, /exit (or Ctrl-D) leaves"


@cli_errors
def chat(
    model: str = typer.Option(
        ..., "--model", "-m", help="A `chat` checkpoint or training output directory.", metavar="DIR"
    ),
    max_turns: int = typer.Option(
        10, "--max-turns", help="History limit: the latest turns kept (yours and the bot's).", metavar="N"
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Sampling temperature; 0: greedy.", metavar="T"
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", help="Sample among the k most likely tokens (0: off).", metavar="K"
    ),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling mass (1: off).", metavar="P"),
    repetition_penalty: float | None = typer.Option(
        None, "--repetition-penalty", help="> 1 discourages repeats.", metavar="R"
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Longest reply in tokens.", metavar="N"),
    seed: int | None = typer.Option(None, "--seed", help=SAVED_SEED_HELP, metavar="N"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP, metavar="PRECISION"),
) -> None:
    """Chat with a trained model in the terminal; the defaults of the decoding options come from the checkpoint."""
    from .. import api
    from ..errors import NlpcliError

    given = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "max_new_tokens": max_new_tokens,
    }
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    pipe: Any = api.load(model, task="chat", device=device, precision=precision, **overrides).pipeline
    print_note(pipe.precision_note)
    session = pipe.session(max_turns=max_turns, seed=seed)
    interactive = sys.stdin.isatty()
    if interactive:
        err_console.print(HELP, highlight=False)
    while True:
        if interactive:
            sys.stdout.write("you> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            session.reset()
            print("(conversation reset)", flush=True)
            continue
        if text.startswith("/"):
            print(f"(unknown command {text}; {HELP})", flush=True)
            continue
        sys.stdout.write("bot> ")
        try:
            for piece in session.send(text):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except NlpcliError as e:
            err_console.print(f"[red]error:[/] {e}", highlight=False)
        sys.stdout.write("\n")
        sys.stdout.flush()
