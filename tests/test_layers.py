"""The import graph of `nlpcli/` keeps to the layer order of docs/code-layout.md: no circle, no import that
climbs from a lower layer to a higher one.

Every `import` counts, wherever it stands: at the top, inside a function (a lazy import still makes the
module depend on the other) and under `if TYPE_CHECKING:` (a type named from above is a dependency too).
Imports inside one layer may point either way, as long as they make no circle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from util import ROOT

PACKAGE = ROOT / "nlpcli"
LAYOUT = ROOT / "docs" / "code-layout.md"


def layers() -> list[list[str]]:
    """The layers, top first, as the ```layers block of the layout doc lists them: one line per layer, its
    modules relative to `nlpcli/`, a package with a trailing slash, `__init__` for the package itself."""
    found = re.search(r"^```layers\n(.*?)^```", LAYOUT.read_text(encoding="utf-8"), re.M | re.S)
    assert found, f"{LAYOUT}: no ```layers block"
    out = []
    for line in found.group(1).splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            out.append(["nlpcli" if w == "__init__" else "nlpcli." + w.strip("/").replace("/", ".") for w in words])
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(module of nlpcli, line) of each import in a module, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import mod` depends on pkg.mod; `from pkg import name` on pkg itself
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                yield target, node.lineno


def layer_of(name: str, order: list[list[str]]) -> int | None:
    """The index of the layer holding a module: the longest listed name that is it or a package above it."""
    best: tuple[int, int] | None = None
    for i, layer in enumerate(order):
        for entry in layer:
            inside = name == entry or (entry != "nlpcli" and name.startswith(entry + "."))
            if inside and (best is None or len(entry) > best[0]):
                best = (len(entry), i)
    return None if best is None else best[1]


def graph() -> dict[str, dict[str, int]]:
    mods = modules()
    known = set(mods)
    out: dict[str, dict[str, int]] = {name: {} for name in mods}
    for name, path in mods.items():
        for target, line in imported(name, path, known):
            out[name].setdefault(target, line)
    return out


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, dict[str, int]], order: list[list[str]]) -> list[str]:
    out = []
    for name, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            a, b = layer_of(name, order), layer_of(target, order)
            if a is not None and b is not None and b < a:
                out.append(f"{name}:{line} imports {target} (layer {b + 1} above {a + 1})")
    return out


def test_every_module_has_a_layer() -> None:
    order = layers()
    assert len(order) >= 5
    unplaced = [name for name in modules() if layer_of(name, order) is None]
    assert not unplaced, f"place these in the ```layers block of {LAYOUT.name}: {unplaced}"


def test_no_import_circle() -> None:
    found = circles(graph())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_no_import_climbs_a_layer() -> None:
    found = upward(graph(), layers())
    assert not found, "\n".join(found)


def test_the_checks_see_a_circle_and_a_climb() -> None:
    """The checks themselves: a made-up graph with one circle and one import from the bottom to the top."""
    edges = {"nlpcli.a": {"nlpcli.b": 1}, "nlpcli.b": {"nlpcli.a": 2}, "nlpcli.z": {"nlpcli.a": 3}}
    assert circles(edges) == [["nlpcli.a", "nlpcli.b"]]
    assert upward(edges, [["nlpcli.a", "nlpcli.b"], ["nlpcli.z"]]) == ["nlpcli.z:3 imports nlpcli.a (layer 1 above 2)"]
    assert layer_of("nlpcli.tasks.qa.pipeline", [["nlpcli.tasks"], ["nlpcli.tasks.qa"]]) == 1  # the longest name wins
