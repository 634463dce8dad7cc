"""Safe checkpoint loading: read tensors only, detect the format, map keys, adapt, and report.

Every checkpoint goes through the same steps:

1. :func:`read_checkpoint` reads the file with ``torch.load(map_location="cpu", weights_only=True)`` (or
   safetensors). A file that needs arbitrary unpickling is refused with :class:`UnsafeCheckpointError`: a
   ``.pth`` from the internet is code. A source whose files are whole pickled models (torchxrayvision's) asks for
   ``module_pickle=True``: :func:`medtl.weights.module_pickle.read_module_pickle` then rebuilds their tensors
   without importing or running the model's classes.
2. :func:`unwrap_checkpoint` finds the state dict inside: torchvision files and plain state dicts as they are,
   MedicalNet's ``{"state_dict": {"module.conv1.weight": ...}}``, Lightning checkpoints
   (``{"state_dict": {"model.net.conv1.weight": ...}, "epoch": ...}``), ``{"model": ...}`` / ``{"net": ...}``.
3. :func:`check_finite`: a NaN or infinite tensor makes the file an error, naming the first bad key; such weights
   would train and report metrics over NaN outputs.

Matching the state dict to a network (prefixes, first convolution, head) is :func:`medtl.models.load_into`, one
floor up, since it needs the architecture.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from medtl.errors import UnsafeCheckpointError, WeightsError, WeightsNotAvailableError

__all__ = ["read_checkpoint", "unwrap_checkpoint", "check_finite", "load_checkpoint"]

_WRAPPER_KEYS = ("state_dict", "model", "net", "model_state_dict", "model_state", "network", "module", "params")


def _describe_unpickling(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"it holds a pickled Python object of type {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", text)
    if m:
        return f"it is a pickle using instructions (opcode {m.group(1)}) that only arbitrary Python objects need"
    return "it holds pickled Python objects besides tensors"


def read_checkpoint(path: str | os.PathLike[str], *, module_pickle: bool = False) -> object:
    """Read a checkpoint without running code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``, which only rebuilds tensors and plain containers.

    Args:
        path: the file.
        module_pickle: the file is a whole pickled model (a weight source's record says so): its module classes
            become inert stand-ins and only its tensors are kept (:mod:`medtl.weights.module_pickle`).

    Raises:
        WeightsNotAvailableError: the file does not exist.
        UnsafeCheckpointError: the file would need arbitrary unpickling.
        WeightsError: the file is empty, truncated or not a checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotAvailableError(f"checkpoint file {path} does not exist", path=str(path))
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint file {path} is empty; copy or download it again", path=str(path))
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(
                f"{path} is not a readable safetensors file ({exc}); it may be truncated: copy it again",
                path=str(path),
            ) from exc
    if module_pickle:
        from medtl.weights.module_pickle import read_module_pickle

        return read_module_pickle(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        # a real pickle starts with the PROTO opcode, a torch.save archive with "PK"; anything else is garbage
        if "weights only" not in str(exc).lower() or not (head.startswith(b"\x80") or head == b"PK"):
            # torch's own text here is a page about weights_only=False, which is not the problem with this file
            raise WeightsError(
                f"{path} is not a readable PyTorch checkpoint (its bytes are neither a torch.save archive nor a "
                "complete pickle); it is corrupt, truncated or not a weight file: copy or download it again",
                path=str(path),
            ) from exc
        raise UnsafeCheckpointError(
            f"refusing to load {path}: {_describe_unpickling(exc)}. Unpickling runs code chosen by whoever made "
            "the file, so medtl only reads tensors (torch.load weights_only=True). If you trust the file, load it "
            "yourself and keep only the weights: torch.save(model.state_dict(), 'weights.pth'), then pass that "
            "file",
            path=str(path),
        ) from None
    except Exception as exc:  # zip errors, EOF, garbage bytes (KeyError from the unpickler), ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first[:200]}); it is corrupt, "
            "truncated or not a weight file: copy or download it again",
            path=str(path),
        ) from exc


def _tensor_share(obj: Mapping) -> float:
    if not obj:
        return 0.0
    return sum(isinstance(v, torch.Tensor) for v in obj.values()) / len(obj)


def unwrap_checkpoint(obj: object, *, path: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Find the state dict inside a loaded checkpoint and name its format.

    Returns:
        The state dict (only tensor entries) and a format description.

    Raises:
        WeightsError: no state dict can be found.
    """
    where = path or "checkpoint"
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{where} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors); save "
            "model.state_dict() instead",
            path=path,
        )
    wrappers: list[str] = []
    is_lightning = False
    current: Mapping = obj
    for _ in range(4):
        if _tensor_share(current) >= 0.5:
            break
        if "pytorch-lightning_version" in current or ("global_step" in current and "state_dict" in current):
            is_lightning = True
        inner = next((k for k in _WRAPPER_KEYS if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            break
        wrappers.append(inner)
        current = current[inner]
    state = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if not state:
        keys = ", ".join(map(str, list(obj)[:10]))
        raise WeightsError(
            f"{where} holds no tensors that look like a state dict (top-level keys: {keys}); expected a state "
            f"dict, or one wrapped under one of {', '.join(_WRAPPER_KEYS)}",
            path=path,
        )
    if is_lightning:
        fmt = "Lightning checkpoint"
    elif wrappers == ["state_dict"] and all(k.startswith("module.") for k in state):
        fmt = "MedicalNet (state_dict, module. prefix)"
    elif wrappers:
        fmt = "state dict wrapped in " + "/".join(repr(w) for w in wrappers)
    else:
        fmt = "plain state dict"
    return state, fmt


def check_finite(state: Mapping[str, torch.Tensor], *, path: str | None = None) -> None:
    """Refuse a state dict holding NaN or infinite values.

    Raises:
        WeightsError: naming the file, the first bad key and how many of its values are not finite.
    """
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                raise WeightsError(
                    f"{path or 'the checkpoint'} holds non-finite weights: {key} has {bad} NaN/Inf value(s) of "
                    f"{value.numel()}; the file comes from a diverged or corrupted training run: use another "
                    "checkpoint (for example an earlier epoch)",
                    path=path,
                )


def load_checkpoint(
    path: str | os.PathLike[str], *, module_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], str]:
    """:func:`read_checkpoint`, :func:`unwrap_checkpoint`, then :func:`check_finite`.

    Args:
        path: the file.
        module_pickle: the file is a whole pickled model (see :func:`read_checkpoint`).

    Returns:
        The state dict (tensors only) and its format description.
    """
    state, fmt = unwrap_checkpoint(read_checkpoint(path, module_pickle=module_pickle), path=str(path))
    if module_pickle and fmt == "plain state dict":
        fmt = "pickled model, tensors read without running its code"
    check_finite(state, path=str(path))
    return state, fmt
