"""Members on other hosts: the per-node commands clusters.yaml configures.

A cluster given by ``endpoints`` has processes raft-manager cannot signal. Two of its
operations still act on the hosts, through commands the operator writes once
(docs/design.md, "Beyond one machine"; docs/three-machines.md):

* ``recover_command`` (recover_node): restarts a member that does not answer, e.g.
  ``ssh {host} systemctl restart raft-node@{id}``; in the test bed,
  ``ip netns exec ...``.
* ``nft_command`` (inject_fault partition, heal): runs ``nft -f -`` on a member's host,
  which then drops the packets (``local.nft``), e.g. ``ssh {host} nft -f -``.

A template is split into words first (shell rules, no shell runs it), then ``{id}`` and
``{host}`` are filled into each word, so a value can never become another word or an
operator. ``{host}`` is ``hosts[id]`` from clusters.yaml, else the host of the member's
API address. Every command is bounded in time; a failure says what ran and what it said.
"""

from __future__ import annotations

import re
import shlex
import subprocess

from ..core.context import OperationContext
from ..core.errors import InputError, ManagerError
from ..core.view import ClusterView
from ..local import nft

COMMAND_TIMEOUT_S = 120.0
_HOST = re.compile(r"^[A-Za-z0-9.:_-]+$")


def host_of(ctx: OperationContext, view: ClusterView, node: str) -> str:
    """``node``'s host: clusters.yaml ``hosts``, else the host of its API address."""
    configured = (ctx.cluster.hosts or {}).get(node)
    address = configured
    if address is None:
        st = view.statuses.get(node)
        address = st.api_address if st else None
        for other in view.statuses.values():
            address = address or other.addresses.get(node)
        if address:
            address = address.rpartition(":")[0].strip("[]")
    if not address or not _HOST.match(address):
        raise InputError(
            f"cluster {ctx.name!r}: no usable host known for {node} ({address!r})",
            f"name it in clusters.yaml: hosts: {{{node}: HOST}}",
        )
    return address


def node_command(template: str, node: str, host: str) -> list[str]:
    """The argv of a per-node command template for ``node`` on ``host``."""
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise InputError(f"command template {template!r}: {e}", "fix clusters.yaml") from None
    try:
        return [w.format(id=node, host=host) for w in words]
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(
            f"command template {template!r} uses {e}; only {{id}} and {{host}} are known",
            "fix clusters.yaml ({{ and }} for literal braces)",
        ) from None


def run(argv: list[str], what: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a configured command; its output, or a ManagerError that quotes it."""
    shown = shlex.join(argv)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        missing = f"{what}: {argv[0]} not found (`{shown}`)"
        raise ManagerError(missing, "fix clusters.yaml") from None
    except subprocess.TimeoutExpired:
        raise ManagerError(
            f"{what}: `{shown}` did not finish within {timeout_s:.0f}s",
            "check that the command returns once the service is started",
        ) from None
    if r.returncode != 0:
        raise ManagerError(
            f"{what}: `{shown}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}",
            "run the command by hand to see what it needs",
        )
    return r.stdout


def nft_hosts(ctx: OperationContext, view: ClusterView) -> dict[str, nft.Host]:
    """Every member's host for ``local.nft`` (partitions only need the address)."""
    template = ctx.cluster.nft_command
    if template is None:
        raise InputError(f"cluster {ctx.name!r} has no nft_command")
    hosts: dict[str, nft.Host] = {}
    for m in view.members():
        host = host_of(ctx, view, m)
        hosts[m] = nft.Host(m, host, 0, tuple(node_command(template, m, host)))
    return hosts


def set_network_faults(
    ctx: OperationContext, hosts: dict[str, nft.Host], faults: dict[str, dict]
) -> None:
    """``local.nft.set_faults``, its errors phrased for the operator."""
    try:
        nft.set_faults(hosts, faults)
    except nft.NftError as e:
        raise ManagerError(
            f"cluster {ctx.name!r}: {e}",
            "check nft_command in clusters.yaml (it must run `nft -f -` as root on the host)",
        ) from None
