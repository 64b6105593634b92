"""The default state machine: a deterministic string key-value store.

Commands are small lists so they encode compactly: ``["put", key, value]``,
``["del", key]``, ``["cas", key, expected, new]`` (``None`` means "absent": a CAS
from None creates, a CAS to None deletes).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from .statemachine import CommandError


def put(key: str, value: str) -> list:
    return ["put", key, value]


def delete(key: str) -> list:
    return ["del", key]


def cas(key: str, expected: str | None, new: str | None) -> list:
    return ["cas", key, expected, new]


class KVStore:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def apply(self, command: Any) -> Any:
        try:
            op = command[0]
            key = command[1]
        except (TypeError, IndexError, KeyError) as e:
            raise CommandError("bad_command", f"malformed KV command {command!r}") from e
        if op == "put":
            self.data[key] = command[2]
            return None
        if op == "del":
            return {"deleted": self.data.pop(key, None) is not None}
        if op == "cas":
            expected, new = command[2], command[3]
            current = self.data.get(key)
            if current != expected:
                return {"ok": False, "value": current}
            if new is None:
                self.data.pop(key, None)
            else:
                self.data[key] = new
            return {"ok": True, "value": new}
        raise CommandError("bad_command", f"unknown KV operation {op!r}")

    def snapshot(self) -> bytes:
        return msgpack.packb(self.data, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        restored = msgpack.unpackb(data, raw=False)
        if not isinstance(restored, dict):
            raise ValueError("KV snapshot is not a map")
        self.data = restored

    def state_hash(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.data):
            kb, vb = k.encode(), self.data[k].encode()
            h.update(len(kb).to_bytes(4, "big") + kb + len(vb).to_bytes(4, "big") + vb)
        return h.hexdigest()
