"""The port: the interface every cluster kind's adapter implements, and what it answers.

It lives in the core, not beside its implementations in ``mcp_server/adapters/``, so
that the core (the cluster view, the operation context) depends on no adapter: the
adapters depend on the core, never the other way round (docs/design.md, "Layout").
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
  (local clusters only: it then has ``processes``, a ``ProcessControl`` that the
  process methods delegate to); otherwise recovery is the operator's job;
- ``supports_state_history`` says whether ``state_digest`` can answer for a past
  index (raft_core keeps a chain of applied-state hashes; etcd's gateway hashes only
  the current revision, so verify compares members standing at the same revision);
- ``member_joins_after_add`` says whether a new member's process can only start once
  the cluster has added it (etcd) rather than before (raft_core starts it empty);
- ``supports_groups``: the cluster runs several Raft groups (NATS JetStream: meta,
  streams, consumers); ``for_group`` then gives the adapter seen through one of them,
  and ``group_statuses_all`` every group's member statuses from one scan. Others have
  one group, named ``cluster``;
- ``supports_transfer_target`` (leadership can be handed to a named member) and
  ``supports_step_down`` (the leader can be told to step down, whoever wins next);
- ``supports_learners``: members can be added as non-voting learners and promoted;
  ``joins_by_starting``: a member joins by starting with the others' addresses
  (NATS routes), with no add call; ``snapshot_whole_group``: a snapshot is one per
  group (a stream backup), not one per member.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from raft_core.status import ProgressStatus

from .errors import NotSupported, Refused


@dataclass
class MemberStatus:
    """One member as it answered (or failed to answer) a status request.

    The consensus fields are the engine's (``raft_core.status.RaftStatus``), each
    optional: a raft-node member's come from the status it serves, parsed with
    ``raft_core.node.status.MemberStatus.from_json``; an etcd member's are those its
    gateway reports, and an unreachable member has none. The leader's ``progress`` is
    the engine's own ``ProgressStatus``.
    """

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
    progress: dict[str, ProgressStatus] | None = None
    faults: dict[str, Any] | None = None
    addresses: dict[str, str | None] = field(default_factory=dict)  # members' API addresses
    error: str | None = None
    process: str | None = None  # "running" / "stopped" when the adapter controls processes
    # raft-node: "tls", "secret" or "none"; None when the node does not say (older nodes).
    peer_auth: str | None = None
    pid: int | None = None
    # Kind-specific facts, shown in status when known (etcd: names, IDs, URLs, db, alarms).
    name: str | None = None
    member_id: str | None = None
    peer_urls: list[str] = field(default_factory=list)
    db_size: int | None = None
    revision: int | None = None
    version: str | None = None
    alarms: list[str] = field(default_factory=list)


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


class ProcessControl(Protocol):
    """The member processes of a local cluster (``mcp_server.adapters.processes`` implements it)."""

    def running(self, node: str) -> bool | None: ...
    def kill(self, node: str) -> None: ...
    def pause(self, node: str) -> None: ...
    def resume(self, node: str) -> None: ...
    def start(self, node: str) -> None: ...
    def new_process(self, node: str) -> NewProcess: ...
    def planned_addresses(self, node: str) -> tuple[str, str]: ...
    def retire_process(self, node: str) -> None: ...


class ClusterAdapter(ABC):
    kind: str = "?"
    service: str = "the member's service"  # what an operator restarts on a member's host
    processes: ProcessControl | None = None
    supports_campaign: bool = False
    supports_log_digests: bool = False
    supports_faults: bool = False
    can_control_processes: bool = False
    supports_state_history: bool = False
    member_joins_after_add: bool = False
    supports_groups: bool = False
    supports_transfer_target: bool = True
    supports_step_down: bool = False
    supports_learners: bool = True
    joins_by_starting: bool = False
    snapshot_whole_group: bool = False
    group: str = "cluster"

    # -- groups ----------------------------------------------------------------------------

    def for_group(self, group: str | None) -> ClusterAdapter:
        """This adapter seen through Raft group ``group`` (None: the main one)."""
        if group is None or group == self.group:
            return self
        from ..core.errors import NotSupported

        raise NotSupported(
            f"{self.kind} clusters have one Raft group ({self.group!r}), not {group!r}",
            "omit the group",
        )

    def group_statuses_all(self) -> dict[str, dict[str, MemberStatus]]:
        """Every group's member statuses, by group name, from one look at the cluster."""
        return {self.group: self.statuses()}

    def removal_blockers(self, node: str) -> list[str]:
        """Why removing ``node`` would break a group other than the main one (whose
        quorum the membership plan checks itself)."""
        return []

    def transfer_refusal(self) -> str:
        """Why leadership cannot be handed to a named member (when it cannot)."""
        return f"{self.kind} cannot hand leadership to a named member"

    def step_down(self) -> None:
        from ..core.errors import NotSupported

        raise NotSupported(f"{self.kind} leaders cannot be told to step down")

    def current_state_notes(self, revision: int) -> list[str]:
        """What a comparison of current-state hashes (``supports_state_history`` false)
        showed and could not prove, for the verify report."""
        return [
            f"compared the hash of each member's key space at revision {revision}",
            f"{self.kind} cannot prove more through its gateway: it hashes only the current "
            "revision (no hash of a past revision), and exposes no raft log, so past "
            "revisions and log entries were not compared",
        ]

    # -- observation ---------------------------------------------------------------

    @abstractmethod
    def statuses(self) -> dict[str, MemberStatus]:
        """Every known member (configured, discovered, or local process), by id."""

    @abstractmethod
    def status(self, node: str) -> MemberStatus: ...

    @abstractmethod
    def state_digest(self, node: str, at: int | None = None) -> StateDigest:
        """Applied-state hash of ``node`` (at index ``at`` when it still retains it)."""

    def log_digests(self, node: str, start: int, end: int) -> LogSlice:
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
        raise NotSupported(f"{self.kind} clusters do not support fault injection")

    # -- processes (local clusters only) -------------------------------------------------------

    def _processes(self) -> ProcessControl:
        if self.processes is None:
            raise Refused(
                f"this {self.kind} cluster's processes are not run by raft-manager "
                "(it is not a local cluster: it has no `dir`)",
                f"run the command on the member's host (e.g. systemctl restart {self.service})",
            )
        return self.processes

    def running(self, node: str) -> bool | None:
        """Is ``node``'s process alive (None when the adapter does not run processes)."""
        return self.processes.running(node) if self.processes is not None else None

    def kill(self, node: str) -> None:
        self._processes().kill(node)

    def pause(self, node: str) -> None:
        """Freeze ``node``'s process (SIGSTOP) without killing it."""
        self._processes().pause(node)

    def resume(self, node: str) -> None:
        """Let a paused process run again (SIGCONT)."""
        self._processes().resume(node)

    def start(self, node: str) -> None:
        self._processes().start(node)

    def planned_addresses(self, node: str) -> tuple[str, str] | None:
        """Where ``new_process`` would start ``node`` (peer, API), for plans; None if we
        do not run this cluster's processes."""
        return self.processes.planned_addresses(node) if self.processes is not None else None

    def new_process(self, node: str) -> NewProcess:
        """Start the member process to be added (before or after the add: see
        ``member_joins_after_add``)."""
        return self._processes().new_process(node)

    def restart_instructions(self, node: str, where: str) -> list[str]:
        """What the operator does to bring back a member whose process is not ours."""
        return [
            f"{node} ({where}) does not answer and raft-manager does not run its process",
            f"on {node}'s host: `systemctl restart raft-node@{node}` (the unit of "
            "docs/three-machines.md), or start `raft-node --config` with its config file "
            "and the same data directory again",
            f"then run `raft-manager recover {node}` again to wait until it has caught up",
        ]

    def retire_process(self, node: str) -> None:
        """Stop a removed member's process and forget it (local clusters)."""
        if self.processes is not None:
            self.processes.retire_process(node)

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers a raw client (the load generator) needs to talk to the members."""
        return {}

    def api_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context a raw client needs for the members' API; None for plain HTTP."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
