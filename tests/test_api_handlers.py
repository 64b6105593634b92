"""The node API's handlers called directly, without HTTP: each is a module-level
function of an ``Api`` and a request (raft_core/node/api.py), run here against a real
in-process single-voter ``RaftNode``. The wire contract itself is pinned by
test_node_api.py; these tests pin what each handler does with its input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import started_single_node

from raft_core.node import api
from raft_core.node.errors import BadRequest, NodeError
from raft_core.node.http_server import Deferred, HTTPError, Request, Response


def _request(method: str, path: str, body: Any = None, query: str = "", **params: str) -> Request:
    raw = b"" if body is None else json.dumps(body).encode()
    req = Request(method, path, query, {}, raw)
    req.path_params.update(params)
    return req


async def _answer(out: Deferred | Response | Awaitable[Response]) -> tuple[int, Any]:
    """Status and JSON body of what a handler returned, however it answers."""
    if isinstance(out, Deferred):
        await asyncio.wait({out.future})
        out = out.finish(out.future)
    elif not isinstance(out, Response):
        out = await out
    return out.status, json.loads(out.body)


def _with_node(test: Callable[[api.Api], Awaitable[None]], tmp_path: Path, **cfg: Any) -> None:
    async def main() -> None:
        node = await started_single_node(tmp_path, **cfg)
        try:
            await asyncio.wait_for(test(api.Api.of(node)), 20)
        finally:
            await node.stop()

    asyncio.run(main())


def test_put_then_get_and_cas_answer_with_the_applied_entry(tmp_path: Path) -> None:
    async def test(a: api.Api) -> None:
        status, put = await _answer(
            api.put(a, _request("PUT", "/v1/kv/k", {"value": "v"}, key="k"))
        )
        assert status == 200 and put["index"] >= 2 and put["term"] >= 1
        for consistency in ("linearizable", "stale"):
            got = api.get(
                a, _request("GET", "/v1/kv/k", query=f"consistency={consistency}", key="k")
            )
            status, body = await _answer(got)
            assert (status, body["value"]) == (200, "v")
            assert body["applied_index"] >= put["index"]
        swap = _request("POST", "/v1/kv/k/cas", {"expected": "v", "value": "w"}, key="k")
        status, body = await _answer(api.cas(a, swap))
        assert status == 200 and body["ok"] is True and body["index"] > put["index"]
        status, body = await _answer(api.delete(a, _request("DELETE", "/v1/kv/k", key="k")))
        assert body["deleted"] is True

    _with_node(test, tmp_path)


def test_bad_input_is_refused_before_anything_is_proposed(tmp_path: Path) -> None:
    async def test(a: api.Api) -> None:
        last = a.node.raw.last_index()
        long_key = "k" * (a.cfg.max_key_bytes + 1)
        with pytest.raises(HTTPError, match="key is longer") as e:
            api.put(a, _request("PUT", "/v1/kv/x", {"value": "v"}, key=long_key))
        assert e.value.status == 400
        with pytest.raises(HTTPError, match="unknown field"):
            api.put(a, _request("PUT", "/v1/kv/k", {"value": "v", "ttl": 3}, key="k"))
        with pytest.raises(HTTPError, match="use DELETE"):
            api.put(a, _request("PUT", "/v1/kv/k", {"value": None}, key="k"))
        with pytest.raises(HTTPError, match="consistency must be"):
            api.get(a, _request("GET", "/v1/kv/k", query="consistency=eventual", key="k"))
        assert a.node.raw.last_index() == last

    _with_node(test, tmp_path)


def test_a_custom_state_machine_has_no_kv_routes(tmp_path: Path) -> None:
    async def test(a: api.Api) -> None:
        bare = api.Api(a.node, a.cfg, kv=None)
        with pytest.raises(HTTPError, match="custom state machine") as e:
            api.get(bare, _request("GET", "/v1/kv/k", key="k"))
        assert e.value.status == 404
        status, body = await _answer(api.status(bare, _request("GET", "/v1/status")))
        assert status == 200 and body["role"] == "leader"

    _with_node(test, tmp_path)


def test_membership_goes_through_the_driver_and_answers_the_new_configuration(
    tmp_path: Path,
) -> None:
    async def test(a: api.Api) -> None:
        # A new leader takes no change before its no-op is applied; a read barrier
        # returns once it is.
        await a.node.read_barrier()
        add = {"action": "add_learner", "id": "n2", "peer_address": "127.0.0.1:1"}
        status, body = await _answer(api.membership(a, _request("POST", "/m", add)))
        assert status == 200 and body["voters"] == ["n1"] and body["learners"] == ["n2"]
        assert a.node.raw.entry_at(body["index"]) is not None
        assert a.node.addresses["n2"].peer == "127.0.0.1:1", "the entry's context was applied"
        remove = {"action": "remove", "id": "n2"}
        status, body = await _answer(api.membership(a, _request("POST", "/m", remove)))
        assert body["learners"] == [] and "n2" not in a.node.addresses
        with pytest.raises(BadRequest, match="needs peer_address"):
            await api.membership(a, _request("POST", "/m", {"action": "add_learner", "id": "n3"}))
        with pytest.raises(HTTPError, match="action must be"):
            await api.membership(a, _request("POST", "/m", {"action": "demote", "id": "n1"}))

    _with_node(test, tmp_path)


def test_admin_handlers_refuse_what_the_node_cannot_do(tmp_path: Path) -> None:
    async def test(a: api.Api) -> None:
        with pytest.raises(BadRequest, match="not a voter"):
            await api.transfer(a, _request("POST", "/t", {"target": "n9"}))
        status, body = await _answer(api.transfer(a, _request("POST", "/t", {"target": "n1"})))
        assert (status, body["leader"]) == (200, "n1")
        with pytest.raises(NodeError, match="already the leader"):
            await api.campaign(a, _request("POST", "/c"))
        with pytest.raises(HTTPError, match="fault injection is disabled") as e:
            await api.faults(a, _request("POST", "/f", {"drop": ["n2"]}))
        assert e.value.status == 403
        with pytest.raises(HTTPError, match="must be >= 0"):
            await api.admin_log(a, _request("GET", "/l", query="start=-1"))

    _with_node(test, tmp_path)
