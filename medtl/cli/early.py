"""What a long command does before it imports torch, MONAI and Lightning, which takes several seconds.

Each such command first checks what it was given with light modules only (its config, the run folder), so a mistake
is one line within a second, then says what it is loading: its first output comes within a second of its start.
"""

from __future__ import annotations

import typer


def loading(command: str, subject: object, *, quiet: bool = False) -> None:
    """Say that ``command`` is loading its libraries, on stdout with the command's other progress lines (stderr holds
    only a failure's one line); ``quiet`` (machine-readable output such as ``--json``) and the DDP processes of ranks
    other than 0 (which run the same command again) say nothing."""
    from medtl.utils import is_rank_zero_env

    if not quiet and is_rank_zero_env():
        typer.echo(f"medtl {command}: {subject}: loading torch, MONAI and Lightning...")
