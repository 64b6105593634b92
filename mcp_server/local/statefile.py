"""The state files of the local launchers of external kinds (``etcd-cluster.yaml``,
``nats-cluster.yaml``): read with a clear error, written atomically (a crash mid-write
must not leave a cluster whose processes nobody can find)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .cluster import ClusterError


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
