"""What every benchmarked system's cluster shares: scratch ports and a scratch
directory, and a teardown that runs whatever the benchmark did."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import httpx

from ..local import free_base_port


class _Stoppable(Protocol):
    def down(self, grace_s: float = ...) -> list[str]: ...


C = TypeVar("C", bound=_Stoppable)


def scratch_base_port(preferred: int) -> int:
    """A free block of loopback ports, from ``preferred`` on."""
    base = free_base_port(preferred=preferred)
    if base is None:
        raise RuntimeError("no free block of loopback ports")
    return base


class ScratchCluster(Generic[C]):
    """A context manager: the subclass's ``__enter__`` starts ``self.cluster`` in
    ``self.dir``; leaving stops it, closes the HTTP client and deletes the directory."""

    def __init__(self, prefix: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.cluster: C | None = None
        self.http = httpx.Client(timeout=5.0)

    @property
    def dir(self) -> Path:
        return Path(self._tmp.name)

    @property
    def c(self) -> C:
        assert self.cluster is not None
        return self.cluster

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.down()
        self.http.close()
        self._tmp.cleanup()
