"""``python -m medtl.pretraining CONFIG [key=value ...]``: pretrain from a config file.

The same as ``medtl pretrain``; Lightning's DDP launcher restarts this command once per extra device.
"""

from __future__ import annotations

import sys

import yaml

from medtl.errors import MedtlError
from medtl.pretraining import pretrain


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    overrides = {}
    for item in args[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: override {item!r} should be key=value, e.g. train.epochs=3", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    try:
        pretrain(args[0], overrides=overrides)
    except MedtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
