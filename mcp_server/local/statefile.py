"""The state files of the local launchers of external kinds (``etcd-cluster.yaml``,
``nats-cluster.yaml``): read with a clear error, written atomically (a crash mid-write
must not leave a cluster whose processes nobody can find)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .cluster import ClusterError

C = TypeVar("C")


def read_state(path: Path, command: str) -> dict:
    """The mapping in ``path``; ``ClusterError`` naming ``command`` (which writes it)."""
    if not path.exists():
        raise ClusterError(f"no cluster at {path.parent} ({path.name} missing); run `{command}`")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ClusterError(f"{path} is not a file `{command}` wrote: {e}") from e
    if not isinstance(doc, dict):
        raise ClusterError(f"{path} is not a file `{command}` wrote")
    return doc


def write_state(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def load_cluster(
    cls: type[C], member: type, directory: Path | str, state_file: str, key: str, command: str
) -> C:
    """A launcher's cluster dataclass from its state file: the ``key`` list (members,
    servers) as ``member`` dataclasses, every other field as written; a file with
    fields the class does not know is a ``ClusterError`` naming ``command``."""
    d = Path(directory)
    doc = read_state(d / state_file, command)
    try:
        members = [member(**m) for m in doc.pop(key, [])]
        return cls(dir=d, **{key: members}, **doc)
    except TypeError as e:
        raise ClusterError(f"{d / state_file} is not a file `{command}` wrote: {e}") from e


def save_cluster(cluster: Any, state_file: str, key: str) -> None:
    """Write a launcher's cluster dataclass back (``load_cluster`` reads it): every
    field but ``dir``, the ``key`` list last."""
    doc = {k: v for k, v in asdict(cluster).items() if k not in ("dir", key)}
    doc[key] = [asdict(m) for m in getattr(cluster, key)]
    write_state(cluster.dir / state_file, doc)
