"""The shape of the library: no two fer_lib modules import each other, and no module grows past a size.

Every ``import`` / ``from ... import`` statement counts, wherever it stands (module level, inside a
function, under ``if TYPE_CHECKING``): a deferred import hides a circle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fer_lib

ROOT = Path(fer_lib.__file__).resolve().parent
#: Modules allowed past MAX_LINES: the synthetic data generator's drawing and file writers, one
#: format after another (long, but each part stands alone).
LONG_MODULES = {"fer_lib.datasets._render", "fer_lib.datasets.synthetic"}
MAX_LINES = 800


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of fer_lib (a package is its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The fer_lib modules that ``name`` (file ``path``) imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import mod`` imports the submodule ``pkg.mod``; ``from mod import name``: ``mod``
            targets = [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import fer_lib.a.b`` names fer_lib.a.b; a name that is not a module is an attribute
            while target and target not in modules:
                target = target.rpartition(".")[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_relative_deferred_and_absolute_imports():
    graph = import_graph()
    # a relative import at module level, inside a function, and ``from package import submodule``
    assert "fer_lib.models.checkpoint" in graph["fer_lib.models"]
    assert "fer_lib.io" in graph["fer_lib.models.checkpoint"]
    assert "fer_lib.export" in graph["fer_lib.serving.backends"]  # deferred: ONNX export on load
    assert "fer_lib.config" in graph["fer_lib"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_no_import_circle_in_fer_lib():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_modules_stay_short():
    long = {
        name: n
        for name, path in module_files().items()
        if name not in LONG_MODULES and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"
