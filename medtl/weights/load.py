"""Safe checkpoint loading: read tensors only, detect the format, map keys, adapt, and report.

Every checkpoint goes through the same steps:

1. :func:`read_checkpoint` reads the file with ``torch.load(map_location="cpu", weights_only=True)`` (or
   safetensors). A file that needs arbitrary unpickling is refused with :class:`UnsafeCheckpointError`: a
   ``.pth`` from the internet is code.
2. :func:`unwrap_checkpoint` finds the state dict inside: torchvision files and plain state dicts as they are,
   MedicalNet's ``{"state_dict": {"module.conv1.weight": ...}}``, Lightning checkpoints
   (``{"state_dict": {"model.net.conv1.weight": ...}, "epoch": ...}``), ``{"model": ...}`` / ``{"net": ...}``.
3. :func:`load_into` strips the prefix that makes the keys match the model (``module.``, ``model.``,
   ``backbone.``, ``net.``... whatever wraps them), adapts the first convolution to the model's input channels,
   leaves the head random when its shape differs, and raises :class:`CheckpointMismatchError` naming the missing
   keys when the backbone is not fully matched: a "pretrained" model that is secretly random is the worst failure.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from medtl.backbones.adapt import adapt_input_conv
from medtl.errors import CheckpointMismatchError, UnsafeCheckpointError, WeightsError, WeightsNotAvailableError

__all__ = [
    "LoadReport",
    "read_checkpoint",
    "unwrap_checkpoint",
    "load_checkpoint",
    "load_into",
    "check_checkpoint_fits",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "net", "model_state_dict", "model_state", "network", "module", "params")


@dataclass
class LoadReport:
    """What loading weights into a model did.

    Attributes:
        source: weight source name (``"imagenet"``, ``"medicalnet"``, ``"file"``, ``"scratch"``...).
        arch: the model's architecture.
        file: the checkpoint read, if any.
        format: the detected checkpoint format.
        prefix: the key prefix stripped to match the model (``"module."`` for MedicalNet files).
        matched: model keys loaded from the file unchanged.
        adapted: model keys loaded after adaptation, with how (first convolution for other input channels).
        left_random: model keys left at their random initialisation (the head, or everything for scratch).
        unexpected: file keys that the model does not use.
        notes: other steps (inflation to 3D...).
    """

    source: str
    arch: str
    file: str | None = None
    format: str | None = None
    prefix: str = ""
    matched: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    left_random: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def pretrained(self) -> bool:
        return bool(self.matched or self.adapted)

    def summary(self) -> str:
        """A few human-readable lines."""
        if not self.pretrained:
            text = f"{self.arch}: random initialisation ({self.source}); {len(self.left_random)} tensors random"
            return "\n".join([text, *(f"  {note}" for note in self.notes)])
        total = len(self.matched) + len(self.adapted) + len(self.left_random)
        lines = [
            f"{self.arch}: loaded {len(self.matched) + len(self.adapted)}/{total} tensors from {self.source}"
            + (f" ({self.file})" if self.file else "")
            + (f", format: {self.format}" if self.format else "")
            + (f", stripped prefix {self.prefix!r}" if self.prefix else "")
        ]
        for key, how in self.adapted.items():
            lines.append(f"  adapted {key}: {how}")
        lines.append(f"  left random: {', '.join(self.left_random) if self.left_random else 'nothing'}")
        if self.unexpected:
            lines.append(f"  unused from file: {len(self.unexpected)} ({_first(self.unexpected)})")
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _first(keys: Iterable[str], n: int = 8) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(str(k) for k in keys[:n]) + more


def _describe_unpickling(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"it holds a pickled Python object of type {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", text)
    if m:
        return f"it is a pickle using instructions (opcode {m.group(1)}) that only arbitrary Python objects need"
    return "it holds pickled Python objects besides tensors"


def read_checkpoint(path: str | os.PathLike[str]) -> object:
    """Read a checkpoint without running code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``, which only rebuilds tensors and plain containers.

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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        # a real pickle starts with the PROTO opcode, a torch.save archive with "PK"; anything else is garbage
        if "weights only" not in str(exc).lower() or not (head.startswith(b"\x80") or head == b"PK"):
            raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({exc})", path=str(path)) from exc
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


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """:func:`read_checkpoint` then :func:`unwrap_checkpoint`."""
    return unwrap_checkpoint(read_checkpoint(path), path=str(path))


def _best_prefix(keys: Iterable[str], target: set[str]) -> str:
    """The leading key prefix whose removal makes most keys match the model's."""
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in target:
                counts[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    if not counts:
        return ""
    best = max(counts.values())
    return min((p for p, c in counts.items() if c == best), key=len)


def _remap(state: Mapping[str, torch.Tensor], target: set[str]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    prefix = _best_prefix(state, target)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key.startswith(prefix) and key[len(prefix) :] in target:
            mapped[key[len(prefix) :]] = value
        else:
            unexpected.append(key)
    return mapped, prefix, unexpected


def load_into(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    arch: str,
    head_prefixes: tuple[str, ...],
    first_conv: str | None,
    source: str = "file",
    file: str | None = None,
    fmt: str | None = None,
    key_fixup: Callable[[str], str] | None = None,
    tensor_fixup: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    dry_run: bool = False,
) -> LoadReport:
    """Load ``state`` into ``net``, adapting the first convolution and reporting every key.

    Args:
        net: the network (its own keys, e.g. torchvision's ``conv1.weight``).
        state: the checkpoint's state dict, with whatever prefixes it has.
        arch: architecture name, for messages.
        head_prefixes: key prefixes of the classifier; these may stay random.
        first_conv: key of the first convolution's weight, adapted when input channels differ.
        source: weight source name, for the report.
        file: checkpoint path, for the report and messages.
        fmt: detected format, for the report.
        key_fixup: renames legacy keys (torchvision's old DenseNet names) before matching.
        tensor_fixup: converts tensors to the network's layout (axis order of 3D kernels).
        dry_run: check and report without copying anything (works on a ``meta``-device model).

    Raises:
        CheckpointMismatchError: backbone keys are missing or have other shapes.
    """
    if key_fixup is not None:
        state = {key_fixup(k): v for k, v in state.items()}
    if tensor_fixup is not None:
        state = {k: tensor_fixup(k, v) for k, v in state.items()}
    target = net.state_dict()
    mapped, prefix, unexpected = _remap(state, set(target))
    report = LoadReport(source=source, arch=arch, file=file, format=fmt, prefix=prefix, unexpected=unexpected)
    new: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    mismatched: list[str] = []
    for key, current in target.items():
        is_head = key.startswith(head_prefixes)
        value = mapped.get(key)
        if value is None:
            if is_head:
                report.left_random.append(key)
            elif not key.endswith("num_batches_tracked"):  # a counter, not a learned value; old files lack it
                missing.append(key)
            continue
        if value.shape == current.shape:
            new[key] = value
            report.matched.append(key)
        elif (
            key == first_conv
            and value.ndim == current.ndim
            and value.shape[0] == current.shape[0]
            and value.shape[2:] == current.shape[2:]
        ):
            new[key], how = adapt_input_conv(value, current.shape[1])
            report.adapted[key] = how
            logger.info("%s: %s %s", arch, key, how)
        elif is_head:
            report.left_random.append(key)
            report.notes.append(f"head {key}: file has shape {tuple(value.shape)}, model {tuple(current.shape)}")
        else:
            mismatched.append(f"{key} (file {tuple(value.shape)}, model {tuple(current.shape)})")
    if missing or mismatched:
        raise CheckpointMismatchError(_mismatch_message(report, missing, mismatched), path=file)
    if not dry_run:
        result = net.load_state_dict(new, strict=False)
        if result.unexpected_keys:  # pragma: no cover - new only holds model keys
            raise CheckpointMismatchError(f"unexpected keys {result.unexpected_keys}", path=file)
    return report


def _mismatch_message(report: LoadReport, missing: list[str], mismatched: list[str]) -> str:
    where = report.file or "the checkpoint"
    parts = [f"{where} ({report.format or 'state dict'}) does not fit {report.arch}:"]
    if missing:
        parts.append(f"{len(missing)} backbone tensors missing from the file ({_first(missing)});")
    if mismatched:
        parts.append(f"{len(mismatched)} with other shapes ({_first(mismatched, 5)});")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} file keys unused ({_first(report.unexpected, 5)});")
    guess = _guess_arch(report)
    if guess:
        parts.append(guess)
    parts.append(
        "a partly loaded backbone would be secretly random, so nothing was loaded. Use a checkpoint made for "
        f"{report.arch}, or create the model with the architecture the checkpoint was trained as"
    )
    return " ".join(parts)


def _guess_arch(report: LoadReport) -> str:
    """Name the MedicalNet depth a file was made for, from its blocks per stage."""
    keys = [k[len(report.prefix) :] if k.startswith(report.prefix) else k for k in report.unexpected + report.matched]
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for key in keys:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            bottleneck = bottleneck or ".conv3." in key
    if len(blocks) != 4:
        return ""
    layers = [max(blocks[i]) + 1 for i in range(1, 5)]
    from medtl.backbones.medicalnet3d import depth_for_layers

    depth = depth_for_layers(layers, bottleneck)
    kind = "bottleneck" if bottleneck else "basic"
    if depth is None:
        return f"The file has {kind} ResNet blocks {layers} per stage."
    return f"The file has {kind} ResNet blocks {layers} per stage: it looks like resnet{depth}."


def check_checkpoint_fits(path: str | os.PathLike[str], arch: str, *, source: object | None = None) -> LoadReport:
    """Check, without allocating the model, that the checkpoint at ``path`` fits ``arch`` (used on import)."""
    from medtl.backbones.registry import get_architecture

    spec = get_architecture(arch)
    state, fmt = load_checkpoint(path)
    in_channels = getattr(source, "in_channels", None) or spec.default_in_channels
    with torch.device("meta"):
        net = spec.build(in_channels=in_channels, num_classes=2)
    return load_into(
        net,
        state,
        arch=arch,
        head_prefixes=spec.head_prefixes,
        first_conv=spec.first_conv,
        source=getattr(source, "name", "file"),
        file=str(path),
        fmt=fmt,
        key_fixup=spec.key_fixup,
        tensor_fixup=spec.tensor_fixup,
        dry_run=True,
    )
