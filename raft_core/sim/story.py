"""A short narrated run of a simulated cluster: what the engine does, step by step."""

from __future__ import annotations

from ..confchange import ChangeOp
from ..statemachine import encode_command
from .cluster import SimCluster, SimConfig


def tell(seed: int = 7, out=print) -> None:
    c = SimCluster(seed, SimConfig(nodes=3, snapshot_every=50, keep_entries=5))

    def say(text: str) -> None:
        out(f"[{c.now / 1000:6.2f}s] {text}")

    leader = c.wait_for_leader()
    say(f"3 nodes start; {leader.id} wins the election for term {leader.term}")
    for i in range(100):
        c.propose(encode_command(["put", f"k{i % 10}", f"v{i}"]))
    c.run_until(lambda: c.committed_everywhere(leader.raw.last_index()), 5000)
    say(
        f"100 writes replicated; every node applied up to {leader.replica.applied_index}, "
        f"snapshots taken: {sum(n.snapshots_taken for n in c.nodes.values())}"
    )
    target = sorted(set(c.nodes) - {leader.id})[0]
    leader.raw.transfer_leadership(target)
    leader.process()
    new = c.wait_for_leader(among={target})
    say(f"leadership transferred to {new.id} (term {new.term})")
    c.crash(new.id)
    say(f"{new.id} crashes")
    after = c.wait_for_leader(among=set(c.nodes) - {new.id})
    say(f"{after.id} takes over in term {after.term}")
    c.restart(new.id)
    c.run_until(lambda: after.raw.applied_index >= after.raw.pending_conf_index, 2000)
    c.add_node("n4")
    c.change((ChangeOp.ADD_LEARNER, "n4"))
    c.run_until(lambda: c.nodes["n4"].replica.applied_index >= after.replica.applied_index, 5000)
    say(
        f"n4 joins as a learner and catches up through a snapshot "
        f"(installed: {c.stats['snapshots_installed']})"
    )
    c.run_until(
        lambda: (
            not c.leader().conf.joint
            and c.leader().raw.pending_conf_index <= c.leader().raw.applied_index
        ),
        2000,
    )
    c.change((ChangeOp.ADD_VOTER, "n4"))
    c.run_until(lambda: "n4" in c.leader().conf.voters and not c.leader().conf.joint, 5000)
    say(f"n4 promoted through a joint configuration: voters {sorted(c.leader().conf.voters)}")
    c.run_for(500)
    digests = {n.id: n.replica.digest()["chain"][:12] for n in c.live()}
    same = len(set(digests.values())) == 1
    say(f"digest chains {'agree' if same else 'DIFFER'}: {digests}")
