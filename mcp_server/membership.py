"""Membership plans: the steps of a change, quorum before and after, and why it is (un)safe.

Pure planning from a ``ClusterView``; ``operations.Manager`` executes the steps. Rules:

- every change goes through a single stable leader with a quorum available, and only
  when no other change is in flight (no joint configuration, nothing pending);
- a voter is added as a learner first, and promoted only once caught up (the leader
  replicates to it in ``replicate`` state, at most ``CAUGHT_UP_LAG`` entries behind);
- a removal must leave at least a quorum of the *new* configuration available;
- removing the leader hands leadership to the most caught-up remaining voter first.
"""

from __future__ import annotations

from .models import MembershipChange, PlanStep
from .plans import plan_id, timestamps
from .view import CAUGHT_UP_LAG, ClusterView, quorum_of

ACTIONS = ("add_learner", "add_voter", "promote", "remove")


def plan_change(
    view: ClusterView,
    *,
    cluster: str,
    action: str,
    node: str,
    peer_address: str | None = None,
    api_address: str | None = None,
    local_addresses: tuple[str, str] | None = None,
    start_after_add: bool = False,
    ttl_s: int = 900,
) -> MembershipChange:
    """The plan for ``action`` on ``node`` in the cluster as ``view`` saw it.

    ``local_addresses`` is where a local cluster would start the new node's process
    (used when no ``peer_address`` is given); None for clusters we do not run.
    ``start_after_add``: the process can only start once the cluster has added the
    member (etcd), so the start step follows the add instead of preceding it.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    voters, learners = view.voters, view.learners
    reasons: list[str] = []
    risks: list[str] = []
    steps: list[PlanStep] = []
    leader = view.leader

    # -- the cluster must be able to take a change at all ------------------------------
    if len(view.leaders) > 1:
        reasons.append(
            "several members claim leadership ("
            + ", ".join(f"{s.id} term {s.term}" for s in view.leaders)
            + "); wait until only one leader remains"
        )
    if leader is None:
        reasons.append(
            "no leader: a membership change goes through the leader; wait for an election "
            "or run `raft-manager elect`"
        )
    if voters and not view.has_quorum():
        reasons.append(
            f"quorum lost: {len(view.available_voters())} of {len(voters)} voters available, "
            f"{view.quorum()} needed"
        )
    if view.joint:
        reasons.append(
            "another membership change is in flight: a joint configuration is in force (old "
            f"voters {','.join(view.voters_outgoing)}, new {','.join(voters)}); wait until it "
            "is left"
        )
    elif view.change_in_flight:
        reasons.append(
            "another membership change is in flight (proposed but not applied yet); wait "
            "for it to apply"
        )

    voters_after, learners_after = list(voters), list(learners)
    peer, api = peer_address, api_address

    # -- per action -----------------------------------------------------------------------
    if action in ("add_learner", "add_voter"):
        if node in voters:
            reasons.append(f"{node} is already a voter")
        elif node in learners:
            reasons.append(
                f"{node} is already a learner"
                + ("; promote it instead" if action == "add_voter" else "")
            )
        start = None
        if peer is None:
            if local_addresses is not None:
                peer, api = local_addresses
                start = PlanStep(
                    action="start_process",
                    detail=f"start an empty member process {node} (peer {peer}, API {api})",
                )
                if not start_after_add:
                    steps.append(start)
            else:
                reasons.append(
                    f"{node} needs --peer-address (and --api-address): this cluster's "
                    "processes are not run by raft-manager"
                )
        steps.append(
            PlanStep(action="add_learner", detail=f"add {node} as a learner (peer {peer})")
        )
        if start is not None and start_after_add:
            steps.append(start)
        steps.append(
            PlanStep(
                action="wait_caught_up",
                detail=f"wait until {node} is within {CAUGHT_UP_LAG} entries of the leader",
            )
        )
        if action == "add_voter":
            steps.append(PlanStep(action="promote", detail=f"promote {node} to voter"))
            voters_after = sorted([*voters, node])
        else:
            learners_after = sorted([*learners, node])
    elif action == "promote":
        if node in voters:
            reasons.append(f"{node} is already a voter")
        elif node not in learners:
            reasons.append(f"{node} is not a learner; add it as a learner first")
        elif leader is not None and not view.caught_up(node):
            reasons.append(f"cannot promote a lagging learner: {view.lag_reason(node)}")
        voters_after = sorted([*voters, node])
        learners_after = [x for x in learners if x != node]
        steps.append(
            PlanStep(action="promote", detail=f"promote {node} to voter (via a joint config)")
        )
    elif action == "remove":
        if node not in voters and node not in learners:
            reasons.append(f"{node} is not a member of this cluster")
        elif node in learners:
            learners_after = [x for x in learners if x != node]
        else:
            voters_after = [x for x in voters if x != node]
            q_after = quorum_of(voters_after)
            avail_after = view.available_voters(voters_after)
            if not voters_after:
                reasons.append(f"cannot remove {node}: it is the last voter")
            elif len(avail_after) < q_after:
                reasons.append(
                    f"removing {node} would leave {len(avail_after)} available voter(s) "
                    f"({', '.join(avail_after) or 'none'}) of the new configuration "
                    f"{','.join(voters_after)}, fewer than its quorum of {q_after}"
                )
            elif len(avail_after) == q_after and len(voters_after) > 1:
                risks.append(
                    f"after removing {node}, exactly a quorum ({q_after}) of voters is "
                    "available: losing one more stops the cluster"
                )
            if leader is not None and node == leader.id and voters_after:
                target = view.most_caught_up(voters_after)
                if target is None:
                    reasons.append(
                        f"{node} is the leader and no remaining voter is caught up to take over"
                    )
                else:
                    steps.append(
                        PlanStep(
                            action="transfer_leadership",
                            detail=f"{node} is the leader: transfer leadership to {target} first",
                        )
                    )
        steps.append(PlanStep(action="remove", detail=f"remove {node} from the configuration"))
        if local_addresses is not None:
            steps.append(
                PlanStep(
                    action="stop_process",
                    detail=f"stop {node}'s process once the removal is committed",
                )
            )

    q_before, q_after = quorum_of(voters), quorum_of(voters_after)
    even = len(voters_after) % 2 == 0
    if action in ("add_voter", "promote", "remove") and even and voters_after:
        risks.append(
            f"{len(voters_after)} voters tolerate no more failures than "
            f"{len(voters_after) - 1} (quorum {q_after})"
        )
    if action in ("add_voter", "promote") and not reasons:
        avail_after = len(view.available_voters()) + 1
        if avail_after < q_after:
            reasons.append(
                f"after adding {node}, {avail_after} voters would be available, fewer than the "
                f"new quorum of {q_after}"
            )
    arguments = {
        "action": action,
        "node": node,
        "peer_address": peer_address,
        "api_address": api_address,
    }
    created, expires = timestamps(ttl_s)
    return MembershipChange(
        plan_id=plan_id(
            cluster,
            "change_membership",
            arguments,
            term=view.term,
            leader=leader.id if leader else None,
            voters=voters,
            learners=learners,
        ),
        cluster=cluster,
        operation="change_membership",
        arguments=arguments,
        safe=not reasons,
        steps=steps,
        reasons=reasons,
        risks=risks,
        leader=leader.id if leader else None,
        term=view.term,
        voters=voters,
        learners=learners,
        created_at=created,
        expires_at=expires,
        action=action,
        node=node,
        peer_address=peer,
        api_address=api,
        quorum_before=q_before,
        quorum_after=q_after,
        voters_after=voters_after,
        learners_after=learners_after,
    )
