"""The server's prompts: the standard flows an agent follows, each a numbered list of
tool calls that checks before it acts and verifies after, and names its runbook
resource (``raft://runbooks/...``) for the details."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer


def _on(cluster: str | None) -> str:
    return f"cluster {cluster!r}" if cluster else "the default cluster"


def register(server: MCPServer) -> None:
    """Add the standard flows to ``server``."""

    @server.prompt(
        name="planned_leader_change",
        description="Move leadership to another voter safely (maintenance on the leader).",
    )
    def planned_leader_change(cluster: str | None = None, target: str | None = None) -> str:
        who = f"to {target}" if target else "to the most caught-up other voter"
        return (
            f"Move the leadership of {_on(cluster)} {who} (runbook: raft://runbooks/election).\n"
            "1. cluster_status: note the leader, term and each voter's lag.\n"
            "2. health_check with operation='elect_leader'; stop and report if not safe.\n"
            "3. elect_leader with dry_run=true (and the target); read the plan's reasons.\n"
            "4. elect_leader with the plan_id. If it needs a human's approval, ask them to run "
            "`raft-manager approve PLAN_ID` and wait; never try to approve it yourself.\n"
            "5. cluster_status: confirm the new leader and term; then verify_consistency."
        )

    @server.prompt(
        name="add_member",
        description="Add a node as a voter: learner first, catch up, promote, verify.",
    )
    def add_member(node_id: str, cluster: str | None = None) -> str:
        return (
            f"Add {node_id} to {_on(cluster)} as a voter "
            "(runbook: raft://runbooks/membership).\n"
            "1. health_check with operation='change_membership'; stop if not safe.\n"
            f"2. change_membership action=add_learner node_id={node_id} (dry run), review, "
            "then apply its plan_id with dry_run=false.\n"
            f"3. cluster_status until {node_id} is caught_up (lag near 0).\n"
            f"4. change_membership action=promote node_id={node_id}: dry run, then apply.\n"
            "5. verify_consistency. Report the new voters and quorum."
        )

    @server.prompt(
        name="recover_after_failure",
        description="Recover after a crash or a partition: find, restore, confirm.",
    )
    def recover_after_failure(node_id: str | None = None, cluster: str | None = None) -> str:
        who = node_id or "every member that cluster_status shows unreachable or lagging"
        return (
            f"Recover {_on(cluster)} after a crash or partition "
            "(runbook: raft://runbooks/recovery).\n"
            "1. cluster_status: is there a leader and a quorum? Which members are unreachable "
            "or lagging?\n"
            f"2. For {who}: recover_node (a partition on a sandbox: inject_fault kind=heal "
            "first). Wait for caught_up=true.\n"
            "3. If there is no leader but a quorum is back, elect_leader without a target.\n"
            "4. Do not remove members while the cluster is degraded: quorum may break.\n"
            "5. verify_consistency; report divergences to a human, do not repair them."
        )

    @server.prompt(
        name="verify_after_incident",
        description="Check that logs and state agree after an incident, and report.",
    )
    def verify_after_incident(cluster: str | None = None) -> str:
        return (
            f"Verify {_on(cluster)} after an incident (runbook: raft://runbooks/consistency).\n"
            "1. cluster_status: one leader, every member reachable, lag near 0? If not, "
            "recover first (prompt recover_after_failure).\n"
            "2. verify_consistency. consistent=true: report the common index. false: list the "
            "divergences (member, index, kind) and stop: a human decides. null: report why it "
            "could not verify and what is missing.\n"
            "3. Read the audit log resource (raft://audit) for what changed during the incident."
        )
