"""Every tool definition is valid at every protocol revision a client negotiates: a
client on the 2025-11-25 handshake (mcp 2.x ``ClientSession``) lists the tools, and
every output schema has a root ``"type": "object"`` (docs/design.md, section 6)."""

from __future__ import annotations

import anyio
import jsonschema
from mcp.client._memory import InMemoryTransport
from mcp.client.session import ClientSession
from mcp_helpers import mcp_config

from mcp_server.server import build_server

HANDSHAKE = "2025-11-25"


def test_a_handshake_client_lists_every_tool_with_an_object_output_schema(tmp_path):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})
    server = build_server(str(cfg))

    async def main():
        async with InMemoryTransport(server) as (read, write), ClientSession(read, write) as s:
            init = await s.initialize()
            assert init.protocol_version == HANDSHAKE
            return (await s.list_tools()).tools

    tools = anyio.run(main)
    assert len(tools) == 12
    for t in tools:
        assert t.output_schema is not None, t.name
        assert t.output_schema.get("type") == "object", f"{t.name}: root is not an object"
        jsonschema.Draft202012Validator.check_schema(t.output_schema)
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
