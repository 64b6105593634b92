"""clusters.yaml, the embedded default cluster, and where the manager keeps state.

Shape (docs/design.md)::

    default: local                 # optional; else the only cluster, else --cluster
    audit_log: /path/audit.jsonl   # optional; default STATE_DIR/audit.jsonl
    clusters:
      local:  {kind: raft_core, dir: /path/to/cluster, mode: sandbox}
      prod:   {kind: raft_core, endpoints: ["10.0.0.1:7201"], mode: production,
               read_only: true, allowed_operations: [cluster_status, read],
               require_approval: true,    # the default in production
               token_env: PROD_RAFT_TOKEN, tls: {ca_file: ca.pem}}
      hosts3: {kind: raft_core, endpoints: ["10.0.0.1:7201", "10.0.0.2:7201"],
               recover_command: "ssh {host} systemctl restart raft-node@{id}",
               nft_command: "ssh {host} nft -f -"}    # optional, per node
      etcd:   {kind: etcd, endpoints: ["https://10.0.0.5:2379"], tls: {ca_file: ca.pem,
               cert_file: client.pem, key_file: client.key}, username: ops,
               password_file: /etc/raft-manager/etcd.password}
      js:     {kind: nats, servers: ["nats://10.0.0.7:4222"], monitor: ["http://10.0.0.7:8222"],
               username: sys, password_file: /etc/raft-manager/nats-sys.password}

Secrets are never inline: ``token_env`` names an environment variable and
``token_file`` a file that holds the API token (etcd: ``password_env`` /
``password_file`` hold the password of ``username``);
``mode`` defaults to sandbox for a local cluster (``dir``) and to production for a
cluster given by ``endpoints``; a local cluster started with an API
token file is read from its ``cluster.yaml``. With no config file (no ``--config``,
no ``RAFT_MANAGER_CONFIG``) the one cluster is the embedded default: a local
raft_core cluster in ``STATE_DIR/local``, started on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import policy
from .errors import InputError

ENV_CONFIG = "RAFT_MANAGER_CONFIG"
ENV_STATE_DIR = "RAFT_MANAGER_STATE_DIR"
DEFAULT_NAME = "local"
APP = "agent-raft-manager"
_SECRET_KEYS = ("token", "api_token", "password", "secret", "bearer", "cluster_secret")


def state_dir() -> Path:
    """Per-user state: ``$RAFT_MANAGER_STATE_DIR`` (which the MCP server's --state-dir
    sets, because stdio hosts drop XDG_STATE_HOME), else
    ``$XDG_STATE_HOME/agent-raft-manager`` (``~/.local/state/...``)."""
    if explicit := os.environ.get(ENV_STATE_DIR):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / APP


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["raft_core", "etcd", "nats"] = "raft_core"
    dir: str | None = Field(None, description="a local cluster's directory (cluster.yaml)")
    endpoints: list[str] | None = Field(None, description="API addresses, HOST:PORT")
    servers: list[str] | None = Field(None, description="nats: client URLs, nats://H:P")
    monitor: list[str] | None = Field(None, description="nats: monitoring URLs, http://H:P")
    mode: Literal["sandbox", "production"] = "sandbox"
    read_only: bool = False
    allowed_operations: list[str] | None = None
    require_approval: bool | None = Field(
        None,
        description="destructive plans need `raft-manager approve PLAN_ID` (default: production)",
    )
    tls: TLSConfig | None = None
    token_env: str | None = None
    token_file: str | None = None
    username: str | None = Field(
        None, description="etcd: user for auth/authenticate; nats: a system-account user"
    )
    password_env: str | None = Field(None, description="etcd: variable holding the password")
    password_file: str | None = Field(None, description="etcd: file holding the password")
    auto_start: bool = Field(False, description="start the local cluster on first use")
    nodes: int = Field(3, ge=1, le=9, description="size when auto-started")
    base_port: int | None = Field(None, description="ports when auto-started")
    embedded: bool = False
    # Members on other hosts (docs/design.md, "Beyond one machine"): per-node command
    # templates, each word's {id} and {host} filled in (operations/remote.py).
    recover_command: str | None = Field(
        None,
        description="recover_node runs this for a member that does not answer, e.g. "
        "'ssh {host} systemctl restart raft-node@{id}'",
    )
    nft_command: str | None = Field(
        None,
        description="runs `nft -f -` on a member's host: inject_fault partition and heal "
        "become nftables rules there, e.g. 'ssh {host} nft -f -'",
    )
    hosts: dict[str, str] | None = Field(
        None, description="each member's host for {host} (default: the host of its API address)"
    )

    @field_validator("allowed_operations")
    @classmethod
    def _known_operations(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        try:
            return sorted({policy.canonical(op) for op in v})
        except ValueError as e:
            raise ValueError(str(e)) from None

    @field_validator("dir")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return str(Path(os.path.expandvars(v)).expanduser().resolve()) if v else v

    @property
    def is_local(self) -> bool:
        return self.kind == "raft_core" and self.dir is not None

    @property
    def approval_required(self) -> bool:
        """Whether a destructive plan needs a human's out-of-band approval here."""
        if self.require_approval is not None:
            return self.require_approval
        return self.mode == "production"

    @property
    def location(self) -> str:
        return self.dir or ", ".join(self.endpoints or self.servers or [])


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    default: str | None = None
    audit_log: str | None = None
    plan_ttl_s: int = Field(900, ge=10)
    clusters: dict[str, ClusterConfig]

    def cluster(self, name: str | None) -> ClusterConfig:
        if name is None:
            if self.default:
                name = self.default
            elif len(self.clusters) == 1:
                name = next(iter(self.clusters))
            else:
                raise InputError(
                    f"{self.path} names {len(self.clusters)} clusters and no default",
                    f"pick one with --cluster ({', '.join(self.clusters)}) or set `default:`",
                )
        try:
            return self.clusters[name]
        except KeyError:
            raise InputError(
                f"no cluster named {name!r}"
                + (f" in {self.path}" if self.path else " (no clusters.yaml in use)"),
                f"known clusters: {', '.join(self.clusters)}",
            ) from None

    def audit_path(self) -> Path:
        return Path(self.audit_log).expanduser() if self.audit_log else state_dir() / "audit.jsonl"


def embedded_default() -> ClusterConfig:
    return ClusterConfig(
        name=DEFAULT_NAME,
        kind="raft_core",
        dir=str(state_dir() / DEFAULT_NAME),
        mode="sandbox",
        auto_start=True,
        embedded=True,
    )


def _describe(e: ValidationError) -> str:
    # Never echo input values: they could be secrets.
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _check_no_inline_secrets(name: str, raw: dict[str, Any], path: str) -> None:
    for key in raw:
        if key.lower() in _SECRET_KEYS:
            raise InputError(
                f"{path}: cluster {name!r} has an inline secret ({key}); secrets are never "
                "stored in clusters.yaml",
                "put the token in a file and name it with token_file, or in an environment "
                "variable named by token_env",
            )


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read clusters.yaml (``path``, else $RAFT_MANAGER_CONFIG); the embedded default if none."""
    path = path or os.environ.get(ENV_CONFIG) or None
    if path is None:
        return Config(clusters={DEFAULT_NAME: embedded_default()}, default=DEFAULT_NAME)
    p = Path(path).expanduser()
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror}", "check the --config path") from None
    except yaml.YAMLError as e:
        raise InputError(f"{p} is not valid YAML: {e}", "fix the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), dict):
        raise InputError(
            f"{p} must be a mapping with a `clusters:` mapping",
            "see docs/design.md: {clusters: {NAME: {kind, dir|endpoints, mode, ...}}}",
        )
    clusters = {}
    for name, raw in doc["clusters"].items():
        if not isinstance(raw, dict):
            raise InputError(f"{p}: cluster {name!r} must be a mapping")
        _check_no_inline_secrets(str(name), raw, str(p))
        if "mode" not in raw and not raw.get("dir"):
            raw = {**raw, "mode": "production"}  # remote clusters are production by default
        try:
            c = ClusterConfig(name=str(name), **raw)
        except ValidationError as e:
            raise InputError(
                f"{p}: cluster {name!r}: {_describe(e)}", "fix clusters.yaml"
            ) from None
        except TypeError as e:
            raise InputError(f"{p}: cluster {name!r}: {e}", "fix clusters.yaml") from None
        if c.kind == "raft_core" and not c.dir and not c.endpoints:
            raise InputError(
                f"{p}: cluster {name!r} needs `dir` (a local cluster) or `endpoints`",
                "fix clusters.yaml",
            )
        if c.kind == "etcd" and not c.endpoints and not c.dir:
            raise InputError(
                f"{p}: etcd cluster {name!r} needs `endpoints` (or the `dir` of `etcd up`)",
                "fix clusters.yaml",
            )
        if c.kind == "nats" and not (c.monitor and c.servers) and not c.dir:
            raise InputError(
                f"{p}: nats cluster {name!r} needs `servers` and `monitor` (or the `dir` of "
                "`nats up`)",
                "fix clusters.yaml: servers: [nats://H:P, ...], monitor: [http://H:P, ...]",
            )
        clusters[str(name)] = c
    if not clusters:
        raise InputError(f"{p} names no clusters", "add one under `clusters:`")
    rest = {k: v for k, v in doc.items() if k != "clusters"}
    try:
        cfg = Config(path=str(p), clusters=clusters, **rest)
    except ValidationError as e:
        raise InputError(f"{p}: {_describe(e)}", "fix clusters.yaml") from None
    except TypeError as e:
        raise InputError(f"{p}: {e}", "fix clusters.yaml") from None
    if cfg.default is not None and cfg.default not in clusters:
        raise InputError(f"{p}: default {cfg.default!r} is not one of the clusters")
    return cfg


def resolve_password(c: ClusterConfig) -> str | None:
    """etcd's password, from ``password_env`` or ``password_file`` (never inline)."""
    if c.password_env:
        value = os.environ.get(c.password_env)
        if not value:
            raise InputError(
                f"cluster {c.name!r}: environment variable {c.password_env} (password_env) "
                "is not set",
                f"export {c.password_env} with the password of user {c.username!r}",
            )
        return value.strip()
    if c.password_file:
        try:
            return Path(c.password_file).expanduser().read_text().strip()
        except OSError as e:
            raise InputError(
                f"cluster {c.name!r}: cannot read password file {c.password_file}: {e.strerror}",
                "check password_file in clusters.yaml",
            ) from None
    if c.username:
        raise InputError(
            f"cluster {c.name!r} names username {c.username!r} but no password_env or "
            "password_file",
            "add one of them to clusters.yaml",
        )
    return None


def resolve_token(c: ClusterConfig, local_token_file: str | None = None) -> str | None:
    """The API token named by the config (environment variable, file), if any."""
    if c.token_env:
        value = os.environ.get(c.token_env)
        if not value:
            raise InputError(
                f"cluster {c.name!r}: environment variable {c.token_env} (token_env) is not set",
                f"export {c.token_env} with the cluster's API token",
            )
        return value.strip()
    path = c.token_file or local_token_file
    if path:
        try:
            value = Path(path).expanduser().read_text().strip()
        except OSError as e:
            raise InputError(
                f"cluster {c.name!r}: cannot read token file {path}: {e.strerror}",
                "check token_file in clusters.yaml",
            ) from None
        if not value:
            raise InputError(f"cluster {c.name!r}: token file {path} is empty")
        return value
    return None
