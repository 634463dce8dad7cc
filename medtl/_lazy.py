"""Packages whose public names are imported on first use (PEP 562), so importing the package stays cheap."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_package(
    package: str, exports: dict[str, str], *, also: tuple[str, ...] = ()
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` of a package that re-exports ``exports`` (public name -> defining
    module): a name is imported from its module the first time it is read, then kept in the package's namespace.

        __all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS)

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it.
        also: names the package defines itself, listed in ``__all__`` too (``__version__``).
    """
    names = sorted(exports) + list(also)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return list(names)

    return list(names), __getattr__, __dir__
