"""``python -m medtl.pretraining CONFIG [key=value ...]``: pretrain from a config file.

``python -m medtl.pretraining --resume RUN [train.epochs=N]`` continues an interrupted or failed run from its
last.ckpt with its own config (a longer ``train.epochs`` may extend it).

The same as ``medtl pretrain``; Lightning's DDP launcher restarts this command once per extra device.
"""

from __future__ import annotations

import signal
import sys

import yaml

from medtl.errors import MedtlError
from medtl.pretraining import pretrain


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a cluster's time limit, ``kill``) stops like Ctrl-C: status interrupted, the resume command."""
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    resume = args[0] == "--resume"
    if resume and len(args) < 2:
        print("error: --resume needs the run folder, e.g. --resume runs/my-pretraining", file=sys.stderr)
        return 2
    target, rest = (args[1], args[2:]) if resume else (args[0], args[1:])
    overrides = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: override {item!r} should be key=value, e.g. train.epochs=3", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    try:
        if resume:
            pretrain(None, run_dir=target, resume=True, overrides=overrides)
        else:
            pretrain(target, overrides=overrides)
    except MedtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
