"""The MCP contract's tools (docs/design.md, section 6): one generic body over the
catalog (``core/catalog.py``), each tool a thin face over one ``Manager`` method.

The catalog says what a tool is (toolset, description, annotations, method, result
model, CLI hint); this module adds only what is MCP's own: each tool's arguments, with
the descriptions a model reads. A tool answers the document ``raft-manager ... --json``
prints, as structured output with an output schema whose root is an object at every
protocol revision (``elect_leader`` answers one ``ElectionAnswer`` whose ``outcome``
says planned or applied); its text is a summary line and compact JSON (``results.py``).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from .. import core
from ..chaos import models as chaos_models
from ..chaos.schedule import ALL as NEMESES
from ..core import Config, FaultKind, KVEntry, MembershipAction, Outcome, ProgressFn
from ..core.catalog import TOOLS, ToolEntry
from ..core.config import state_dir
from ..manager import Manager, list_clusters
from . import results
from .backend import Backend

# Undescribed on purpose: the server's instructions say it once for every tool (a
# description here costs tools/list about 700 characters).
ClusterArg = str | None
PlanIdArg = Annotated[str | None, Field(description="apply this dry run's plan")]
GroupArg = str | None
Nemesis = Literal[NEMESES]  # type: ignore[valid-type]
MAX_CHAOS_S = 600.0

# Each tool's arguments: name -> (annotation, default); ``inspect.Parameter.empty``
# marks a required one. ``cluster`` comes first in every tool but list_clusters.
_REQUIRED = inspect.Parameter.empty
ARGUMENTS: dict[str, dict[str, tuple[Any, Any]]] = {
    "list_clusters": {},
    "cluster_status": {
        "cluster": (ClusterArg, None),
        "group": (GroupArg, None),
        "group_offset": (Annotated[int, Field(ge=0)], 0),
    },
    "health_check": {
        "cluster": (ClusterArg, None),
        "operation": (
            Annotated[str | None, Field(description="the tool you intend, e.g. elect_leader")],
            None,
        ),
        "group": (GroupArg, None),
    },
    "verify_consistency": {"cluster": (ClusterArg, None), "group": (GroupArg, None)},
    "read": {
        "key": (Annotated[str, Field(min_length=1)], _REQUIRED),
        "cluster": (ClusterArg, None),
        "consistency": (Literal["linearizable", "stale"], "linearizable"),
    },
    "replicate": {
        "entries": (
            Annotated[list[KVEntry], Field(min_length=1, description="value null deletes")],
            _REQUIRED,
        ),
        "cluster": (ClusterArg, None),
    },
    "elect_leader": {
        "cluster": (ClusterArg, None),
        "target": (Annotated[str | None, Field(description="voter to lead, e.g. n2")], None),
        "dry_run": (Annotated[bool, Field(description="only plan")], False),
        "plan_id": (PlanIdArg, None),
        "group": (GroupArg, None),
    },
    "change_membership": {
        "action": (MembershipAction, _REQUIRED),
        "node_id": (Annotated[str, Field(min_length=1, description="e.g. n4")], _REQUIRED),
        "cluster": (ClusterArg, None),
        "peer_address": (
            Annotated[str | None, Field(description="HOST:PORT for peers (remote, adding)")],
            None,
        ),
        "api_address": (
            Annotated[str | None, Field(description="HOST:PORT of its API (remote, adding)")],
            None,
        ),
        "dry_run": (Annotated[bool, Field(description="only plan (default)")], True),
        "plan_id": (PlanIdArg, None),
    },
    "snapshot": {
        "cluster": (ClusterArg, None),
        "node": (Annotated[str | None, Field(description="one member; omit for all")], None),
        "group": (GroupArg, None),
    },
    "recover_node": {
        "node_id": (Annotated[str, Field(min_length=1)], _REQUIRED),
        "cluster": (ClusterArg, None),
        "group": (GroupArg, None),
    },
    "inject_fault": {
        "kind": (FaultKind, _REQUIRED),
        "nodes": (Annotated[list[str], Field(description='member ids, e.g. ["n3"]')], _REQUIRED),
        "cluster": (ClusterArg, None),
    },
    "chaos": {
        "duration_s": (Annotated[float, Field(gt=0, le=MAX_CHAOS_S)], _REQUIRED),
        "cluster": (ClusterArg, None),
        "nemesis": (
            Annotated[list[Nemesis] | None, Field(description="fault kinds; omit for all")],
            None,
        ),
        "seed": (Annotated[int | None, Field(description="replay a run by its seed")], None),
    },
}

Call = Callable[[Manager, ProgressFn], BaseModel]


def result_model(entry: ToolEntry) -> type[BaseModel]:
    """The model the catalog names for ``entry``'s answer."""
    return getattr(core, entry.result, None) or getattr(chaos_models, entry.result)


def annotations(entry: ToolEntry) -> ToolAnnotations:
    return ToolAnnotations(  # the title is the tool's own, not repeated here
        read_only_hint=entry.read_only,
        destructive_hint=entry.destructive,
        idempotent_hint=entry.idempotent,
        open_world_hint=entry.open_world,
    )


def _manager_call(entry: ToolEntry, args: dict[str, Any]) -> Call:
    """Call the entry's ``Manager`` method; a mutation's outcome becomes its document."""

    method = entry.method
    assert method is not None, f"{entry.name} names no Manager method"

    def call(m: Manager, progress: ProgressFn) -> BaseModel:
        extra = {} if entry.read_only else {"progress": progress}
        answer = getattr(m, method)(**args, **extra)
        return answer.document() if isinstance(answer, Outcome) else answer

    return call


def _chaos_call(args: dict[str, Any]) -> Call:
    """A chaos run on the manager's cluster, seeded (a random seed is reported back)."""
    from ..chaos import ChaosOptions, run_chaos
    from ..chaos.runner import default_out_dir

    seed = args["seed"] if args["seed"] is not None else random.randrange(1_000_000)

    def call(m: Manager, progress: ProgressFn) -> BaseModel:
        opts = ChaosOptions(
            duration_s=args["duration_s"],
            nemeses=list(dict.fromkeys(args["nemesis"] or NEMESES)),
            seed=seed,
            out_dir=default_out_dir(seed),
            cluster=m.cluster,
            config=m.config,
        )
        return run_chaos(opts, progress=progress)

    return call


def register(server: MCPServer, backend: Backend, cfg: Config) -> None:
    """Add every catalog tool to ``server``, each with the one generic body."""
    for entry in TOOLS:
        server.add_tool(
            _tool_function(entry, backend, cfg),
            name=entry.name,
            title=entry.title,
            description=entry.description,
            annotations=annotations(entry),
            meta={"toolset": entry.toolset},
        )


def _tool_function(entry: ToolEntry, backend: Backend, cfg: Config) -> Callable[..., Any]:
    """The tool's function: the generic body behind the signature its arguments make
    (the SDK reads the input schema from the signature and the output schema from the
    return annotation)."""
    model = result_model(entry)

    async def tool(ctx: Context, **args: Any) -> CallToolResult:
        if entry.name == "list_clusters":  # the configuration only: no manager, no start
            doc = list_clusters(cfg)
            doc.state_dir = str(state_dir())
            return results.result(doc)
        cluster = args.pop("cluster", None)
        call = _chaos_call(args) if entry.name == "chaos" else _manager_call(entry, args)
        answer = await backend.run(
            ctx,
            cluster,
            call,
            mutation=not entry.read_only,
            cli=None if entry.read_only or entry.plans else entry.cli.format(**args),
        )
        return results.result(answer)

    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    for name, (annotation, default) in ARGUMENTS[entry.name].items():
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
            )
        )
    tool.__signature__ = inspect.Signature(params, return_annotation=model)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": model}
    tool.__name__ = entry.name
    return tool
