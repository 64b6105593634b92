"""The pieces of remote operation without a test bed: nftables scripts from fault sets,
per-node command templates, and how a failing command is reported."""

from __future__ import annotations

import sys

import pytest

from mcp_server.core.errors import InputError, ManagerError
from mcp_server.local import nft
from mcp_server.operations.remote import node_command, run

HOSTS = {
    "n1": nft.Host("n1", "10.0.0.1", 7101, ("nft", "-f", "-")),
    "n2": nft.Host("n2", "10.0.0.2", 7102, ("nft", "-f", "-")),
    "n3": nft.Host("n3", "fd00::3", 7103, ("nft", "-f", "-")),
}


def test_fault_sets_become_drop_rules_and_an_empty_set_removes_the_table():
    script = nft.ruleset(
        HOSTS["n1"], {"drop": ["n2"], "drop_in": ["n3"], "drop_out": ["n3"]}, HOSTS
    )
    head, table = script.split("table inet raft_chaos {\n")
    assert head == "table inet raft_chaos\ndelete table inet raft_chaos\n"  # one transaction
    inp, out = table.split("chain output")
    assert "ip saddr 10.0.0.2 drop" in inp and "ip daddr 10.0.0.2 drop" in out
    # n3's messages to n1 arrive at n1's peer port; n1's to n3 go to n3's.
    assert "ip6 saddr fd00::3 tcp dport 7101 drop" in inp
    assert "ip6 daddr fd00::3 tcp dport 7103 drop" in out
    assert "reject" not in script and "policy accept" in script
    healed = nft.ruleset(HOSTS["n1"], {}, HOSTS)
    assert healed == "table inet raft_chaos\ndelete table inet raft_chaos\n"
    assert nft.network_part({"drop": ["n2"], "disk_delay_ms": 100, "drop_in": []}) == {
        "drop": ["n2"]
    }
    with pytest.raises(nft.NftError, match="no host known for n9"):
        nft.ruleset(HOSTS["n1"], {"drop": ["n9"]}, HOSTS)


def test_a_failing_nft_says_which_host_and_what_it_said():
    host = nft.Host(
        "n1", "10.0.0.1", 7101, (sys.executable, "-c", "import sys; sys.exit('no nft')")
    )
    with pytest.raises(nft.NftError, match=r"n1: .* failed \(1\): no nft"):
        nft.set_faults({"n1": host}, {"n1": {}})


def test_command_templates_fill_each_word_and_never_split_a_value():
    argv = node_command("ssh {host} systemctl restart raft-node@{id}", "n2", "10.0.0.2")
    assert argv == ["ssh", "10.0.0.2", "systemctl", "restart", "raft-node@n2"]
    argv = node_command("sh -c 'start {id} >> /var/log/{id}.log'", "n1", "h")
    assert argv == ["sh", "-c", "start n1 >> /var/log/n1.log"]
    with pytest.raises(InputError, match=r"only \{id\} and \{host\}"):
        node_command("ssh {hostname} true", "n1", "h")
    with pytest.raises(InputError, match="No closing quotation"):
        node_command("ssh 'unterminated", "n1", "h")


def test_a_configured_command_that_fails_is_quoted_in_the_error():
    with pytest.raises(ManagerError, match="exited 3: boom"):
        run([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], "x")
    with pytest.raises(ManagerError, match="not found"):
        run(["/nonexistent/restart-it"], "restarting n1")
    with pytest.raises(ManagerError, match="did not finish within 1s"):
        run([sys.executable, "-c", "import time; time.sleep(5)"], "x", timeout_s=1.0)
