"""The ``raft-manager`` command line: commands (``main``), the local launchers, a
human's plan approval (``approve``), the demo and its MCP session (``demo_mcp``), and
the rich rendering of the manager's models."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
