"""The ``raft-manager`` command line: commands (``main``), the local launcher, the
demo, and the rich rendering of the manager's models."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
