"""Exceptions raised by netbootgen's library code; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

import click


class NetbootgenError(click.ClickException):
    """Base class: a failure the user should see as one clear message (exit status 1)."""

    exit_code = 1


class InputError(NetbootgenError):
    """Bad input from the user (inventory, options): exit status 2."""

    exit_code = 2


class InventoryError(InputError):
    """The inventory failed validation; `problems` lists every error found, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"{len(problems)} error(s) in the inventory:\n{lines}")


class ToolMissing(NetbootgenError):
    """A program netbootgen runs is not installed."""

    def __init__(self, tool: str, hint: str = "") -> None:
        self.tool = tool
        msg = f"{tool} not found"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class CommandFailed(NetbootgenError):
    """A subprocess exited non-zero; the message shows the command and the tail of its output."""


class BootFailed(NetbootgenError):
    """An emulated boot did not reach every stage."""
