"""The node's HTTP API, exactly as docs/design.md section 2 ("The engine and the node
API") states the contract.

Handlers validate input, call RaftNode, and map its errors to the contract's status
codes. Writes sent to a follower are answered 421 with the leader's id and API
address (not forwarded: the client or manager follows the hint, so a write never
silently takes two network hops). Linearizable reads are served by every member,
followers and learners included: a follower asks the leader for a read index
(ReadIndex) and answers from its own state once it has applied that far; 421 only
when it knows no leader or is not a member, 503 when the leader did not confirm the
read in time.

Every handler is a module-level function of an ``Api`` (the node and the limits it
enforces) and the request, so that each can be read and tested alone;
``build_router`` binds them to one node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..kv import KVStore
from ..kv import cas as kv_cas
from ..kv import delete as kv_delete
from ..kv import put as kv_put
from ..statemachine import ApplyResult
from .config import NodeConfig
from .errors import ErrorCode, NodeError
from .faults import parse_fault_request
from .http_server import (
    Deferred,
    HTTPError,
    Request,
    Response,
    Router,
    bearer_auth,
    json_response,
    text_response,
)
from .server import RaftNode

Handler = Callable[[Request], Awaitable[Response]]

HTTP_STATUS = {
    ErrorCode.NOT_LEADER: 421,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.CONFLICT: 409,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INTERNAL: 500,
}


def _fields(body: dict, allowed: set[str], required: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HTTPError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}")
    missing = sorted(required - set(body))
    if missing:
        raise HTTPError(400, "bad_request", f"missing field(s): {', '.join(missing)}")


def _opt_str(body: dict, name: str, limit: int) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise HTTPError(400, "bad_request", f"{name} must be a string or null")
    if len(v.encode()) > limit:
        raise HTTPError(400, "bad_request", f"{name} is longer than {limit} bytes")
    return v


def _session(body: dict) -> tuple[str | None, int | None]:
    cid, seq = body.get("client_id"), body.get("seq")
    if cid is None and seq is None:
        return None, None
    if not isinstance(cid, str) or not cid or len(cid) > 128:
        raise HTTPError(400, "bad_request", "client_id must be a non-empty string (<= 128 chars)")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise HTTPError(400, "bad_request", "seq must be a positive integer, with client_id")
    return cid, seq


def _int_query(req: Request, name: str) -> int | None:
    v = req.query.get(name)
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise HTTPError(400, "bad_request", f"query parameter {name} must be an integer") from None
    if n < 0:
        raise HTTPError(400, "bad_request", f"query parameter {name} must be >= 0")
    return n


def _http_error(e: NodeError) -> HTTPError:
    return HTTPError(HTTP_STATUS[e.code], e.code.value, e.message, e.extra)


def _guard(handler: Handler) -> Handler:
    async def run(req: Request) -> Response:
        try:
            return await handler(req)
        except NodeError as e:
            raise _http_error(e) from None

    return run


def _guard_now(
    handler: Callable[[Request], Deferred | Response],
) -> Callable[[Request], Deferred | Response]:
    """``_guard`` for the hot-path handlers, which run at once (see Deferred)."""

    def run(req: Request) -> Deferred | Response:
        try:
            return handler(req)
        except NodeError as e:
            raise _http_error(e) from None

    return run


def _answer(fut: asyncio.Future[Any], make: Callable[[Any], Response]) -> Deferred:
    """The response ``make`` builds from the future's result, or the node's error."""

    def finish(done: asyncio.Future[Any]) -> Response:
        try:
            result = done.result()
        except NodeError as e:
            raise _http_error(e) from None
        return make(result)

    return Deferred(fut, finish)


@dataclass(frozen=True, slots=True)
class Api:
    """What every handler needs: the node, its KV store (None when the node runs a
    custom state machine) and its configuration (the size limits)."""

    node: RaftNode
    cfg: NodeConfig
    kv: KVStore | None

    @classmethod
    def of(cls, node: RaftNode) -> Api:
        return cls(node, node.cfg, node.sm if isinstance(node.sm, KVStore) else None)


def _key_of(api: Api, req: Request) -> str:
    key = req.path_params["key"]
    if len(key.encode()) > api.cfg.max_key_bytes:
        raise HTTPError(400, "bad_request", f"key is longer than {api.cfg.max_key_bytes} bytes")
    return key


def _require_kv(api: Api) -> KVStore:
    if api.kv is None:
        raise HTTPError(404, "not_found", "this node runs a custom state machine, not the KV store")
    return api.kv


def _committed(res: ApplyResult) -> Any:
    if res.error is not None:
        raise HTTPError(
            409 if res.error.code != "bad_command" else 400, res.error.code, str(res.error)
        )
    return res.value


def _write_answer(res: ApplyResult) -> Response:
    _committed(res)
    return json_response(200, {"index": res.index, "term": res.term})


async def status(api: Api, req: Request) -> Response:
    return json_response(200, api.node.status().to_json())


def put(api: Api, req: Request) -> Deferred:
    _require_kv(api)
    key = _key_of(api, req)
    body = req.json()
    _fields(body, {"value", "client_id", "seq"}, {"value"})
    value = _opt_str(body, "value", api.cfg.max_value_bytes)
    if value is None:
        raise HTTPError(400, "bad_request", "value must be a string (use DELETE to remove a key)")
    cid, seq = _session(body)
    return _answer(api.node.submit(kv_put(key, value), cid, seq), _write_answer)


def get(api: Api, req: Request) -> Deferred | Response:
    store = _require_kv(api)
    key = _key_of(api, req)
    consistency = req.query.get("consistency", "linearizable")
    if consistency not in ("linearizable", "stale"):
        raise HTTPError(400, "bad_request", "consistency must be 'linearizable' or 'stale'")
    node = api.node

    def value_now(_: object = None) -> Response:
        # After a barrier: read once this node has applied at least its read index.
        return json_response(
            200, {"value": store.get(key), "applied_index": node.replica.applied_index}
        )

    if consistency == "stale":
        return value_now()
    return _answer(node.submit_read(), value_now)


def delete(api: Api, req: Request) -> Deferred:
    _require_kv(api)
    key = _key_of(api, req)
    body = req.json() if req.body else {}
    _fields(body, {"client_id", "seq"})
    cid, seq = _session(body)
    return _answer(api.node.submit(kv_delete(key), cid, seq), _deleted)


def _deleted(res: ApplyResult) -> Response:
    value = _committed(res)
    return json_response(
        200, {"index": res.index, "term": res.term, "deleted": bool(value["deleted"])}
    )


def cas(api: Api, req: Request) -> Deferred:
    _require_kv(api)
    key = _key_of(api, req)
    body = req.json()
    _fields(body, {"expected", "value", "client_id", "seq"}, {"expected", "value"})
    expected = _opt_str(body, "expected", api.cfg.max_value_bytes)
    value = _opt_str(body, "value", api.cfg.max_value_bytes)
    cid, seq = _session(body)
    return _answer(api.node.submit(kv_cas(key, expected, value), cid, seq), _swapped)


def _swapped(res: ApplyResult) -> Response:
    out = _committed(res)
    return json_response(
        200, {"ok": out["ok"], "value": out["value"], "index": res.index, "term": res.term}
    )


async def transfer(api: Api, req: Request) -> Response:
    body = req.json() if req.body else {}
    _fields(body, {"target"})
    target = body.get("target")
    if target is not None and not isinstance(target, str):
        raise HTTPError(400, "bad_request", "target must be a node id or null")
    leader, term = await api.node.transfer_leadership(target)
    return json_response(200, {"leader": leader, "term": term})


async def campaign(api: Api, req: Request) -> Response:
    term = api.node.campaign()
    return json_response(200, {"started": True, "term": term})


async def membership(api: Api, req: Request) -> Response:
    body = req.json()
    _fields(body, {"action", "id", "peer_address", "api_address"}, {"action", "id"})
    node_id = body["id"]
    if not isinstance(node_id, str) or not node_id or len(node_id) > 64:
        raise HTTPError(400, "bad_request", "id must be a node id (1-64 characters)")
    action = body["action"]
    if action not in ("add_learner", "promote", "remove"):
        raise HTTPError(400, "bad_request", "action must be add_learner, promote or remove")
    peer = _opt_str(body, "peer_address", 256)
    api_address = _opt_str(body, "api_address", 256)
    out = await api.node.change_membership(action, node_id, peer, api_address)
    return json_response(200, out)


async def snapshot(api: Api, req: Request) -> Response:
    index, size = await api.node.take_snapshot(image=True)
    return json_response(200, {"snapshot_index": index, "bytes": size})


async def admin_log(api: Api, req: Request) -> Response:
    return json_response(
        200, api.node.log_entries(_int_query(req, "start"), _int_query(req, "end"))
    )


async def digest(api: Api, req: Request) -> Response:
    return json_response(200, await api.node.digest(_int_query(req, "at")))


async def faults(api: Api, req: Request) -> Response:
    if not api.cfg.allow_fault_injection:
        raise HTTPError(
            403,
            "forbidden",
            "fault injection is disabled; start the node with --allow-fault-injection",
        )
    return json_response(200, api.node.set_faults(parse_fault_request(req.json())))


async def metrics(api: Api, req: Request) -> Response:
    return text_response(200, api.node.metrics.render(), content_type="text/plain; version=0.0.4")


def build_router(node: RaftNode, api_token: str | None = None) -> Router:
    router = Router(auth=bearer_auth(api_token) if api_token else None)
    api = Api.of(node)
    router.add("GET", "/v1/status", _guard(partial(status, api)), public=True)
    router.add("PUT", "/v1/kv/{key}", _guard_now(partial(put, api)))
    router.add("GET", "/v1/kv/{key}", _guard_now(partial(get, api)))
    router.add("DELETE", "/v1/kv/{key}", _guard_now(partial(delete, api)))
    router.add("POST", "/v1/kv/{key}/cas", _guard_now(partial(cas, api)))
    router.add("POST", "/v1/admin/transfer-leadership", _guard(partial(transfer, api)))
    router.add("POST", "/v1/admin/campaign", _guard(partial(campaign, api)))
    router.add("POST", "/v1/admin/membership", _guard(partial(membership, api)))
    router.add("POST", "/v1/admin/snapshot", _guard(partial(snapshot, api)))
    router.add("GET", "/v1/admin/log", _guard(partial(admin_log, api)))
    router.add("GET", "/v1/admin/digest", _guard(partial(digest, api)))
    router.add("POST", "/v1/admin/faults", _guard(partial(faults, api)))
    router.add("GET", "/metrics", _guard(partial(metrics, api)), public=True)
    return router
