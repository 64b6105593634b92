"""The packages form layers, and every import runs down them (docs/design.md, "Layout").

``test_import_graph.py`` forbids cycles between modules; this forbids the wider loops
that a module-level cycle check misses: a package importing one that sits above it,
even inside a function. The layers, lowest first:

0. ``raft_core``: the engine and the node; it knows nothing of the manager;
1. ``mcp_server.core``: models, errors, config, policy, plans, approvals, audit, the
   guard, the cluster view, the operation context and the adapter port;
2. ``mcp_server.clients``: the members' API clients (HTTP exchange, etcd gateway, TLS);
3. ``mcp_server.local``: local clusters' processes and state files;
4. ``mcp_server.adapters``: one ``ClusterAdapter`` per kind, and the process control
   of local clusters they use;
5. ``mcp_server.operations``: one module per operation, given an ``OperationContext``;
6. ``mcp_server.manager``: the composition (``Manager``, ``make_adapter``);
7. the faces: ``cli``, ``mcp`` and ``server``, ``bench``, ``chaos``.

An import within a layer is allowed; one into a higher layer fails the test, as does a
module that no layer names (a new package must be placed deliberately).
"""

from __future__ import annotations

import pytest
from test_import_graph import import_graph

LAYERS: list[tuple[str, ...]] = [
    ("raft_core", "mcp_server"),  # mcp_server itself: the package root, an empty namespace
    ("mcp_server.core",),
    ("mcp_server.clients",),
    ("mcp_server.local",),
    ("mcp_server.adapters",),
    ("mcp_server.operations",),
    ("mcp_server.manager",),
    (
        "mcp_server.bench",
        "mcp_server.chaos",
        "mcp_server.cli",
        "mcp_server.mcp",
        "mcp_server.server",
    ),
]


def layer_of(module: str, layers: list[tuple[str, ...]] = LAYERS) -> int | None:
    """The layer of ``module``: that of the longest layer prefix it falls under."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, prefixes in enumerate(layers):
        for p in prefixes:
            under = module == p or module.startswith(p + ".")
            if under and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return best[1] if best else None


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, ...]] = LAYERS) -> list[str]:
    """Every edge from a module into a higher layer, as ``"a (layer i) -> b (layer j)"``."""
    bad = []
    for a in sorted(graph):
        la = layer_of(a, layers)
        for b in sorted(graph[a]):
            lb = layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                bad.append(f"{a} (layer {la}) -> {b} (layer {lb})")
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """The project's imports, function-local ones included (read once: ~2 s)."""
    return import_graph(every_import=True)


def test_every_module_has_a_layer(graph):
    assert len(graph) > 50  # the walk found the project
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"place these in LAYERS: {unplaced}"


def test_no_import_runs_back_up_the_layers(graph):
    bad = upward_imports(graph)
    assert not bad, "imports running up the layers:\n" + "\n".join(bad)


def test_the_core_imports_nothing_of_mcp_server_above_it(graph):
    core = [m for m in graph if m == "mcp_server.core" or m.startswith("mcp_server.core.")]
    assert len(core) >= 10
    for m in core:
        outside = {
            t
            for t in graph[m]
            if t.startswith("mcp_server.") and not t.startswith("mcp_server.core")
        }
        assert not outside, f"{m} imports {sorted(outside)}"


def test_the_checker_flags_an_upward_import():
    layers = [("low",), ("mid",), ("high",)]
    graph = {"low.a": {"mid.b"}, "mid.b": {"low.a"}, "high": {"mid.b", "low.a"}}
    assert upward_imports(graph, layers) == ["low.a (layer 0) -> mid.b (layer 1)"]
    assert layer_of("mid.b.c", layers) == 1
    assert layer_of("midway", layers) is None
