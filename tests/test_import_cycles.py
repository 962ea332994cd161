"""No import cycles inside ``ganzoo/``: the import graph of every module, built with ``ast``
(relative imports resolved; ``from pkg import name`` points at ``pkg.name`` when that is a module,
else at ``pkg``), has no cycle. Imports inside functions count too: a function-local import that
only dodges a cycle at import time is still a cycle between the two modules. Imports under
``if TYPE_CHECKING:`` are not run and do not count.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ganzoo"

#: Function-local imports allowed to close a cycle, each with its reason (none in ganzoo/training).
ALLOWED_LAZY = {
    # the Triton kernel module imports triton at module level, so ops.attention imports it only when
    # called; its backward under create_graph=True uses attention's dense reference gradients
    ("ganzoo.ops._attention_triton", "ganzoo.ops.attention"),
    # plugins load on the first use of a registry: the built-in blocks first, then each plugin's
    # callable, which is handed the registry module (a callback, by design of the plugin system)
    ("ganzoo.plugins", "ganzoo.blocks"),
    ("ganzoo.plugins", "ganzoo.registry"),
}


def module_names() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(name: str, path: Path, is_pkg: bool, modules: dict) -> dict[str, bool]:
    """Modules of ``ganzoo`` that module ``name`` imports -> whether only inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    out: dict[str, bool] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            if t in modules and t != name:
                out[t] = out.get(t, True) and id(node) in local
    return out


def import_graph() -> dict[str, dict[str, bool]]:
    modules = module_names()
    return {name: imports_of(name, path, is_pkg, modules) for name, (path, is_pkg) in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "ganzoo.training.build" in graph["ganzoo.training.step"]
    assert graph["ganzoo.training.step"]["ganzoo.training.build"] is False  # module level
    assert graph["ganzoo.ops.attention"]["ganzoo.ops._attention_triton"] is True  # inside a function
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(cyclic) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_inside_ganzoo():
    graph = import_graph()
    edges = {m: {t for t in targets if (m, t) not in ALLOWED_LAZY} for m, targets in graph.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} ({'in a function' if graph[a][b] else 'module level'})" for a, b in zip(cycle, cycle[1:])
    ) + f" -> {cycle[-1]}"
    for a, b in ALLOWED_LAZY:  # an allowed edge stays a function-local import
        assert graph[a].get(b) is True, (a, b)
