"""The server's resources: each cluster's status, the audit log's recent lines, and the
skill an agent works by (``SKILL.md``) with one runbook per duty
(``skill/references/*.md``).

The skill's files are found beside the package in a checkout (or an editable install),
else where the wheel installs them: ``<prefix>/share/agent-raft-manager`` (pyproject's
data-files), for a virtual environment or system prefix and for a ``--user`` install.
"""

from __future__ import annotations

import json
import site
import sys
from collections.abc import Callable
from pathlib import Path

from mcp.server.mcpserver import MCPServer

from ..core import Config, ManagerError
from ..core.audit import AuditLog
from ..core.config import APP
from ..manager import Manager
from .results import document

AUDIT_TAIL = 50


def skill_dir() -> Path | None:
    """The folder holding ``SKILL.md`` and ``skill/references``, or None if absent."""
    checkout = Path(__file__).resolve().parents[2]
    for d in (
        checkout,
        Path(sys.prefix) / "share" / APP,
        Path(site.getuserbase()) / "share" / APP,
    ):
        if (d / "skill" / "references").is_dir():
            return d
    return None


def register(server: MCPServer, cfg: Config, skill: Path | None) -> None:
    """Add the cluster, audit and skill resources to ``server``."""

    def status_of(name: str) -> Callable[[], str]:
        def status() -> str:
            try:  # a read: never starts the cluster
                with Manager.open(cfg, name) as mgr:
                    # the cluster_status tool's document: compact, no null optional fields
                    return json.dumps(document(mgr.status()), separators=(",", ":"))
            except ManagerError as e:
                return json.dumps({"cluster": name, "error": e.code, "reason": str(e)})

        return status

    for name in cfg.clusters:
        server.resource(
            f"raft://clusters/{name}/status",
            name=f"{name}-status",
            description=f"cluster_status of {name!r}, read when the resource is read",
            mime_type="application/json",
        )(status_of(name))

    @server.resource(
        "raft://audit",
        name="audit-log",
        description=f"the last {AUDIT_TAIL} audit log lines (mutations, plans, refusals, "
        "approvals), oldest first",
        mime_type="application/json",
    )
    def audit() -> str:
        log_ = AuditLog(cfg.audit_path())
        return json.dumps({"path": str(log_.path), "entries": log_.read()[-AUDIT_TAIL:]}, indent=2)

    if skill is None:
        return
    if (skill / "SKILL.md").is_file():
        server.resource(
            "raft://skill",
            name="skill",
            description="SKILL.md: how to operate a cluster with these tools (check health, "
            "plan, apply, verify), the safety rules, and when to stop and ask a human",
            mime_type="text/markdown",
        )(_reader(skill / "SKILL.md"))
    for md in sorted((skill / "skill" / "references").glob("*.md")):
        server.resource(
            f"raft://runbooks/{md.stem}",
            name=f"runbook-{md.stem}",
            description=f"runbook: {_title(md)}",
            mime_type="text/markdown",
        )(_reader(md))


def _title(path: Path) -> str:
    """A runbook's first heading, else its file name."""
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip().removeprefix("Runbook: ")
    return path.stem.replace("-", " ").replace("_", " ")


def _reader(path: Path) -> Callable[[], str]:
    return lambda: path.read_text()
