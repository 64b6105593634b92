#!/bin/sh
# Register the raft-manager MCP server with Claude Code (stdio). Run in the project.
# Project scope writes .mcp.json (commit it to share); drop --config to use the
# embedded local cluster; add --read-only to expose only the read-only tools.
claude mcp add --scope project agent-raft-manager -- raft-manager-mcp --config "$PWD/clusters.yaml"

# A second, read-only server for production observation:
# claude mcp add --scope project agent-raft-manager-prod -- raft-manager-mcp --config "$PWD/clusters.yaml" --read-only
