"""Matching a checkpoint's state dict to a network, and the report of what that did.

:func:`load_into` strips the prefix that makes the keys match the model (``module.``, ``model.``, ``backbone.``,
``net.``... whatever wraps them), adapts the first convolution to the model's input channels, leaves the head
random when its shape differs, and raises :class:`CheckpointMismatchError` naming the missing keys when the
backbone is not fully matched: a "pretrained" model that is secretly random is the worst failure. Reading the file
safely is :mod:`medtl.weights.load`; the architecture record (:class:`ArchSpec`) says where the head and the first
convolution are.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from medtl.backbones.adapt import adapt_input_conv
from medtl.backbones.medicalnet3d import depth_for_layers
from medtl.backbones.registry import ArchSpec, get_architecture
from medtl.errors import CheckpointMismatchError, UnknownOptionError
from medtl.weights.cache import add_to_cache, parse_weight_name
from medtl.weights.load import load_checkpoint
from medtl.weights.sources import WeightFile, WeightSource

__all__ = ["LoadReport", "load_into", "check_checkpoint_fits", "import_weights", "read_source_state"]

logger = logging.getLogger(__name__)


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
        sha256: SHA-256 of the file actually loaded (computed from it, not copied from the registry).
        verified: whether that hash matches one the weight source publishes; ``False`` means "unverified" (a
            user's file, or a source such as MedicalNet that publishes none).
        verification: one line saying what the hash was checked against.
        restriction: what the weights' licence or training data restricts (non-commercial research...), or ``None``.
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
    sha256: str | None = None
    verified: bool = False
    verification: str = ""
    restriction: str | None = None

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
        if self.sha256:
            lines.append(f"  sha256 {self.sha256} ({self.verification})")
        for key, how in self.adapted.items():
            lines.append(f"  adapted {key}: {how}")
        lines.append(f"  left random: {', '.join(self.left_random) if self.left_random else 'nothing'}")
        if self.unexpected:
            lines.append(f"  unused from file: {len(self.unexpected)} ({_first(self.unexpected)})")
        lines.extend(f"  {note}" for note in self.notes)
        if self.restriction:
            lines.append(f"  licence RESTRICTED: {self.restriction}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _first(keys: Iterable[str], n: int = 8) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(str(k) for k in keys[:n]) + more


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
    spec: ArchSpec,
    *,
    source: str = "file",
    file: str | None = None,
    fmt: str | None = None,
    dry_run: bool = False,
) -> LoadReport:
    """Load ``state`` into ``net``, a network of architecture ``spec``, adapting the first convolution and reporting
    every key.

    The record says where the head is (it may stay random), which convolution is the first (adapted when the
    input channels differ), and how to rename legacy keys or reorder kernel axes before matching.

    Args:
        net: the network (its own keys, e.g. torchvision's ``conv1.weight``).
        state: the checkpoint's state dict, with whatever prefixes it has.
        spec: the architecture record of ``net``.
        source: weight source name, for the report.
        file: checkpoint path, for the report and messages.
        fmt: detected format, for the report.
        dry_run: check and report without copying anything (works on a ``meta``-device model).

    Raises:
        CheckpointMismatchError: backbone keys are missing or have other shapes.
    """
    arch, head_prefixes, first_conv = spec.name, spec.head_prefixes, spec.first_conv_key
    key_fixup, tensor_fixup = spec.key_fixup, spec.tensor_fixup
    if key_fixup is not None:
        state = {key_fixup(k): v for k, v in state.items()}
    if tensor_fixup is not None:
        state = {k: tensor_fixup(k, v) for k, v in state.items()}
    target = net.state_dict()
    mapped, prefix, unexpected = _remap(state, set(target))
    report = LoadReport(source=source, arch=arch, file=file, format=fmt, prefix=prefix, unexpected=unexpected)
    resized = _apply_state_fixup(spec, net, mapped, file)
    extra = [k for k in mapped if k not in target]  # keys the fixup made that the network lacks
    for key in extra:
        del mapped[key]
    report.unexpected += extra
    new_prefixes = spec.new_prefixes
    new: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    mismatched: list[str] = []
    for key, current in target.items():
        is_head = key.startswith(head_prefixes)
        is_new = bool(new_prefixes) and key.startswith(new_prefixes)
        value = mapped.get(key)
        if value is None:
            if is_head or is_new:  # the head, or layers medtl adds (a ViT's feature pyramid): random
                report.left_random.append(key)
            elif not key.endswith("num_batches_tracked"):  # a counter, not a learned value; old files lack it
                missing.append(key)
            continue
        if value.shape == current.shape:
            new[key] = value
            if key in resized:
                report.adapted[key] = resized[key]
            else:
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
        elif is_head or is_new:
            report.left_random.append(key)
            report.notes.append(f"{'head' if is_head else 'new layer'} {key}: file has shape {tuple(value.shape)}, "
                                f"model {tuple(current.shape)}")  # fmt: skip
        else:
            mismatched.append(f"{key} (file {tuple(value.shape)}, model {tuple(current.shape)})")
    if missing or mismatched:
        raise CheckpointMismatchError(_mismatch_message(report, missing, mismatched), path=file)
    fresh = [k for k in report.left_random if new_prefixes and k.startswith(new_prefixes)]
    if fresh:
        report.notes.append(
            f"feature pyramid for multi-scale features new (random): {len(fresh)} tensors ({_first(fresh, 3)})"
        )
    if not dry_run:
        result = net.load_state_dict(new, strict=False)
        if result.unexpected_keys:  # pragma: no cover - new only holds model keys
            raise CheckpointMismatchError(f"unexpected keys {result.unexpected_keys}", path=file)
    return report


def _apply_state_fixup(spec: ArchSpec, net: nn.Module, mapped: dict[str, torch.Tensor], file: str | None) -> dict:
    """Run the record's ``state_fixup`` on the matched tensors (in place); return what it resized, with how."""
    if spec.state_fixup is None or not mapped:
        return {}
    before = {k: tuple(v.shape) for k, v in mapped.items()}
    try:
        fixed = spec.state_fixup(dict(mapped), net)
    except Exception as exc:  # the library's own conversion refused the tensors: they do not fit this network
        raise CheckpointMismatchError(
            f"{file or 'the checkpoint'} does not fit {spec.name}: adapting its tensors to the network failed "
            f"({type(exc).__name__}: {str(exc).strip()[:200]}); use a checkpoint made for {spec.name}",
            path=file,
        ) from None
    mapped.clear()
    mapped.update(fixed)
    return {
        k: f"resized from {before[k]} to {tuple(v.shape)} by {spec.family}'s checkpoint filter (for this network's "
        "sizes, e.g. a position embedding resampled for another input size)"
        for k, v in fixed.items()
        if k in before and tuple(v.shape) != before[k]
    }


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
    depth = depth_for_layers(layers, bottleneck)
    kind = "bottleneck" if bottleneck else "basic"
    if depth is None:
        return f"The file has {kind} ResNet blocks {layers} per stage."
    return f"The file has {kind} ResNet blocks {layers} per stage: it looks like resnet{depth}."


def _file_record(source: WeightSource | None, arch: str) -> WeightFile | None:
    """The record of the file ``source`` has for ``arch``, or ``None`` (a checkpoint file, scratch)."""
    if source is None or not (source.files or source.derived_from):
        return None
    try:
        return source.file_for(arch)
    except UnknownOptionError:
        return None


def read_source_state(
    source: WeightSource | None, arch: str, path: str | os.PathLike[str]
) -> tuple[dict[str, torch.Tensor], str]:
    """Read the weight file at ``path`` as its source's record says (a whole pickled model is read as tensors only)
    and put its keys under the network's names with the record's key map (a pure dict -> dict function, e.g.
    :func:`medtl.weights.zoo.dinov2_hf_to_timm`).

    Returns:
        The state dict and its format description (naming the key map applied).
    """
    f = _file_record(source, arch)
    state, fmt = load_checkpoint(path, module_pickle=bool(f and f.module_pickle))
    if f is not None and f.key_map is not None:
        state = f.key_map(state)
        fmt = f"{fmt}, keys mapped by {f.key_map.__name__}"
    return state, fmt


def check_checkpoint_fits(path: str | os.PathLike[str], arch: str, *, source: WeightSource | None = None) -> LoadReport:
    """Check, without allocating the model, that the checkpoint at ``path`` fits ``arch`` (used on import)."""
    spec = get_architecture(arch)
    state, fmt = read_source_state(source, arch, path)
    in_channels = (source.in_channels if source is not None else None) or spec.default_in_channels
    with torch.device("meta"):
        net = spec.build(in_channels=in_channels, num_classes=2)
    name = source.name if source is not None else "file"
    return load_into(net, state, spec, source=name, file=str(path), fmt=fmt, dry_run=True)


def import_weights(name: str, file: str | os.PathLike[str]) -> Path:
    """Copy a weight file obtained elsewhere into the cache, after checking its SHA-256 and that it fits.

    Args:
        name: ``"<source>:<arch>"``, e.g. ``"imagenet:mobilenet_v2"`` or ``"medicalnet:resnet50_3d"``.
        file: the file (torchvision's ``.pth``, or MedicalNet's ``resnet_50.pth`` / ``resnet_50_23dataset.pth``).

    Returns:
        The path of the cached copy.

    Raises:
        HashMismatchError: the file's SHA-256 differs from the recorded one.
        CheckpointMismatchError: the file does not fit the architecture.
        UnsafeCheckpointError: the file needs arbitrary unpickling.
        WeightsError: the file is unreadable or holds non-finite values.
    """
    source, arch = parse_weight_name(name)
    return add_to_cache(source, arch, file, check=lambda path: check_checkpoint_fits(path, arch, source=source))
