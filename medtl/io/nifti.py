"""NIfTI reading and writing through nibabel (whose affines are already RAS, like medtl's)."""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.errors import GeometryError, NotDicomError, TruncatedFileError, UnsupportedScanError
from medtl.io.memory import ensure_memory

__all__ = ["NiftiImage", "is_nifti_path", "read_nifti", "nifti_header_info", "write_nifti"]

logger = logging.getLogger("medtl.io")


@dataclass
class NiftiImage:
    """A channel-first array (C, X, Y, Z) and its RAS affine."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    n_volumes: int


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name ends in .nii or .nii.gz."""
    name = os.fspath(path).lower()
    return name.endswith((".nii", ".nii.gz"))


def _inflater_module():  # noqa: ANN202 - a zlib-compatible module
    try:  # ISA-L inflates about twice as fast as zlib
        from isal import isal_zlib

        return isal_zlib
    except ImportError:
        return zlib


def _gunzip(data: bytes) -> bytes:
    """Inflate a (possibly multi-member) gzip stream in one go."""
    module = _inflater_module()
    parts = []
    while data:
        inflater = module.decompressobj(wbits=31)
        parts.append(inflater.decompress(data))
        if not inflater.eof:
            raise EOFError("compressed stream ends early")
        data = inflater.unused_data.lstrip(b"\x00")
    return b"".join(parts)


def _inflate_error() -> type[Exception]:
    return getattr(_inflater_module(), "error", zlib.error)


def _load(path: Path, *, header_only: bool = False):  # noqa: ANN202 - nibabel image
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        if path.name.lower().endswith(".gz") and not header_only:
            # one-shot inflate is faster than nibabel's streamed gzip reads
            data = _gunzip(path.read_bytes())
            klass = nib.Nifti2Image if int.from_bytes(data[:4], "little") == 540 else nib.Nifti1Image
            return klass.from_bytes(data)
        return nib.load(str(path))
    except (ImageFileError, HeaderDataError) as exc:
        raise NotDicomError(
            f"{path} is not a valid NIfTI file ({exc})", path=str(path), fix="pass a .nii/.nii.gz or DICOM file"
        ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError, ValueError, _inflate_error()) as exc:
        raise TruncatedFileError(
            f"{path}: cannot read the NIfTI header ({exc})", path=str(path), fix="copy or export the file again"
        ) from None


def _affine(img, path: Path) -> np.ndarray:  # noqa: ANN001 - nibabel image
    """The image's affine; non-finite or singular ones are refused (they would place voxels nowhere)."""
    try:
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - nibabel raises HeaderDataError, LinAlgError... for a broken qform
        raise GeometryError(
            f"{path}: the affine cannot be computed from the header ({type(exc).__name__}: {exc})",
            path=str(path),
            fix="fix the file's sform/qform (e.g. with nibabel) or export it again",
        ) from None
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        what = "non-finite values" if not np.all(np.isfinite(affine)) else "a singular (zero-volume) voxel grid"
        raise GeometryError(
            f"{path}: the affine holds {what}",
            path=str(path),
            fix="fix the file's sform/qform (e.g. with nibabel) or export it again",
        )
    return affine


def _check_voxels(img, path: Path) -> None:  # noqa: ANN001 - nibabel image
    """Refuse structured (RGB) voxels, and sizes the file or the memory cannot hold, before reading any."""
    header = img.header
    dtype = np.dtype(header.get_data_dtype())
    shape = tuple(int(s) for s in header.get_data_shape())
    if dtype.fields is not None or dtype.kind not in "iufb":
        raise UnsupportedScanError(
            f"{path} stores {'RGB/structured' if dtype.fields else dtype.kind} voxels ({dtype}), not intensities",
            path=str(path),
            fix="convert it to one intensity volume per channel (a 4D file) or to grey values first",
        )
    count = int(np.prod(shape, dtype=np.int64)) if shape else 0
    need = count * dtype.itemsize
    if not path.name.lower().endswith(".gz"):
        offset = int(header.get("vox_offset", 352)) if hasattr(header, "get") else 352
        size = path.stat().st_size
        if offset + need > size:
            raise TruncatedFileError(
                f"{path}: the header claims {' x '.join(map(str, shape))} voxels of {dtype} ({need:,} bytes) but the "
                f"file holds {max(0, size - offset):,} bytes of image data",
                path=str(path),
                fix="the file is incomplete or its header is corrupt; export it again",
            )
    ensure_memory(count * (4 + dtype.itemsize), f"{' x '.join(map(str, shape))} voxels", path)


def nifti_header_info(path: str | os.PathLike[str]) -> dict:
    """Shape, spacing and affine of a NIfTI file from its header only."""
    path = Path(path)
    img = _load(path, header_only=True)
    shape = tuple(int(s) for s in img.shape)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return {"shape": shape, "spacing": zooms[: min(3, len(shape))], "affine": _affine(img, path)}


def _in_memory_data(img, volume: int | None) -> np.ndarray | None:  # noqa: ANN001 - nibabel image
    """float32 voxels of an image inflated into memory, converted in one pass (None: let nibabel read them)."""
    proxy = img.dataobj
    fileobj = getattr(proxy, "file_like", None)
    if not isinstance(fileobj, io.BytesIO) or not all(hasattr(proxy, a) for a in ("dtype", "offset", "order")):
        return None
    if np.dtype(proxy.dtype).kind not in "iuf":
        return None
    shape = tuple(int(s) for s in proxy.shape)
    count = int(np.prod(shape))
    buffer = fileobj.getbuffer()
    if proxy.offset + count * np.dtype(proxy.dtype).itemsize > len(buffer):
        raise EOFError(f"image data needs {count} voxels after byte {proxy.offset}; the file is shorter")
    raw = np.frombuffer(buffer, dtype=proxy.dtype, count=count, offset=proxy.offset).reshape(shape, order=proxy.order)
    if volume is not None:
        raw = raw[..., volume]
    out = raw.astype(np.float32)
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if slope is not None and np.isfinite(slope) and slope not in (0.0, 1.0):
        out *= np.float32(slope)
    if inter is not None and np.isfinite(inter) and inter != 0.0:
        out += np.float32(inter)
    return out


def read_nifti(path: str | os.PathLike[str], *, volume: int | None = None) -> NiftiImage:
    """Read a 3D or 4D NIfTI file.

    Args:
        path: .nii or .nii.gz file.
        volume: for 4D files, the index of the volume to read; ``None`` reads all volumes as channels.

    Returns:
        (C, X, Y, Z) float32 array with C = 1 for 3D files (or one picked volume), else the number of volumes.
    """
    path = Path(path)
    if path.exists() and path.stat().st_size == 0:
        raise TruncatedFileError(f"{path} is empty (0 bytes)", path=str(path), fix="copy or export the file again")
    if not path.name.lower().endswith(".gz"):
        _check_voxels(_load(path, header_only=True), path)  # before nibabel maps or reads the data
    img = _load(path)
    _check_voxels(img, path)
    affine = _affine(img, path)
    shape = img.shape
    n_volumes = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    if volume is not None and not (len(shape) <= 3 and volume in (0, -1)):
        if len(shape) <= 3 or not -n_volumes <= volume < n_volumes:
            raise UnsupportedScanError(
                f"{path} has {n_volumes} volume(s); volume={volume} is out of range",
                path=str(path),
                fix=f"pass volume between 0 and {n_volumes - 1}",
            )
    try:
        data = _in_memory_data(img, volume if len(shape) == 4 else None)
        if data is None and volume is not None and len(shape) == 4:
            data = np.asarray(img.dataobj[..., volume]).astype(np.float32, copy=False)  # reads one volume only
        elif data is None:
            data = np.asarray(img.dataobj).astype(np.float32, copy=False)  # applies scl_slope / scl_inter
    except (EOFError, gzip.BadGzipFile, zlib.error, ValueError, OSError) as exc:
        raise TruncatedFileError(
            f"{path}: the NIfTI image data cannot be read ({exc})", path=str(path), fix="copy or export the file again"
        ) from None
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim > 4:
        data = data.reshape(data.shape[:3] + (-1,))
        logger.info("%s: %dD NIfTI read as %d channels", path, len(shape), data.shape[-1])
        if volume is not None:
            data = data[..., volume]
    arr = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    zooms = img.header.get_zooms()[:3]
    return NiftiImage(
        array=arr,
        affine=affine,
        spacing=tuple(float(z) for z in zooms),
        n_volumes=n_volumes,
    )


def write_nifti(array: np.ndarray, affine_ras: np.ndarray, out: str | os.PathLike[str]) -> Path:
    """Write a channel-first array (C, X, Y[, Z]) as NIfTI with its RAS affine.

    One channel is written as a 3D image; several channels as 4D (X, Y, Z, C). Integral data that fits
    int16 is stored as int16, the rest as float32.
    """
    import nibabel as nib

    out = Path(out)
    arr = np.asarray(array)
    if arr.ndim == 3:  # (C, X, Y): a 2D image becomes one slice
        arr = arr[..., None]
    data = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if np.issubdtype(data.dtype, np.floating) and data.size and np.all(np.isfinite(data)):
        lo, hi = float(data.min()), float(data.max())
        if lo >= -32768 and hi <= 32767 and np.array_equal(data, np.round(data)):
            data = data.astype(np.int16)
    if data.dtype not in (np.int16, np.uint8):
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, np.asarray(affine_ras, dtype=np.float64))
    img.set_qform(np.asarray(affine_ras, dtype=np.float64), code=1)
    img.set_sform(np.asarray(affine_ras, dtype=np.float64), code=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}{''.join(out.suffixes)}")
    nib.save(img, str(tmp))
    os.replace(tmp, out)
    return out
