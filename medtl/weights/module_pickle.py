"""Read the tensors of a whole pickled model (``torch.save(model)``) without running any of its code.

Some published files are not state dicts but pickled ``nn.Module`` trees: torchxrayvision's DenseNet files are
``torch.save(model)`` of its ``DenseNet`` class, written by a 2020 PyTorch in the legacy (pre-zip) format. Unpickling
such a file the ordinary way imports and runs whatever the pickle names. :func:`read_module_pickle` never does:

- every class the pickle names is listed first, statically (``pickletools``, nothing executed);
- the module classes among them (``torch.nn.modules.*``, ``torchvision.models.*``, ``torchxrayvision.*``) are
  replaced by :class:`ModuleStub`, an inert object that only keeps the state the pickle hands it (its
  ``_parameters``, ``_buffers`` and ``_modules``); no code of the real class is imported or run;
- everything else must be what PyTorch's own ``weights_only`` unpickler allows (tensor rebuilders, storages,
  ``OrderedDict``, ``set``): a zip-format file is read by ``torch.load(weights_only=True)`` with the stubs added
  through ``torch.serialization.safe_globals``; a legacy-format file by :class:`_LegacyUnpickler`, whose
  ``find_class`` knows only those names and the stubs, so a planted ``os.system`` is refused before anything runs;
- the tensors are then collected from the stub tree under the names ``model.state_dict()`` would give them.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from medtl.errors import UnsafeCheckpointError, WeightsError

__all__ = ["ModuleStub", "MODULE_PACKAGES", "pickled_globals", "read_module_pickle"]

#: Packages whose classes a pickled module tree may name; they become inert :class:`ModuleStub` objects.
MODULE_PACKAGES = ("torch.nn.modules.", "torchvision.models.", "torchxrayvision.")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")

# What a legacy-format tensor pickle may name besides module classes: PyTorch's tensor rebuilders and storage types
# and the two containers nn.Module state uses (the same names torch's weights_only unpickler allows for them).
_STORAGES = (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage", "ShortStorage",
    "CharStorage", "ByteStorage", "BoolStorage",
)  # fmt: skip
_REBUILDERS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")


def _allowed_legacy(full: str) -> Any:
    module, _, name = full.rpartition(".")
    if full == "collections.OrderedDict":
        return OrderedDict
    if full == "builtins.set":
        return set
    if module == "torch" and name in _STORAGES:
        return getattr(torch, name)
    if module == "torch._utils" and name in _REBUILDERS:
        return getattr(torch._utils, name)
    return None


class ModuleStub:
    """Stands in for a pickled ``nn.Module`` of any allow-listed class: it keeps the state the pickle gives it and
    runs nothing (its constructor ignores its arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) of pickle's BUILD
            state = state[0]
        self.state = dict(state) if isinstance(state, dict) else {}


def _is_module_class(full: str) -> bool:
    return full.startswith(MODULE_PACKAGES) and _NAME.fullmatch(full) is not None


def _globals_of(stream: Any) -> set[str]:
    names = set()
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            names.add(str(arg).replace(" ", ".").replace("__builtin__.", "builtins."))
    return names


def pickled_globals(path: str | os.PathLike[str]) -> set[str]:
    """Every class or function the pickle of a ``torch.save`` file names (read statically, nothing executed)."""
    with open(path, "rb") as fh:
        if zipfile.is_zipfile(fh):
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                record = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if record is None:
                    raise WeightsError(f"{path} is a zip file without data.pkl: not a torch.save file", path=str(path))
                return _globals_of(io.BytesIO(zf.read(record)))
        fh.seek(0)
        names: set[str] = set()
        for _ in range(4):  # legacy format: magic number, protocol version, system info, then the object
            names |= _globals_of(fh)
        return names


class _LegacyUnpickler(pickle.Unpickler):
    """The object pickle of a legacy-format file: allow-listed names, module classes as stubs, storages lazily."""

    def __init__(self, fh: Any, storages: dict[str, Any]) -> None:
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        full = f"{'builtins' if module == '__builtin__' else module}.{name}"
        allowed = _allowed_legacy(full)
        if allowed is not None:
            return allowed
        if _is_module_class(full):
            return ModuleStub
        raise pickle.UnpicklingError(f"GLOBAL {full} is not allowed")

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or not saved_id:
            raise pickle.UnpicklingError("unexpected persistent id")
        kind = saved_id[0].decode() if isinstance(saved_id[0], bytes) else saved_id[0]
        if kind == "module":  # the class's source text, kept by old torch.save for a warning: never compiled
            return saved_id[1]
        if kind != "storage":
            raise pickle.UnpicklingError(f"persistent id of kind {kind!r} is not allowed")
        storage_type, root_key, _location, numel, view = saved_id[1:]
        if not (isinstance(storage_type, type) and storage_type.__name__ in _STORAGES):
            raise pickle.UnpicklingError(f"storage type {storage_type!r} is not allowed")
        dtype = storage_type._dtype  # the class attribute (``.dtype`` is the same, with a deprecation warning)
        size = torch._utils._element_size(dtype)
        if root_key not in self.storages:
            self.storages[root_key] = torch.storage.TypedStorage(
                wrap_storage=torch.UntypedStorage(int(numel) * size), dtype=dtype, _internal=True
            )
        typed = self.storages[root_key]
        if view is None:
            return typed
        view_key, offset, view_size = view
        if view_key not in self.storages:
            raw = typed._untyped_storage[int(offset) * size : (int(offset) + int(view_size)) * size]
            self.storages[view_key] = torch.storage.TypedStorage(wrap_storage=raw, dtype=dtype, _internal=True)
        return self.storages[view_key]


class _PlainUnpickler(pickle.Unpickler):
    """The small header pickles of the legacy format (numbers, dicts, lists of strings): no names at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed")


def _read_legacy(path: Path) -> Any:
    storages: dict[str, Any] = {}
    with open(path, "rb") as fh:
        for _ in range(3):  # magic number, protocol version, system info
            _PlainUnpickler(fh).load()
        result = _LegacyUnpickler(fh, storages).load()
        keys = _PlainUnpickler(fh).load()
        if not isinstance(keys, list):
            raise pickle.UnpicklingError("storage key list missing")
        offset = fh.tell()
        for key in keys:
            typed = storages[key]
            typed._untyped_storage._set_from_file(fh, offset, True, torch._utils._element_size(typed.dtype))
            offset = fh.tell()
    return result


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 64:
        raise WeightsError("the pickled module tree is deeper than 64 levels")
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + str(name)] = value.detach()
    for name, value in (state.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in skip:
            out[prefix + str(name)] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, ModuleStub):
            _collect(child, f"{prefix}{name}.", out, depth + 1)


def read_module_pickle(path: str | os.PathLike[str]) -> dict[str, torch.Tensor] | Any:
    """The tensors of a pickled model as a state dict, read without running code (see the module docstring).

    A file that holds no module tree (a plain state dict) is returned as ``torch.load(weights_only=True)`` reads it.

    Raises:
        UnsafeCheckpointError: the pickle names something that is neither a module class nor a tensor rebuilder (a
            planted ``os.system``, ``builtins.eval``, ...): refused before anything runs.
        WeightsError: the file is not a readable ``torch.save`` file.
    """
    path = Path(path)
    try:
        names = pickled_globals(path)
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"{path} is not a readable torch.save file ({type(exc).__name__}: {str(exc)[:120]}); copy or download it "
            "again",
            path=str(path),
        ) from None
    stubbed = sorted(n for n in names if _is_module_class(n))
    refused = sorted(n for n in names - set(stubbed) if _allowed_legacy(n) is None and not n.startswith("torch."))
    if refused:
        raise UnsafeCheckpointError(
            f"refusing {path}: its pickle names {', '.join(refused[:3])}, which is neither a network class nor a "
            "tensor; reading it would run code chosen by whoever made the file",
            path=str(path),
        )
    try:
        with open(path, "rb") as fh:
            is_zip = zipfile.is_zipfile(fh)
        if is_zip:
            with torch.serialization.safe_globals([(ModuleStub, n) for n in stubbed]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            obj = _read_legacy(path)
    except pickle.UnpicklingError as exc:
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it names {m.group(1)}" if m else f"{str(exc).strip().splitlines()[0][:160]}"
        raise UnsafeCheckpointError(
            f"refusing {path}: {what}, which medtl does not rebuild (only network classes, as inert stand-ins, and "
            "tensors)",
            path=str(path),
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        raise WeightsError(
            f"{path} is not a readable pickled model ({type(exc).__name__}: {str(exc).strip()[:160]}); it may be "
            "truncated: copy or download it again",
            path=str(path),
        ) from None
    if not isinstance(obj, ModuleStub):
        return obj
    state: dict[str, torch.Tensor] = {}
    _collect(obj, "", state)
    if not state:
        raise WeightsError(f"{path} holds a pickled model without tensors", path=str(path))
    return state
