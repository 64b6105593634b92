"""Input validation of the node HTTP API (docs/design.md, "The engine and the node API").

One single-node ``raft-node`` process serves the whole module (it is its own leader, so
every route is reachable quickly). Every error must be the contract body
``{"error": CODE, "message": TEXT}`` with the contract's status.

Size limits: a key longer than ``max_key_bytes`` (1 KiB) and a value longer than
``max_value_bytes`` (1 MiB) are answered **400** by the handler, which reads the body
and names the field; a body larger than the HTTP server's limit (``max_value_bytes`` +
64 KiB) is answered **413** before it is read, because the server refuses to buffer it.
"""

from __future__ import annotations

import httpx
import pytest
from proc_helpers import ClusterFactory, assert_error, http_client, kv_path, status_of, url

pytestmark = pytest.mark.processes

MAX_KEY = 1024
MAX_VALUE = 1 << 20


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    factory = ClusterFactory(tmp_path_factory.mktemp("api"))
    try:
        c = factory.up(1)
        n = c.nodes[0]
        assert status_of(n)["role"] == "leader"
        yield n
    finally:
        factory.close()


@pytest.fixture(scope="module")
def http():
    with http_client(timeout=10.0) as client:
        yield client


def call(http: httpx.Client, node, method: str, path: str, **kw) -> httpx.Response:
    return http.request(method, url(node, path), **kw)


def raw(http: httpx.Client, node, method: str, path: str, body: bytes) -> httpx.Response:
    return http.request(
        method, url(node, path), content=body, headers={"Content-Type": "application/json"}
    )


def test_happy_path_sanity(node, http):
    r = call(http, node, "PUT", kv_path("ok"), json={"value": "v"})
    assert r.status_code == 200, r.text
    r = call(http, node, "GET", kv_path("ok"))
    assert r.json()["value"] == "v"


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"value": "a",}', b"\xff\xfe", b"", b"[1, 2]", b'"str"', b"null"],
    ids=["truncated", "text", "trailing-comma", "not-utf8", "empty", "array", "string", "null"],
)
def test_malformed_json_is_400(node, http, body):
    assert_error(raw(http, node, "PUT", kv_path("k"), body), 400, "bad_request")
    assert_error(raw(http, node, "POST", kv_path("k") + "/cas", body), 400, "bad_request")
    assert_error(raw(http, node, "POST", "/v1/admin/membership", body), 400, "bad_request")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", kv_path("k"), {"value": "v", "ttl": 3}),
        ("DELETE", kv_path("k"), {"force": True}),
        ("POST", kv_path("k") + "/cas", {"expected": None, "value": "v", "extra": 1}),
        ("POST", "/v1/admin/membership", {"action": "remove", "id": "n2", "why": "x"}),
        ("POST", "/v1/admin/transfer-leadership", {"target": None, "now": True}),
    ],
)
def test_unknown_fields_are_400(node, http, method, path, body):
    err = assert_error(call(http, node, method, path, json=body), 400, "bad_request")
    assert "unknown" in err["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", kv_path("k"), {}),
        ("PUT", kv_path("k"), {"client_id": "c", "seq": 1}),
        ("POST", kv_path("k") + "/cas", {"value": "v"}),
        ("POST", kv_path("k") + "/cas", {"expected": "v"}),
        ("POST", "/v1/admin/membership", {"id": "n2"}),
        ("POST", "/v1/admin/membership", {"action": "remove"}),
    ],
)
def test_missing_fields_are_400(node, http, method, path, body):
    assert_error(call(http, node, method, path, json=body), 400, "bad_request")


@pytest.mark.parametrize("value", [None, 1, 1.5, True, ["a"], {"a": "b"}])
def test_put_value_must_be_a_string(node, http, value):
    assert_error(call(http, node, "PUT", kv_path("k"), json={"value": value}), 400)


@pytest.mark.parametrize("field", ["expected", "value"])
@pytest.mark.parametrize("bad", [1, False, ["x"], {"x": 1}])
def test_cas_fields_must_be_string_or_null(node, http, field, bad):
    body = {"expected": None, "value": "v", field: bad}
    assert_error(call(http, node, "POST", kv_path("k") + "/cas", json=body), 400)


def test_nothing_was_written_by_rejected_requests(node, http):
    assert call(http, node, "GET", kv_path("k")).json()["value"] is None


# -- sizes ---------------------------------------------------------------------------------


def test_key_too_long_is_400(node, http):
    ok = "k" * MAX_KEY
    assert call(http, node, "PUT", kv_path(ok), json={"value": "v"}).status_code == 200
    long = "k" * (MAX_KEY + 1)
    for method, path, body in [
        ("PUT", kv_path(long), {"value": "v"}),
        ("GET", kv_path(long), None),
        ("DELETE", kv_path(long), None),
        ("POST", kv_path(long) + "/cas", {"expected": None, "value": "v"}),
    ]:
        err = assert_error(call(http, node, method, path, json=body), 400, "bad_request")
        assert "key" in err["message"]
    # The limit counts UTF-8 bytes, not characters.
    wide = "é" * (MAX_KEY // 2 + 1)
    assert_error(call(http, node, "PUT", kv_path(wide), json={"value": "v"}), 400)


def test_value_too_large_is_400_within_the_body_limit(node, http):
    # Fits the HTTP body limit, so the handler reads it and names the field: 400.
    err = assert_error(
        call(http, node, "PUT", kv_path("big"), json={"value": "x" * (MAX_VALUE + 1)}), 400
    )
    assert "value" in err["message"]
    body = {"expected": None, "value": "x" * (MAX_VALUE + 1)}
    assert_error(call(http, node, "POST", kv_path("big") + "/cas", json=body), 400)
    # Exactly the limit is accepted.
    r = call(http, node, "PUT", kv_path("big"), json={"value": "x" * MAX_VALUE})
    assert r.status_code == 200, r.text[:200]


def test_body_over_the_server_limit_is_413(node, http):
    # Larger than max_value_bytes + 64 KiB: refused from the Content-Length, unread.
    r = call(http, node, "PUT", kv_path("huge"), json={"value": "x" * (2 * MAX_VALUE)})
    err = assert_error(r, 413, "payload_too_large")
    assert "exceeds" in err["message"]
    assert call(http, node, "GET", kv_path("huge")).json()["value"] is None


# -- query parameters, sessions --------------------------------------------------------------


@pytest.mark.parametrize("consistency", ["strong", "LINEARIZABLE", "stale ", "1"])
def test_bad_consistency_is_400(node, http, consistency):
    r = call(http, node, "GET", kv_path("k"), params={"consistency": consistency})
    err = assert_error(r, 400, "bad_request")
    assert "consistency" in err["message"]


@pytest.mark.parametrize(
    "session",
    [
        {"client_id": "c", "seq": 0},
        {"client_id": "c", "seq": -1},
        {"client_id": "c", "seq": "1"},
        {"client_id": "c", "seq": 1.5},
        {"client_id": "c", "seq": True},
        {"client_id": "c"},
        {"seq": 1},
        {"client_id": "", "seq": 1},
        {"client_id": 7, "seq": 1},
        {"client_id": "c" * 129, "seq": 1},
        {"client_id": ["c"], "seq": 1},
    ],
)
def test_bad_session_is_400(node, http, session):
    assert_error(call(http, node, "PUT", kv_path("k"), json={"value": "v", **session}), 400)
    assert_error(call(http, node, "DELETE", kv_path("k"), json=session), 400)
    cas = {"expected": None, "value": "v", **session}
    assert_error(call(http, node, "POST", kv_path("k") + "/cas", json=cas), 400)


@pytest.mark.parametrize(
    "query",
    [{"start": "abc"}, {"start": "-1"}, {"end": "x"}, {"start": "1.5"}, {"end": "-3"}],
)
def test_admin_log_bad_query_is_400(node, http, query):
    err = assert_error(call(http, node, "GET", "/v1/admin/log", params=query), 400)
    assert "query parameter" in err["message"]


def test_admin_log_good_query(node, http):
    r = call(http, node, "GET", "/v1/admin/log", params={"start": "1", "end": "2"})
    assert r.status_code == 200
    body = r.json()
    assert [e["index"] for e in body["entries"]] == [1, 2]
    assert {"first_index", "last_index", "entries"} <= set(body)


def test_digest_at_a_non_retained_index_is_400(node, http):
    st = status_of(node)
    for at in (st["applied_index"] + 1000, 10**12):
        err = assert_error(call(http, node, "GET", "/v1/admin/digest", params={"at": str(at)}), 400)
        assert "not retained" in err["message"]
    assert_error(call(http, node, "GET", "/v1/admin/digest", params={"at": "abc"}), 400)
    assert_error(call(http, node, "GET", "/v1/admin/digest", params={"at": "-1"}), 400)
    r = call(http, node, "GET", "/v1/admin/digest", params={"at": str(st["applied_index"])})
    assert r.status_code == 200 and r.json()["applied_index"] == st["applied_index"]


# -- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/nope", "/v2/status", "/", "/v1/kv", "/v1/kv/a/b/c", "/v1/admin", "/v1/status/"]
)
def test_unknown_route_is_404(node, http, path):
    assert_error(call(http, node, "GET", path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/status"),
        ("DELETE", "/v1/status"),
        ("PATCH", kv_path("k")),
        ("POST", kv_path("k")),
        ("GET", kv_path("k") + "/cas"),
        ("GET", "/v1/admin/membership"),
        ("PUT", "/v1/admin/snapshot"),
        ("POST", "/v1/admin/log"),
        ("GET", "/v1/admin/faults"),
        ("POST", "/metrics"),
    ],
)
def test_wrong_method_is_405(node, http, method, path):
    r = call(http, node, method, path)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers.get("allow"), r.headers


# -- admin ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"action": "explode", "id": "n2"},
        {"action": "add_voter", "id": "n2"},
        {"action": None, "id": "n2"},
        {"action": "remove", "id": ""},
        {"action": "remove", "id": 5},
        {"action": "remove", "id": None},
        {"action": "remove", "id": "n" * 65},
        {"action": "add_learner", "id": "n2"},  # no peer_address
        {"action": "add_learner", "id": "n2", "peer_address": 7},
        {"action": "add_learner", "id": "n2", "peer_address": "127.0.0.1:1", "api_address": 1},
    ],
)
def test_membership_bad_input_is_400(node, http, body):
    assert_error(call(http, node, "POST", "/v1/admin/membership", json=body), 400)


def test_membership_bad_addresses_are_400(node, http):
    bad = ["nowhere", "127.0.0.1", "127.0.0.1:99999", ":80", "h:p"]
    answers = {}
    for address in bad:
        body = {"action": "add_learner", "id": "n2", "peer_address": address}
        answers[f"peer_address={address}"] = call(
            http, node, "POST", "/v1/admin/membership", json=body
        )
        body = {"action": "add_learner", "id": "n2", "peer_address": "127.0.0.1:1"}
        body["api_address"] = address
        answers[f"api_address={address}"] = call(
            http, node, "POST", "/v1/admin/membership", json=body
        )
    wrong = {k: f"{r.status_code} {r.text}" for k, r in answers.items() if r.status_code != 400}
    assert not wrong, f"bad addresses not answered 400: {wrong}"
    for r in answers.values():
        assert_error(r, 400, "bad_request")


def test_membership_unchanged_after_rejections(node, http):
    st = status_of(node)
    assert st["voters"] == [node.id] and st["learners"] == [] and not st["joint"]


def test_promote_of_a_non_learner_is_400(node, http):
    for who in (node.id, "n7"):  # a voter, and a node that is not a member at all
        body = {"action": "promote", "id": who}
        err = assert_error(call(http, node, "POST", "/v1/admin/membership", json=body), 400)
        assert "learner" in err["message"]


def test_transfer_leadership_to_unknown_node_is_400(node, http):
    r = call(http, node, "POST", "/v1/admin/transfer-leadership", json={"target": "n9"})
    assert_error(r, 400, "bad_request")
    r = call(http, node, "POST", "/v1/admin/transfer-leadership", json={"target": 3})
    assert_error(r, 400, "bad_request")
    # Alone in the cluster there is no one to hand over to: a conflict, not bad input.
    r = call(http, node, "POST", "/v1/admin/transfer-leadership", json={"target": None})
    assert_error(r, 409, "conflict")
    # To itself is a no-op.
    r = call(http, node, "POST", "/v1/admin/transfer-leadership", json={"target": node.id})
    assert r.status_code == 200 and r.json()["leader"] == node.id
    assert status_of(node)["role"] == "leader"


def test_campaign_on_the_leader_is_409(node, http):
    assert_error(call(http, node, "POST", "/v1/admin/campaign"), 409, "conflict")


def test_faults_forbidden_without_fault_injection(node, http):
    for body in ({"drop": ["n2"]}, {"clear": True}, {"delay_ms": 5}):
        err = assert_error(call(http, node, "POST", "/v1/admin/faults", json=body), 403)
        assert err["error"] == "forbidden" and "--allow-fault-injection" in err["message"]


def test_snapshot_answers_contract_fields(node, http):
    call(http, node, "PUT", kv_path("snap"), json={"value": "v"})
    r = call(http, node, "POST", "/v1/admin/snapshot")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"snapshot_index", "bytes"}
    assert body["snapshot_index"] >= 1 and body["bytes"] > 0


def test_node_still_healthy_after_all_that(node, http):
    st = status_of(node)
    assert st["role"] == "leader" and st["healthy"] is True
    r = call(http, node, "PUT", kv_path("end"), json={"value": "ok"})
    assert r.status_code == 200
    assert call(http, node, "GET", kv_path("end")).json()["value"] == "ok"
