"""One HTTP exchange with a cluster member, for both kinds' clients.

The raft-node adapter and the etcd gateway client send different requests and read
different error bodies, but a request that never got an answer means the same for
both: a refused or timed-out connection is ``Unreachable`` (nothing was sent, so
nothing happened), and any later transport failure is a ``NodeRequestError`` that
may or may not have taken effect, unless the caller knows the request only reads.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..core.errors import NodeRequestError, Unreachable


def exchange(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    member: str,
    what: str,
    reads_only: bool,
    node: str | None,
    **request: Any,
) -> tuple[httpx.Response, dict]:
    """Send one request; the response and its JSON object body (``{}`` when it has none).

    ``member`` names the member in messages ("n1 (127.0.0.1:7101)"), ``what`` the
    request ("GET /v1/status"), ``node`` is the member's id for the error, if known.
    """
    try:
        r = client.request(method, url, **request)
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise Unreachable(f"{member} is unreachable: {_first_line(e)}") from None
    except httpx.HTTPError as e:
        raise NodeRequestError(
            f"{member} did not answer {what}: {_first_line(e)}",
            "check the cluster's status; the request may or may not have taken effect",
            indeterminate=not reads_only,
            node=node,
        ) from None
    try:
        doc = r.json()
    except ValueError:
        doc = {}
    return r, doc if isinstance(doc, dict) else {}


def _first_line(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:160]
