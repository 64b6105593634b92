"""The client matrix's shared parts (tests/test_mcp_matrix.py, docs/design.md section 7).

Every cell runs the same scenario, a list of steps made from the server's own tool list,
and hands back the same transcript (what it listed, and each call's result as the wire
carried it), so one function judges every client:

- list tools, resources and prompts;
- call every read-only tool; dry-run every mutation tool that offers ``dry_run``;
- apply one mutation (``replicate``) and get one refusal (removing a member that is not
  there);
- validate every ``structuredContent`` against its tool's ``outputSchema`` with
  ``jsonschema`` (Draft 2020-12).

The per-revision rules for a tool definition are written here from the MCP specification
text of each revision (the "Tool" type of its schema and the tools page), not vendored.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from testkit import unavailable

CLIENTS_DIR = Path(__file__).resolve().parent / "mcp_clients"
NODE_BIN = CLIENTS_DIR / "node_modules" / ".bin"
NPM_INSTALL = f"cd {CLIENTS_DIR} && npm ci"

# Handshake-era revisions a raw client can ask for, oldest first.
REVISIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

# Arguments for the tools whose inputs are required (read-only tools and dry runs).
READ_ARGS: dict[str, dict[str, Any]] = {"read": {"key": "matrix"}}
DRY_RUN_ARGS: dict[str, dict[str, Any]] = {
    "change_membership": {"action": "add_learner", "node_id": "n6"},  # never added
}
REFUSAL = {
    "tool": "change_membership",
    "arguments": {"action": "remove", "node_id": "n9", "dry_run": False},
    "expect": "refused",
}


def require_node() -> None:
    """Node, npm and the pinned packages: under CI their absence fails, locally it skips."""
    missing = [b for b in ("node", "npm") if shutil.which(b) is None]
    if not missing and not (NODE_BIN / "claude").exists():
        missing.append(f"{CLIENTS_DIR.name}/node_modules")
    if not missing:
        return
    message = f"missing {', '.join(missing)}; install with: {NPM_INSTALL}"
    unavailable(message)


# -- the scenario ---------------------------------------------------------------------------


def scenario(tools: list[dict], cell: str) -> list[dict]:
    """The steps every cell runs, from the tool list the server gave."""
    steps = []
    for t in sorted(tools, key=lambda t: t["name"]):
        name, props = t["name"], t["inputSchema"].get("properties", {})
        required = set(t["inputSchema"].get("required", []))
        if (t.get("annotations") or {}).get("readOnlyHint"):
            args = READ_ARGS.get(name, {})
        elif "dry_run" in props:
            args = {**DRY_RUN_ARGS.get(name, {}), "dry_run": True}
        else:
            continue
        assert required <= set(args), f"give {name} example arguments for {required - set(args)}"
        steps.append({"tool": name, "arguments": args, "expect": "ok"})
    apply = {"entries": [{"key": f"matrix/{cell}", "value": cell}]}
    steps.append({"tool": "replicate", "arguments": apply, "expect": "ok"})
    steps.append(REFUSAL)
    return steps


def result_record(tool: str, result: dict) -> dict:
    """One call's result as the wire carries it (camelCase keys)."""
    text = "".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
    return {
        "tool": tool,
        "isError": bool(result.get("isError")),
        "structuredContent": result.get("structuredContent"),
        "text": text,
    }


def check_transcript(transcript: dict, steps: list[dict], expected_tools: set[str]) -> None:
    """Judge one cell: what it listed, and every call against its step and output schema."""
    tools = {t["name"]: t for t in transcript["tools"]}
    assert set(tools) == expected_tools
    assert any(r.startswith("raft://skill") for r in transcript["resources"]), transcript
    assert transcript["prompts"], "no prompts listed"
    assert len(transcript["calls"]) == len(steps)
    for step, call in zip(steps, transcript["calls"], strict=True):
        assert call["tool"] == step["tool"]
        where = f"{step['tool']}({json.dumps(step['arguments'])})"
        if step["expect"] == "refused":
            assert call["isError"] and "refused" in call["text"], f"{where}: {call}"
            continue
        assert not call["isError"], f"{where} failed: {call['text'][:500]}"
        assert_matches_output_schema(tools[step["tool"]], call["structuredContent"], where)


def assert_matches_output_schema(tool: dict, structured: Any, where: str) -> None:
    """A successful call's structuredContent validates against the tool's outputSchema."""
    schema = tool.get("outputSchema")
    assert schema is not None and structured is not None, f"{where}: no schema or no content"
    errors = sorted(Draft202012Validator(schema).iter_errors(structured), key=str)
    assert not errors, f"{where}: structuredContent does not match outputSchema: {errors[0]}"


# -- each revision's rules for a tool definition ---------------------------------------------

HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
NAME_2025_11_25 = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _object_schema(schema: Any, what: str) -> list[str]:
    """An input or output schema as every handshake revision types it: a JSON object whose
    ``type`` is "object", with an optional ``properties`` object and ``required`` list."""
    if not isinstance(schema, dict):
        return [f"{what}: must be an object"]
    problems = []
    if schema.get("type") != "object":
        problems.append(f'{what}: root "type" must be "object" (got {schema.get("type")!r})')
    if not isinstance(schema.get("properties", {}), dict):
        problems.append(f"{what}.properties: must be an object")
    required = schema.get("required", [])
    if not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        problems.append(f"{what}.required: must be a list of strings")
    return problems


def revision_problems(tool: dict, revision: str) -> list[str]:
    """What in ``tool`` breaks ``revision``'s rules (empty: it conforms).

    2024-11-05: name (string), optional description, inputSchema an object schema.
    2025-03-26: adds annotations (title and four boolean hints).
    2025-06-18: adds title and outputSchema (an object schema: root type "object");
    structured results must conform to it.
    2025-11-25: schemas default to JSON Schema 2020-12 (so they must be valid 2020-12
    schemas), and names SHOULD be 1-128 of A-Z a-z 0-9 _ - . (taken here as a must).
    """
    problems = []
    if not (isinstance(tool.get("name"), str) and tool["name"]):
        problems.append("name: must be a non-empty string")
    if not isinstance(tool.get("description", ""), str):
        problems.append("description: must be a string")
    problems += _object_schema(tool.get("inputSchema"), "inputSchema")
    if revision >= "2025-03-26" and "annotations" in tool:
        ann = tool["annotations"]
        if not isinstance(ann, dict):
            problems.append("annotations: must be an object")
        else:
            problems += [f"annotations.{h}: must be a boolean" for h in HINTS
                         if h in ann and not isinstance(ann[h], bool)]  # fmt: skip
            if not isinstance(ann.get("title", ""), str):
                problems.append("annotations.title: must be a string")
    if revision >= "2025-06-18":
        if not isinstance(tool.get("title", ""), str):
            problems.append("title: must be a string")
        if "outputSchema" in tool:
            problems += _object_schema(tool["outputSchema"], "outputSchema")
    if revision >= "2025-11-25":
        if not NAME_2025_11_25.match(tool.get("name") or ""):
            problems.append(f"name: {tool.get('name')!r} is outside [A-Za-z0-9_.-]{{1,128}}")
        for key in ("inputSchema", "outputSchema"):
            if isinstance(tool.get(key), dict):
                try:
                    Draft202012Validator.check_schema(tool[key])
                except Exception as e:  # jsonschema.SchemaError
                    problems.append(f"{key}: not a valid JSON Schema 2020-12: {e}")
    return problems


# -- a raw JSON-RPC client over stdio --------------------------------------------------------


class RawStdio:
    """Newline-delimited JSON-RPC to a server process, at one handshake revision."""

    def __init__(self, argv: list[str], env: dict[str, str], timeout_s: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.timeout_s = timeout_s
        self.next_id = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.buffer = b""

    def initialize(self, revision: str) -> dict:
        result = self.request(
            "initialize",
            {
                "protocolVersion": revision,
                "capabilities": {},
                "clientInfo": {"name": "raw-json-rpc", "version": "0"},
            },
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def request(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)
        while True:
            answer = self._read()
            if answer.get("id") == self.next_id and "method" not in answer:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]

    def _send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, "the server did not answer in time"
            if self.sel.select(left):
                chunk = os.read(self.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
                assert chunk, f"the server exited: {self.close()}"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> str:
        """Stop the server (EOF on stdin, as the spec's stdio shutdown says); its stderr."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sel.close()
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""


def raw_transcript(client: RawStdio, steps: list[dict]) -> dict:
    """Run the scenario over a raw session (initialized by the caller)."""
    return {
        "tools": client.request("tools/list")["tools"],
        "resources": [r["uri"] for r in client.request("resources/list")["resources"]],
        "prompts": [p["name"] for p in client.request("prompts/list")["prompts"]],
        "calls": [
            result_record(
                s["tool"],
                client.request("tools/call", {"name": s["tool"], "arguments": s["arguments"]}),
            )
            for s in steps
        ],
    }
