"""Run the CLI in-process and keep what it prints (the rich console is swapped for a buffer)."""
from __future__ import annotations

import io

from rich.console import Console

from taskloom import cli


def run_cli(args: list[str], width: int = 200) -> tuple[int, str]:
    """The exit code of ``taskloom ARGS`` and its terminal output, ``width`` columns wide."""
    buffer, console = io.StringIO(), cli.console
    cli.console = Console(file=buffer, width=width)
    try:
        code = cli.main(args)
    finally:
        cli.console = console
    return code, buffer.getvalue()
