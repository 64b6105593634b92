"""Network faults from outside the process: nftables rules on each member's host.

The node fault API (``/v1/admin/faults``) makes a node drop messages itself, so the node
that is cut off is the one doing the cutting. Here the same fault sets (``drop``: every
packet between this host and those nodes' hosts, both ways; ``drop_out``: this node's
messages to them; ``drop_in``: their messages to this node) become nftables rules in a
table of their own on the member's host (in the test bed: its network namespace). The
nodes learn nothing: packets just stop. Rules drop, never reject, so a cut looks like a
dead link, not a refused connection (docs/design.md, "Beyond one machine").

One-way cuts rely on the transport's model (raft_core/node/transport.py): node A sends
its messages over the connection A dials to B's peer port, so "A's messages to B" are
the packets to B's peer port leaving A; the acknowledgements of B's own connection to A
(from A's peer port) still flow, and B's messages still arrive.

Each call replaces the host's whole table in one nft transaction (``table``, ``delete
table``, then the new one), so a fault set is applied atomically and an empty one
removes the table: healing leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TABLE = "raft_chaos"
NETWORK_KEYS = ("drop", "drop_in", "drop_out")
NFT_TIMEOUT_S = 10.0


class NftError(RuntimeError):
    """nft refused a ruleset or could not be run on a member's host."""


@dataclass(frozen=True)
class Host:
    """One member's host as the rules see it: its address, its peer port, and how to
    run ``nft -f -`` there (the ruleset goes to its standard input)."""

    node: str
    address: str
    peer_port: int
    argv: tuple[str, ...]

    @property
    def family(self) -> str:
        """``ip6`` for an IPv6 address; ``ip`` otherwise (nft resolves a name itself)."""
        try:
            return "ip6" if ipaddress.ip_address(self.address).version == 6 else "ip"
        except ValueError:
            return "ip"


def network_part(fault: Mapping[str, Any]) -> dict[str, list[str]]:
    """The keys of a fault set that are network faults (the rest is the fault API's)."""
    return {k: list(fault[k]) for k in NETWORK_KEYS if fault.get(k)}


def ruleset(me: Host, fault: Mapping[str, Any], hosts: Mapping[str, Host]) -> str:
    """The nft script that gives ``me`` exactly ``fault`` (``{}``: no table at all)."""
    unknown = [n for k in NETWORK_KEYS for n in fault.get(k, ()) if n not in hosts]
    if unknown:
        raise NftError(f"no host known for {', '.join(sorted(set(unknown)))}")
    rules_in: list[str] = []
    rules_out: list[str] = []
    for n in fault.get("drop", ()):
        h = hosts[n]
        rules_in.append(f"{h.family} saddr {h.address} drop")
        rules_out.append(f"{h.family} daddr {h.address} drop")
    for n in fault.get("drop_in", ()):
        h = hosts[n]
        rules_in.append(f"{h.family} saddr {h.address} tcp dport {me.peer_port} drop")
    for n in fault.get("drop_out", ()):
        h = hosts[n]
        rules_out.append(f"{h.family} daddr {h.address} tcp dport {h.peer_port} drop")
    script = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
    if not rules_in and not rules_out:
        return script

    def chain(name: str, rules: list[str]) -> str:
        body = "".join(f"    {r}\n" for r in rules)
        return (
            f"  chain {name} {{\n    type filter hook {name} priority -10; policy accept;\n"
            f"{body}  }}\n"
        )

    return (
        script
        + f"table inet {TABLE} {{\n{chain('input', rules_in)}{chain('output', rules_out)}}}\n"
    )


def apply(host: Host, script: str) -> None:
    """Run ``script`` through nft on ``host`` (bounded in time)."""
    try:
        r = subprocess.run(
            host.argv, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NftError(f"{host.node}: cannot run {' '.join(host.argv)}: {e}") from None
    if r.returncode != 0:
        raise NftError(
            f"{host.node}: {' '.join(host.argv)} failed ({r.returncode}): "
            f"{(r.stderr or r.stdout).strip()[-400:]}"
        )


def set_faults(hosts: Mapping[str, Host], faults: Mapping[str, Mapping[str, Any]]) -> None:
    """Give each named member exactly its fault set's network part, replacing what it
    had (``{}`` heals it)."""
    for node, fault in faults.items():
        apply(hosts[node], ruleset(hosts[node], network_part(fault), hosts))


def netns_argv(netns: str) -> tuple[str, ...]:
    """``nft -f -`` inside a network namespace on this machine."""
    return ("ip", "netns", "exec", netns, "nft", "-f", "-")
