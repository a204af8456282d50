"""The layout by layer: every public path the docs name exists, and imports point down only.

Why: the README and docs tell users and contributors where things are (``from
meshsyncd.client import Client``, ``meshsyncd/node/links.py``); a move that leaves them
pointing at nothing is a broken promise. The layer rule (README "What is here") keeps the
packages from growing back into a tangle: a module never imports one from a layer above it.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "systemd/README.md"]

# Layer of each package or top-level module; an import may only go to the same or a lower one.
LAYERS = {
    "commands": 6,
    "bench": 6,
    "node": 5,
    "mesh": 4,
    "control": 4,
    "metrics": 4,
    "client": 4,
    "aclient": 4,
    "aconn": 4,
    "calls": 4,
    "results": 4,
    "langgraph": 5,
    "filters": 4,
    "mcpserver": 5,
    "engine": 3,
    "aengine": 3,
    "stamp": 3,
    "conditions": 3,
    "resolve": 3,
    "store": 2,
    "config": 2,
    "identity": 1,
    "clock": 1,
    "logs": 1,
    "fsutil": 0,
    "ids": 0,
    "__version__": 0,
}
# The control client speaks the socket's vocabulary (control.proto), which imports nothing
# from the server side: that one edge goes "up" by name only.
ALLOWED = {("client", "control.proto"), ("calls", "control.proto")}
# Modules of the optional extras (meshsyncd[langgraph], meshsyncd[mcp]): a doc may name a
# module that needs one when it is not installed.
OPTIONAL_EXTRAS = {"langgraph", "mcp"}


def _doc_text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def test_every_module_path_named_in_the_docs_imports() -> None:
    names = set(re.findall(r"\bmeshsyncd(?:\.[a-z_]+)+", _doc_text()))
    names = {
        n for n in names if not n.endswith((".toml", ".pid", ".lock", ".service", ".sysusers"))
    }
    names = {n for n in names if n.split(".")[-1] not in {"conf", "md"}}
    assert "meshsyncd.client" in names  # the README's own example
    for name in sorted(names):
        module, _, attribute = name, "", ""
        while True:
            try:
                loaded = importlib.import_module(module)
                break
            except ModuleNotFoundError as exc:
                if exc.name in OPTIONAL_EXTRAS:  # meshsyncd.langgraph without langgraph
                    loaded = None
                    break
                module, _, tail = module.rpartition(".")
                attribute = f"{tail}.{attribute}".strip(".")
                assert module, f"{name}: no such module"
        for part in filter(None, attribute.split(".")):
            if loaded is not None:
                loaded = getattr(loaded, part)


def test_every_file_path_named_in_the_docs_exists() -> None:
    paths = set(
        re.findall(r"`((?:meshsyncd|protocol|tests|systemd|docs|fuzz)/[\w/.-]*)`", _doc_text())
    )
    assert "meshsyncd/node/" in paths
    for path in sorted(paths):
        assert (ROOT / path).exists(), path


def test_public_imports_of_the_readme() -> None:
    from meshsyncd.client import Client
    from meshsyncd.config import Config, load_config
    from meshsyncd.control.server import ControlServer
    from meshsyncd.node.daemon import Daemon

    assert all((Client, Config, load_config, ControlServer, Daemon))


def _layer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "meshsyncd" or len(parts) < 2:
        return None
    return parts[1], LAYERS[parts[1]]


def _imports(path: Path, module: str) -> list[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
            found += [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.startswith("meshsyncd.")]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "meshsyncd").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_imports_point_down(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    here = _layer(module)
    if here is None:
        return
    for target in _imports(path, module):
        there = _layer(target)
        if there is None or there[0] == here[0]:
            continue
        edge = (here[0], ".".join(target.split(".")[1:3]))
        assert there[1] <= here[1] or edge in ALLOWED, f"{module} imports {target} (layer up)"


def test_control_server_is_not_imported_by_the_ops() -> None:
    ops = ROOT / "meshsyncd/control/ops.py"
    assert not [t for t in _imports(ops, "meshsyncd.control.ops") if "server" in t]
