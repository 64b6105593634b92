"""The MCP face: ``raft-manager-mcp`` (entry module ``mcp_server.server``).

- ``args``: the server's flags, shared with ``raft-manager mcp`` (no SDK import, so the
  CLI does not load the MCP SDK for every command);
- ``backend``: one ``Manager`` per cluster, calls off the event loop, progress and
  errors translated for MCP;
- ``tools``: the contract's tools, their annotations and descriptions, and scoping;
- ``resources``: cluster status, the audit log, the skill and its runbooks; the prompts;
- ``http``: streamable HTTP's bearer-token rule.

This package imports nothing at import time: ``mcp_server.mcp.args`` stays cheap.
"""
