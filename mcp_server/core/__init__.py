"""The manager core: the Manager, its models and errors, plans, policy, audit, the view.

Faces import from here: ``from mcp_server.core import Manager, ClusterStatus, Refused``.
The models and errors are imported eagerly; ``Manager`` (and ``list_clusters``) are
resolved on first use, because the manager sits above the operations and adapters,
which themselves import the core's models and errors: importing
``mcp_server.core.errors`` must not drag the whole manager in.
"""

from __future__ import annotations

from typing import Any

from .config import ClusterConfig, Config, load_config
from .context import ProgressFn
from .errors import ConfigError, ManagerError, NodeRequestError, NotSupported, Refused, Unreachable
from .models import (
    BenchResult,
    Check,
    ClusterInfo,
    ClusterList,
    ClusterStatus,
    DemoReport,
    DemoStep,
    Divergence,
    ElectionOutcome,
    ElectionResult,
    ElectRequest,
    ErrorReport,
    FaultKind,
    FaultOutcome,
    FaultRequest,
    FaultResult,
    HealthReport,
    HealthRequest,
    KVEntry,
    LocalClusterState,
    LocalNodeInfo,
    LocalStart,
    Member,
    MembershipAction,
    MembershipChange,
    MembershipOutcome,
    MembershipRequest,
    Mode,
    NodeSnapshot,
    Outcome,
    Plan,
    PlanStep,
    RaftGroup,
    ReadRequest,
    ReadResult,
    RecoverOutcome,
    RecoverRequest,
    RecoverResult,
    ReplicateOutcome,
    ReplicateRequest,
    ReplicateResult,
    Request,
    Role,
    SnapshotOutcome,
    SnapshotRequest,
    SnapshotResult,
    StepResult,
    VerifyReport,
    WrittenEntry,
)

_LAZY = {"Manager", "list_clusters"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import manager

        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BenchResult",
    "Check",
    "ClusterConfig",
    "ClusterInfo",
    "ClusterList",
    "ClusterStatus",
    "Config",
    "ConfigError",
    "DemoReport",
    "DemoStep",
    "Divergence",
    "ElectRequest",
    "ElectionOutcome",
    "ElectionResult",
    "ErrorReport",
    "FaultKind",
    "FaultOutcome",
    "FaultRequest",
    "FaultResult",
    "HealthReport",
    "HealthRequest",
    "KVEntry",
    "LocalClusterState",
    "LocalNodeInfo",
    "LocalStart",
    "Manager",
    "ManagerError",
    "Member",
    "MembershipAction",
    "MembershipChange",
    "MembershipOutcome",
    "MembershipRequest",
    "Mode",
    "NodeRequestError",
    "NodeSnapshot",
    "NotSupported",
    "Outcome",
    "Plan",
    "PlanStep",
    "ProgressFn",
    "RaftGroup",
    "ReadRequest",
    "ReadResult",
    "RecoverOutcome",
    "RecoverRequest",
    "RecoverResult",
    "Refused",
    "ReplicateOutcome",
    "ReplicateRequest",
    "ReplicateResult",
    "Request",
    "Role",
    "SnapshotOutcome",
    "SnapshotRequest",
    "SnapshotResult",
    "StepResult",
    "Unreachable",
    "VerifyReport",
    "WrittenEntry",
    "list_clusters",
    "load_config",
]
