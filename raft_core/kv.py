"""The default state machine: a deterministic string key-value store.

Commands are small lists so they encode compactly: ``["put", key, value]``,
``["del", key]``, ``["cas", key, expected, new]`` (``None`` means "absent": a CAS
from None creates, a CAS to None deletes).

``KVStore`` keeps the data in a dict (the simulator's and library users' machine);
``raft_core.diskstate.LmdbKV`` keeps it on disk. Both execute commands through the
same ``apply`` over three primitives, and hash the state the same way, so their
digests compare (docs/design.md, "The on-disk state machine").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgpack

from .statemachine import CommandError


def put(key: str, value: str) -> list:
    return ["put", key, value]


def delete(key: str) -> list:
    return ["del", key]


def cas(key: str, expected: str | None, new: str | None) -> list:
    return ["cas", key, expected, new]


def hash_items(items: Iterable[tuple[str, str]]) -> str:
    """The state hash of key-value pairs given in key order."""
    h = hashlib.sha256()
    for k, v in items:
        kb, vb = k.encode(), v.encode()
        h.update(len(kb).to_bytes(4, "big") + kb + len(vb).to_bytes(4, "big") + vb)
    return h.hexdigest()


class KVStore:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def _set(self, key: str, value: str) -> None:
        self.data[key] = value

    def _remove(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def apply(self, command: Any) -> Any:
        try:
            op = command[0]
            key = command[1]
        except (TypeError, IndexError, KeyError) as e:
            raise CommandError("bad_command", f"malformed KV command {command!r}") from e
        if not isinstance(key, str) or not all(
            v is None or isinstance(v, str) for v in command[2:4]
        ):
            # Checked before executing, the same on every replica whatever holds the data.
            raise CommandError("bad_command", f"KV keys and values are strings: {command!r}")
        if op == "put":
            if len(command) < 3 or command[2] is None:
                raise CommandError("bad_command", "put needs a value (use del to remove a key)")
            self._set(key, command[2])
            return None
        if op == "del":
            return {"deleted": self._remove(key)}
        if op == "cas":
            if len(command) < 4:
                raise CommandError("bad_command", f"cas needs expected and new: {command!r}")
            expected, new = command[2], command[3]
            current = self.get(key)
            if current != expected:
                return {"ok": False, "value": current}
            if new is None:
                self._remove(key)
            else:
                self._set(key, new)
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
        # UTF-8 byte order is code point order: LmdbKV's key order gives the same hash.
        return hash_items((k, self.data[k]) for k in sorted(self.data))
