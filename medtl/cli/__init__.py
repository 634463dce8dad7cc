"""The ``medtl`` command line: thin typer commands over medtl's public functions.

Each command group lives in its own module with a ``register(app)`` function. :func:`main` turns a
:class:`~medtl.errors.MedtlError` into one line on stderr and a non-zero exit; set ``MEDTL_DEBUG=1`` to
see the traceback instead.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import warnings

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
    from medtl.cli import compare_cmds, cv_cmds, data_cmds, export_cmds, io_cmds, model_cmds, task_cmds, train_cmds

    for module in (io_cmds, data_cmds, model_cmds, train_cmds, compare_cmds, cv_cmds, task_cmds, export_cmds):
        module.register(app)


_register_all()


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a cluster's time limit or preemption, ``kill``) stops like Ctrl-C: state saved, report written. Both
    wait for a file being written (a checkpoint) to be in place: :func:`medtl.utils.interrupt`."""
    from medtl.utils import interrupt

    interrupt(f"stopped by signal {signal.Signals(signum).name}" if signum != signal.SIGINT else "")


def _interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt behind ``exc``, if any.

    typer answers a KeyboardInterrupt raised inside a command with ``Exit(130)`` and then ``sys.exit(130)``,
    dropping its message (where the run is and how to resume it). The interrupt is still in the chain of
    exceptions: ``SystemExit`` -> ``Exit`` (its context) -> ``KeyboardInterrupt`` (its cause).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return e
        todo += [e.__cause__, e.__context__]
    return None


def _say_interrupted(exc: KeyboardInterrupt) -> int:
    print(f"interrupted: {' '.join(str(exc).split())}" if str(exc) else "interrupted", file=sys.stderr, flush=True)
    return 130


def _quiet_stderr() -> None:
    """Keep stderr for medtl's own one line: no notices from libraries that say nothing to a user."""
    # Lightning logs every SIGTERM it sees ("[rank: 0] Received SIGTERM: 15"); medtl says what it did instead
    logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
    # a deprecation inside Lightning's own code with this torch, printed once per training
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    """A warning as the user reads it: one line, no source file, line number or code."""
    return f"warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medtl`` console script."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _terminate)
    _quiet_stderr()
    format_warning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _run(argv)
    finally:
        warnings.formatwarning = format_warning
        if argv is None and sys.argv[1:2] in (["index"], ["inspect"]):
            # The process ends next. Its last garbage collections would walk every object (typer, pydantic, numpy,
            # thousands of headers) to free nothing that matters: ~40 ms of a one-second index. Training commands
            # keep them: a writer left in a reference cycle may flush only then.
            gc.freeze()


def _run(argv: list[str] | None) -> int:
    try:
        app(args=argv, prog_name="medtl")
    except SystemExit as exc:
        interrupt = _interrupt_in(exc) if exc.code == 130 else None
        if interrupt is not None:
            return _say_interrupted(interrupt)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MedtlError as exc:
        if os.environ.get("MEDTL_DEBUG") == "1":
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # outside a command (typer turns those into SystemExit(130))
        return _say_interrupted(exc)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
