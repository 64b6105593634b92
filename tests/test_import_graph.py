"""No import cycles anywhere in the project (``raft_core`` and ``mcp_server``).

The graph is read from the source, not from ``sys.modules``: an edge A -> B for every
module-level import in A, including those under ``if TYPE_CHECKING`` (a dependency
for the type checker is still a dependency), and, because importing ``p.q.r`` first
initializes ``p`` and ``p.q``, an edge to each of those packages too (unless it is one
of A's own enclosing packages, which are already initializing when A runs). Imports
inside functions run only when called and are not edges; the project uses one, on
purpose: ``mcp_server.core`` resolves ``Manager`` lazily (see its docstring).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("raft_core", "mcp_server")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for h in node.handlers:
                    walk(h.body)
                walk(node.orelse)
                walk(node.finalbody)

    walk(tree.body)
    return found


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    if isinstance(node, ast.Import):
        bases = [a.name for a in node.names]
        subs: list[str] = []
    else:
        if node.level:
            here = name.split(".") if is_pkg else name.split(".")[:-1]
            anchor = here[: len(here) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        bases = [base]
        subs = [f"{base}.{a.name}" for a in node.names]
    out = set()
    for mod in [*bases, *subs]:
        if mod not in known:
            continue
        parts = mod.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    own = name.split(".")
    ancestors = {".".join(own[:i]) for i in range(1, len(own) + (0 if not is_pkg else 1))}
    return {t for t in out if t in known and t not in ancestors and t != name}


def _every_import(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def import_graph(*, every_import: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at module level, or anywhere in it with
    ``every_import``)."""
    mods = _modules()
    collect = _every_import if every_import else _module_level_imports
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in collect(tree):
            edges |= _targets(name, path, node, known)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_the_project_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the project
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_operations_do_not_import_the_manager():
    graph = import_graph()
    ops = [m for m in graph if m.startswith("mcp_server.operations.")]
    assert ops
    for m in ops:
        assert "mcp_server.manager" not in graph[m], m
