"""The package's shape: imports point one way, and the type checker agrees with the code.

``realip`` ships ``py.typed``, so its annotations are part of the API; mypy in
strict mode runs over it here (configured in ``pyproject.toml``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "realip"

#: Imports inside a function, each for a reason: the command it serves needs an
#: optional dependency (uvicorn) or work nobody else should pay for at import.
LAZY_IMPORTS = {
    ("realip.__main__", "realip.serve"),  # `realip serve` needs uvicorn
    ("realip.__main__", "realip.ranges.cli"),
    ("realip.serve", "realip"),  # realip.uvicorn, checked when the server starts
    ("realip.ranges.cli", "realip.ranges.fetch"),  # urllib and the fetchers: only for `ranges update`
}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(module: str, node: ast.ImportFrom, package: bool) -> str:
    base = module.split(".") if package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """Module -> the realip modules it imports at its top level; and the (module, target) pairs imported lazily."""
    modules = {_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    lazy: set[tuple[str, str]] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        package = path.name == "__init__.py"
        found: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # annotations only
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.level:
                    target = _target(module, sub, package)
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in sub.names if f"{target}.{a.name}" in modules)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and sub.level:
                        lazy.add((module, _target(module, sub, package)))
        graph[module] = {m for m in found if m in modules and m != module}
    return graph, lazy


def test_no_import_cycles() -> None:
    graph, _ = _imports()
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_import_hidden_in_a_function_to_dodge_a_cycle() -> None:
    _, lazy = _imports()
    assert lazy <= LAZY_IMPORTS, sorted(lazy - LAZY_IMPORTS)


def test_the_core_imports_no_adapter_and_no_server() -> None:
    """Arrows point down: the decision knows nothing of ASGI, WSGI, sockets or servers."""
    graph, _ = _imports()
    below = {"realip.core", "realip.memory", "realip.config", "realip.strategies", "realip.forwarding",
             "realip.address", "realip.result", "realip.errors"}  # fmt: skip
    for module in below:
        assert graph[module] <= below | {"realip._log", "realip.ranges", "realip.ranges.lists"}, module


def test_mypy_strict_over_the_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "realip"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:]
