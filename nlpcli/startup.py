"""A command's start-up without the garbage collector.

Starting a command imports torch and the command's modules and loads a model: a few hundred thousand objects,
almost none of them garbage, which the collector still walks several times over (about a seventh of a one-line
`predict`'s CPU time). So the CLI pauses the collector first (`pause`), and `resume`, once a model is loaded or
a training begins, freezes what start-up made (later collections skip it) and turns the collector back on. In
a program that did not call `pause` (the Python API, a server's model process, the tests) `resume` does nothing.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off until `resume` (unless it is off already: then it stays as its owner left it)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """After `pause`: freeze the objects made so far out of later collections and turn the collector on."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
