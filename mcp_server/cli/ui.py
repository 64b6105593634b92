"""What every command shares: output (rich or one JSON document), errors, exit codes,
and opening the manager for the selected cluster."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from ..core import Config, ErrorReport, ManagerError, Outcome, load_config
from ..core.context import ProgressFn
from ..manager import Manager

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """exit codes: 0 ok; 1 refused, unhealthy, divergent, unsafe plan or failed;
2 usage/configuration error or verify could not verify; 130 interrupted.
With --json every command prints exactly one JSON document on stdout."""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# -- output ----------------------------------------------------------------------------


class UI:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def emit(self, model: BaseModel, view: Callable[[Any], Any]) -> None:
        if self.json:
            sys.stdout.write(model.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
        else:
            self.out.print(view(model))

    def note(self, text: str) -> None:
        self.err.print(Text(text, style="dim"))

    @contextlib.contextmanager
    def spinner(self, message: str) -> Iterator[ProgressFn]:
        if not self.err.is_terminal:
            yield lambda done, total, msg: None
            return
        with self.err.status(message) as status:

            def progress(done: float, total: float | None, msg: str) -> None:
                status.update(f"{message}: {msg}")

            yield progress

    def error(self, e: ManagerError, cluster: str | None) -> None:
        if self.json:
            doc = ErrorReport(
                error=e.code,  # type: ignore[arg-type]
                operation=e.operation,
                cluster=cluster,
                reason=e.reason,
                reasons=e.reasons,
                next_step=e.next_step,
            )
            sys.stdout.write(doc.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
            return
        label = {"refused": "refused", "config": "error"}.get(e.code, "failed")
        self.err.print(Text(f"{label}: {e.reason}", style="bold red"))
        for r in e.reasons:
            if r != e.reason:
                self.err.print(Text(f"  - {r}", style="red"))
        if e.next_step:
            self.err.print(Text(f"next: {e.next_step}", style="yellow"))


# -- helpers ---------------------------------------------------------------------------


def config_of(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def open_manager(args: argparse.Namespace, ui: UI) -> Manager:
    """The manager for the selected cluster; the embedded default is started if it is not
    running (the CLI's promise: "started on first use"), and the user is told so."""
    cfg = config_of(args)
    c = cfg.cluster(args.cluster)
    if c.auto_start and c.is_local:
        with ui.spinner(f"starting the {c.name} cluster"):
            mgr = Manager.open(cfg, c.name, start_local=True, progress=ui.note)
        if mgr.started is not None:
            ui.note(mgr.started.detail)
        return mgr
    return Manager(c, config=cfg)


def emit_outcome(
    ui: UI, outcome: Outcome, plan_view: Callable[[Any], Any], result_view: Callable[[Any], Any]
) -> int:
    """Show the plan (a dry run) or the result (applied): the CLI's --json documents stay
    the plan and result models themselves. Exit 1 for an unsafe plan."""
    if outcome.applied:
        ui.emit(outcome.result, result_view)
        return EXIT_OK
    ui.emit(outcome.plan, plan_view)
    return EXIT_OK if outcome.plan.safe else EXIT_FAILED


def mutation_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--dry-run", action="store_true", help="only plan; print the plan and its id")
    g.add_argument("--plan-id", help="apply the plan a --dry-run printed (required in production)")
