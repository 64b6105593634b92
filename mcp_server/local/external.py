"""What the local launchers of external kinds (``etcd up``, ``nats up``) share.

Their clusters are dataclasses with a list of named member processes (etcd members,
nats-servers) and a state file in ``dir``: reading and writing that file, finding a
member by name, whether one is alive or frozen, signalling one and stopping all are
the same bookkeeping whatever the binary, so they live here once. Only how a member
is started, joined, retired and found ready differs, and stays with each kind.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

from . import pids
from .cluster import ClusterError
from .statefile import load_cluster, save_cluster


class NamedProcess(Protocol):
    """A member of an external-kind local cluster (etcd member, nats-server): the
    helpers below are the bookkeeping those launchers share, whatever the binary."""

    name: str
    pid: int | None


P = TypeVar("P", bound=NamedProcess)


def find_named(procs: Sequence[P], name: str, noun: str) -> P:
    """The member called ``name``; a ``ClusterError`` listing the known ones if none is."""
    for p in procs:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in procs)
    raise ClusterError(f"unknown {noun} {name!r}; this cluster has {known}")


def stop_named(procs: Sequence[NamedProcess], grace_s: float) -> list[str]:
    """Stop every member (see ``pids.stop``) and forget its pid; the names of those that
    were running. The caller saves its state file."""
    running = pids.stop([p.pid for p in procs], grace_s)
    for p in procs:
        p.pid = None
    return [p.name for p, up in zip(procs, running, strict=True) if up]


def set_aside(path: Path) -> None:
    """Move a retired member's data directory out of the way (best effort): a name added
    again must start empty, and the old data stays for a post-mortem."""
    with contextlib.suppress(OSError):
        shutil.move(str(path), f"{path}.removed-{time.time_ns()}")


class ExternalCluster:
    """Mixin for a launcher's cluster dataclass (it has ``dir`` and the ``key`` list)."""

    state_file: ClassVar[str]  # the file in ``dir``
    member_type: ClassVar[type]  # the dataclass of one member
    key: ClassVar[str]  # the field (and state-file key) listing the members
    noun: ClassVar[str]  # what a member is called in messages ("member", "server")
    up_command: ClassVar[str]  # the command that writes the state file
    dir: Path

    def _procs(self) -> list[Any]:
        return getattr(self, self.key)

    @classmethod
    def load(cls, directory: Path | str) -> Self:
        return load_cluster(
            cls, cls.member_type, directory, cls.state_file, cls.key, cls.up_command
        )

    def save(self) -> None:
        save_cluster(self, self.state_file, self.key)

    def find(self, name: str) -> Any:
        """The member called ``name`` (``ClusterError`` naming the known ones if none)."""
        return find_named(self._procs(), name, self.noun)

    def alive(self, m: Any) -> bool:
        return pids.alive(m.pid)

    def frozen(self, m: Any) -> bool:
        """SIGSTOPped (``fault stop``): alive but not running."""
        return pids.frozen(m.pid)

    def down(self, grace_s: float = 5.0) -> list[str]:
        """Stop every member (see ``pids.stop``); the names of those that were running."""
        stopped = stop_named(self._procs(), grace_s)
        self.save()
        return stopped

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT) to a running member."""
        m = self.find(name)
        if not self.alive(m):
            raise ClusterError(f"{name} is not running")
        pids.send(m.pid, sig)
