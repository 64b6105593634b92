"""The adapter interface every cluster kind implements.

The operations (``mcp_server/operations/``) only speak this interface. It is deliberately
shaped so that etcd fits as well as raft_core:

- leadership moves only through the current leader (``transfer_leadership`` is sent
  to it); ``supports_campaign`` says whether a member can be told to start an
  election (raft_core: yes; etcd: no);
- membership is add-learner / promote / remove, and the cluster itself may refuse to
  promote a learner that is not in sync (the manager checks first anyway);
- ``state_digest`` compares applied state; ``supports_log_digests`` says whether
  per-entry log digests exist (raft_core: yes; etcd reports hashes, not digests);
- ``can_control_processes`` says whether the adapter can kill/start member processes
  (local raft_core clusters only); otherwise recovery is the operator's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    match: int
    next: int
    state: str
    learner: bool = False
    recent_active: bool = True


@dataclass
class NodeStatus:
    """One member as it answered (or failed to answer) a status request."""

    id: str
    reachable: bool
    api_address: str | None = None
    role: str = "unknown"
    term: int | None = None
    leader: str | None = None
    commit_index: int | None = None
    applied_index: int | None = None
    last_index: int | None = None
    last_term: int | None = None
    first_index: int | None = None
    snapshot_index: int | None = None
    voters: list[str] = field(default_factory=list)
    voters_outgoing: list[str] = field(default_factory=list)
    learners: list[str] = field(default_factory=list)
    joint: bool = False
    pending_conf_index: int | None = None
    transferring_to: str | None = None
    progress: dict[str, Progress] | None = None
    faults: dict[str, Any] | None = None
    addresses: dict[str, str | None] = field(default_factory=dict)  # members' API addresses
    error: str | None = None
    process: str | None = None  # "running" / "stopped" when the adapter controls processes
    pid: int | None = None


@dataclass
class StateDigest:
    index: int
    term: int | None
    chain: str
    state_hash: str | None = None


@dataclass
class LogEntryDigest:
    index: int
    term: int
    type: str
    digest: str


@dataclass
class LogSlice:
    first_index: int
    last_index: int
    entries: list[LogEntryDigest]


@dataclass
class ConfResult:
    index: int | None
    voters: list[str]
    learners: list[str]


@dataclass
class WriteResult:
    index: int
    term: int
    node: str | None
    deleted: bool | None = None


@dataclass
class ReadOutcome:
    value: str | None
    applied_index: int | None
    node: str | None


@dataclass
class NewProcess:
    id: str
    peer_address: str
    api_address: str


class ClusterAdapter(ABC):
    kind: str = "?"
    supports_campaign: bool = False
    supports_log_digests: bool = False
    supports_faults: bool = False
    can_control_processes: bool = False

    # -- observation ---------------------------------------------------------------

    @abstractmethod
    def statuses(self) -> dict[str, NodeStatus]:
        """Every known member (configured, discovered, or local process), by id."""

    @abstractmethod
    def status(self, node: str) -> NodeStatus: ...

    @abstractmethod
    def state_digest(self, node: str, at: int | None = None) -> StateDigest:
        """Applied-state hash of ``node`` (at index ``at`` when it still retains it)."""

    def log_digests(self, node: str, start: int, end: int) -> LogSlice:
        from ..core.errors import NotSupported

        raise NotSupported(f"{self.kind} clusters do not expose per-entry log digests")

    # -- data --------------------------------------------------------------------------

    @abstractmethod
    def put(self, key: str, value: str, *, client_id: str, seq: int) -> WriteResult: ...

    @abstractmethod
    def delete(self, key: str, *, client_id: str, seq: int) -> WriteResult: ...

    @abstractmethod
    def get(self, key: str, consistency: str, node: str | None = None) -> ReadOutcome: ...

    # -- leadership ----------------------------------------------------------------------

    @abstractmethod
    def transfer_leadership(self, target: str) -> tuple[str, int]:
        """Ask the current leader to hand over to ``target``; (leader, term) after."""

    def campaign(self, node: str) -> int:
        from ..core.errors import NotSupported

        raise NotSupported(f"{self.kind} members cannot be told to campaign")

    # -- membership ------------------------------------------------------------------------

    @abstractmethod
    def add_learner(self, node: str, peer_address: str, api_address: str | None) -> ConfResult: ...

    @abstractmethod
    def promote(self, node: str) -> ConfResult: ...

    @abstractmethod
    def remove(self, node: str) -> ConfResult: ...

    # -- maintenance -------------------------------------------------------------------------

    @abstractmethod
    def snapshot(self, node: str) -> tuple[int, int]:
        """Take a snapshot on ``node``; (snapshot index, bytes)."""

    def set_faults(
        self, node: str, *, drop: list[str] | None = None, clear: bool = False
    ) -> dict[str, Any]:
        from ..core.errors import NotSupported

        raise NotSupported(f"{self.kind} clusters do not support fault injection")

    # -- processes (local clusters only) -------------------------------------------------------

    def running(self, node: str) -> bool | None:
        """Is ``node``'s process alive (None when the adapter does not run processes)."""
        return None

    def kill(self, node: str) -> None:
        from ..core.errors import NotSupported

        raise NotSupported("this cluster's processes are not managed here")

    def start(self, node: str) -> None:
        from ..core.errors import NotSupported

        raise NotSupported("this cluster's processes are not managed here")

    def planned_addresses(self, node: str) -> tuple[str, str] | None:
        """Where ``new_process`` would start ``node`` (peer, API), for plans; None if we
        do not run this cluster's processes."""
        return None

    def new_process(self, node: str) -> NewProcess:
        """Start an empty member process to be added (local clusters)."""
        from ..core.errors import NotSupported

        raise NotSupported("this cluster's processes are not managed here")

    def retire_process(self, node: str) -> None:  # noqa: B027 - optional hook
        """Stop a removed member's process and forget it (local clusters)."""

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers a raw client (the load generator) needs to talk to the members."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
