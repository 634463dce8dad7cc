"""The ``medtl`` command line: thin typer commands over medtl's public functions.

Each command group lives in its own module with a ``register(app)`` function. :func:`main` turns a
:class:`~medtl.errors.MedtlError` into one line on stderr and a non-zero exit; set ``MEDTL_DEBUG=1`` to
see the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from medtl.errors import MedtlError

__all__ = ["app", "main"]

app = typer.Typer(
    name="medtl",
    help="Transfer learning on medical scans: DICOM/NIfTI in, a fine-tuned model and an honest "
    "pretrained-vs-scratch verdict out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_all() -> None:
    from medtl.cli import compare_cmds, data_cmds, io_cmds, model_cmds, train_cmds

    for module in (io_cmds, data_cmds, model_cmds, train_cmds, compare_cmds):
        module.register(app)


_register_all()


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a cluster's time limit or preemption, ``kill``) stops like Ctrl-C: state saved, report written."""
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medtl`` console script."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    try:
        app(args=argv, prog_name="medtl")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MedtlError as exc:
        if os.environ.get("MEDTL_DEBUG") == "1":
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
