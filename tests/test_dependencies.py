"""Dependencies point one way: every module imports, and none imports a room above its own.

    core <- dsml <- engine <- tools <- memory      (memory keeps its files in a tools Root)
                    engine <- budget
    tools, memory, budget <- agent <- tui, daemon (agent/daemon), training

The graph is read from the source (the AST), so a lazy import inside a function, an import
under ``TYPE_CHECKING`` and a module named in an ``import_module("whalebone.…")`` string all
count: "not even lazily".
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A room's rank: it may import rooms of a lower rank, and the rooms ALSO lists.
RANK = {"core": 0, "dsml": 1, "engine": 2, "tools": 3, "memory": 3, "budget": 3, "agent": 4,
        "tui": 5, "daemon": 5, "training": 5, "front": 6}
ALSO = {"memory": {"tools"}}
# The front door may import every room: the root package (its lazy public names) and the
# command line, which assembles each room's commands by module name (agent/cli.py lives in
# agent/ for its history: ``python -m whalebone.agent.cli`` is how scripts run whalebone).
FRONT = {"whalebone", "whalebone.agent.cli"}


def room_of(module: str) -> str | None:
    """The room a ``whalebone.…`` module belongs to (None for a module outside the package)."""
    if module in FRONT:
        return "front"
    parts = module.split(".")
    if parts[0] != "whalebone" or len(parts) < 2:
        return None
    if parts[1:3] == ["agent", "daemon"]:
        return "daemon"
    return parts[1] if parts[1] in RANK else None


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "bench", "build", ".venv") or rel.parts[0].startswith("."):
            continue
        name = ".".join(("whalebone", *rel.with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every whalebone module the file names: import statements anywhere
    (functions, ``if TYPE_CHECKING``), relative ones resolved against ``package`` (the file's
    own), and string constants passed to ``import_module`` or kept in tables of module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if package is None:
        package = ".".join(("whalebone", *path.relative_to(ROOT).parent.parts))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("whalebone.") and node.value.isascii() \
                and all(p.isidentifier() for p in node.value.split(":")[0].split(".")):
            found.append((node.lineno, node.value.split(":")[0]))
    return [(line, m) for line, m in found if m.split(".")[0] == "whalebone"]


def violations() -> list[str]:
    known = modules()
    bad = []
    for name, path in known.items():
        here = room_of(name)
        if here is None or here == "front":
            continue
        for line, target in imports_of(path):
            there = room_of(target)
            if there is None or there == here:
                continue
            if RANK[there] < RANK[here] or there in ALSO.get(here, ()):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target} ({there})")
    return bad


def test_no_module_imports_a_room_above_its_own() -> None:
    assert violations() == []


def test_the_checker_sees_lazy_typed_and_string_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from whalebone.agent.agent import Agent\n"
        "def f():\n    import whalebone.tui.app\n"
        "MODULES = ['whalebone.budget.cli']\n"
        "importlib.import_module('whalebone.memory')\n"
        "from .home import home\n", encoding="utf-8")
    named = {m for _, m in imports_of(source, "whalebone.core")}
    assert {"whalebone.agent.agent", "whalebone.tui.app", "whalebone.budget.cli",
            "whalebone.memory", "whalebone.core.home"} <= named
    assert room_of("whalebone.agent.daemon.jobs") == "daemon"
    assert room_of("whalebone.agent.cli") == "front" and room_of("whalebone.core.home") == "core"


@pytest.mark.parametrize("name", [n for n in modules() if not n.endswith("__main__")])
def test_every_module_imports(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:  # an optional extra (torch, textual, mcp) not installed
        pytest.skip(f"{name} needs {e.name}")
