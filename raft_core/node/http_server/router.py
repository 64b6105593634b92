"""Routing by method and path pattern, and the bearer-token auth hook."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from urllib.parse import unquote

from .messages import Handler, HTTPError, Request

# Returns True to let the request through, False for 401; may raise HTTPError (e.g. 403).
AuthHook = Callable[[Request], bool]


def bearer_auth(token: str) -> AuthHook:
    """An auth hook accepting ``Authorization: Bearer <token>`` (scheme case-insensitive),
    compared in constant time."""
    if not token:
        raise ValueError("empty bearer token")
    expected = token.encode()

    def check(request: Request) -> bool:
        value = request.headers.get("authorization")
        if not value:
            return False
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Header values were decoded as latin-1: encoding back gives the bytes as sent.
        return hmac.compare_digest(given.strip(" \t").encode("latin-1"), expected)

    return check


def unauthorized() -> HTTPError:
    return HTTPError(
        401,
        "unauthorized",
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Route:
    __slots__ = ("literals", "methods", "params", "pattern", "prefix")

    def __init__(
        self,
        pattern: str,
        literals: tuple[tuple[int, str], ...],
        params: tuple[tuple[int, str], ...],
    ) -> None:
        self.pattern = pattern
        self.params = params
        self.methods: dict[str, tuple[Handler, bool]] = {}
        # Literal segments before the first parameter are checked with one startswith();
        # only those after it need a per-segment comparison.
        first = params[0][0] if params else len(pattern.split("/"))
        self.prefix = "/".join(pattern.split("/")[:first]) + "/"
        self.literals = tuple((i, lit) for i, lit in literals if i > first)


def _decode_param(seg: str) -> str:
    try:
        return unquote(seg, errors="strict")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_request", "path segment is not valid UTF-8") from None


class Router:
    """Method + path-pattern dispatch. ``auth`` (if given) guards every route not added
    with ``public=True``."""

    def __init__(self, *, auth: AuthHook | None = None) -> None:
        self.auth = auth
        self._static: dict[str, _Route] = {}
        self._dynamic: dict[int, list[_Route]] = {}
        self._by_pattern: dict[str, _Route] = {}

    def add(self, method: str, pattern: str, handler: Handler, *, public: bool = False) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"pattern must start with '/': {pattern!r}")
        method = method.upper()
        route = self._by_pattern.get(pattern)
        if route is None:
            segs = pattern.split("/")
            literals: list[tuple[int, str]] = []
            params: list[tuple[int, str]] = []
            for i, seg in enumerate(segs):
                m = _PARAM_RE.fullmatch(seg)
                if m:
                    if any(name == m.group(1) for _, name in params):
                        raise ValueError(f"duplicate parameter in {pattern!r}")
                    params.append((i, m.group(1)))
                elif "{" in seg or "}" in seg:
                    raise ValueError(f"bad segment {seg!r} in {pattern!r}")
                elif i:
                    literals.append((i, seg))
            route = _Route(pattern, tuple(literals), tuple(params))
            self._by_pattern[pattern] = route
            if params:
                self._dynamic.setdefault(len(segs), []).append(route)
            else:
                self._static[pattern] = route
        if method in route.methods:
            raise ValueError(f"duplicate route {method} {pattern}")
        route.methods[method] = (handler, public)

    def route(
        self, method: str, pattern: str, *, public: bool = False
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def deco(handler: Handler) -> Handler:
            self.add(method, pattern, handler, public=public)
            return handler

        return deco

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, bool, dict[str, str]]:
        """``(handler, public, path_params)``; raises 404/405 (or 400 for a bad escape)."""
        allowed: list[str] = []
        route = self._static.get(raw_path)
        if route is not None:
            hit = route.methods.get(method)
            if hit is not None:
                return hit[0], hit[1], {}
            allowed.extend(route.methods)
        candidates = self._dynamic.get(raw_path.count("/") + 1)
        if candidates:
            segs: list[str] | None = None
            for route in candidates:
                if not raw_path.startswith(route.prefix):
                    continue
                if segs is None:
                    segs = raw_path.split("/")
                if not _matches(route, segs):
                    continue
                hit = route.methods.get(method)
                if hit is None:
                    allowed.extend(route.methods)
                    continue
                params = {}
                for i, name in route.params:
                    seg = segs[i]
                    params[name] = _decode_param(seg) if "%" in seg else seg
                return hit[0], hit[1], params
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise HTTPError(
                405,
                "method_not_allowed",
                f"method {method} not allowed here; allowed: {allow}",
                headers={"Allow": allow},
            )
        raise HTTPError(404, "not_found", f"no route for {unquote(raw_path)}")


def _matches(route: _Route, segs: list[str]) -> bool:
    for i, lit in route.literals:
        if segs[i] != lit:
            return False
    for i, _ in route.params:  # noqa: SIM110 - a loop beats all(<genexpr>) here
        if not segs[i]:
            return False
    return True
