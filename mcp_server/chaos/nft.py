"""``raft-manager chaos --network nft``: partitions as nftables rules, not node faults.

:class:`NftTarget` is a local raft-node cluster whose members run in network namespaces
of their own (``LocalNode.netns``: the test bed, tests/netns_bed.py). The nemesis asks
it for the same fault sets as with the fault API (``drop``, ``drop_in``, ``drop_out``),
and it turns them into nftables rules in the members' namespaces (``local.nft``): the
nodes learn nothing, packets just stop. Everything else a fault set can hold (a slow
disk) still goes to the node fault API, which the nodes then must allow. Besides the
partitions of the fault-API run it offers ``flap``: a link cut and restored over and
over while the fault is held.

Membership changes are not offered: a new member needs a host (a namespace) of its
own, which the manager does not create; the remote-operations test covers them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from ..core import InputError
from ..local import nft
from .schedule import VARIANTS
from .target import RaftNodeTarget

NFT_VARIANTS: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in VARIANTS.items() if k != "membership"},
    "partition": (*VARIANTS["partition"], "flap"),
}
NFT_NOTES = {
    "membership": "membership: not offered with --network nft (a new member needs a network "
    "namespace of its own, which the manager does not make)",
}


class NftTarget(RaftNodeTarget):
    variants = NFT_VARIANTS
    notes = NFT_NOTES

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._api_faulted: set[str] = set()  # members whose fault API holds something

    def hosts(self) -> dict[str, nft.Host]:
        """Every member's host: its namespace, address and peer port (cluster.yaml)."""
        hosts: dict[str, nft.Host] = {}
        for n in self.cluster().nodes:
            if not n.netns:
                raise InputError(
                    f"--network nft needs every member in a network namespace of its own; "
                    f"{n.id} runs in this machine's ({n.peer_address})",
                    "run chaos without --network (the node fault API), or on a namespaced "
                    "cluster (python tests/netns_bed.py chaos DIR ...)",
                )
            address, _, port = n.peer_address.rpartition(":")
            hosts[n.id] = nft.Host(n.id, address.strip("[]"), int(port), nft.netns_argv(n.netns))
        return hosts

    async def set_faults(self, http: httpx.AsyncClient, faults: dict[str, dict[str, Any]]) -> None:
        network = {n: nft.network_part(f) for n, f in faults.items()}
        rest = {
            n: {k: v for k, v in f.items() if k not in nft.NETWORK_KEYS} for n, f in faults.items()
        }
        hosts = self.hosts()
        try:
            await asyncio.to_thread(
                nft.set_faults, hosts, {n: f for n, f in network.items() if n in hosts}
            )
        except nft.NftError as e:
            raise InputError(str(e), "is nft installed, and are we root?") from None
        api = {n: f for n, f in rest.items() if f or n in self._api_faulted}
        if api:
            await super().set_faults(http, api)
            self._api_faulted = (self._api_faulted - set(api)) | {n for n, f in api.items() if f}
