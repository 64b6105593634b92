"""The chaos verdict (the ``--json`` document) and the records it is built from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AnomalyKind = Literal[
    "nonlinearizable",  # the checker found no legal order for a key's history
    "lost-write",  # an acknowledged write is gone although nothing could overwrite it
    "divergence",  # verify_consistency found members whose logs or state disagree
    "not-converged",  # after healing, the members did not reach one applied index
    "unverified",  # verify_consistency could not compare the members
    "check-incomplete",  # the linearizability search ran out of budget on some key
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultEvent(_Model):
    kind: str
    variant: str
    targets: list[str] = Field(default_factory=list)
    start: float = Field(description="seconds since the run started")
    end: float
    applied: bool = Field(description="false when the fault could not be injected")
    detail: str


class Anomaly(_Model):
    kind: AnomalyKind
    message: str
    key: str | None = None
    time: float | None = Field(None, description="when (run seconds) the evidence happened")
    op_ids: list[int] = Field(default_factory=list, description="history lines involved")


class OpCounts(_Model):
    operations: int
    ok: int
    failed: int
    indeterminate: int
    by_kind: dict[str, int]


class ChaosVerdict(_Model):
    ok: bool = Field(description="no anomaly (the exit code is 0 only then)")
    linearizable: bool
    check: Literal["ok", "violation", "unknown"] = Field(description="the checker's status")
    anomalies: list[Anomaly]
    seed: int
    duration_s: float = Field(description="requested workload duration")
    elapsed_s: float = Field(description="wall time of the whole run, setup to verdict")
    nemeses: list[str]
    network: str = Field(
        "api",
        description="how partitions were made: api (node fault API) "
        "or nft (nftables rules in the members' namespaces)",
    )
    notes: list[str] = Field(description="faults asked for that could not be injected, and why")
    cluster: str
    kind: str = Field("raft_core", description="raft_core or etcd")
    nodes: list[str] = Field(description="members at the end")
    counts: OpCounts
    faults: dict[str, int] = Field(description="faults injected, by kind")
    faults_refused: int = Field(description="steps the cluster or the manager refused")
    fault_events: list[FaultEvent]
    membership_via: str
    consistent: bool | None
    common_index: int | None
    history_path: str
    timeline_path: str
    out_dir: str
    logs: list[str] = Field(description="node logs (look here when something is wrong)")
