"""Decoding DICOM pixel data into stored values, and stored values into physical units.

Uncompressed little-endian single-sample pixel data is read straight from the file at the offset the header
scan found; everything else goes through pydicom's pixel handlers (pylibjpeg plugins for RLE, JPEG, JPEG-LS,
JPEG 2000). A header that claims more pixel data than its file holds, or than memory allows, is refused
before anything is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from medtl.errors import MissingPixelDataError, TruncatedFileError, UnsupportedScanError
from medtl.io.dicom.header import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, DicomHeader
from medtl.io.memory import ensure_memory

__all__ = ["check_claimed_size", "decode_frames", "dims_text", "physical_into", "to_physical"]

_NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE})
_DECODER_FIX = "install the decoders with `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle`"


def dims_text(h: DicomHeader) -> str:
    """``512 x 512 pixels x 3 frame(s) of 16 bits``: what a header says its pixel data holds."""
    frames = f" x {h.n_frames} frame(s)" if h.n_frames > 1 else ""
    samples = f" x {h.samples} samples" if h.samples > 1 else ""
    return f"{h.rows} x {h.cols} pixels{frames}{samples} of {h.bits_allocated} bits"


def check_claimed_size(h: DicomHeader) -> None:
    """Refuse a header that claims more pixel data than its file holds, or than memory allows, before decoding.

    Raises:
        TruncatedFileError: uncompressed pixel data shorter than rows x columns x frames x samples says.
        UnsupportedScanError: the decoded image would not fit in memory.
    """
    n_values = h.rows * h.cols * h.n_frames * max(1, h.samples)
    if h.transfer_syntax in _NATIVE_SYNTAXES and h.pixel_offset is not None:
        need = (n_values + 7) // 8 if h.bits_allocated == 1 else n_values * max(1, h.bits_allocated // 8)
        if h.photometric == "YBR_FULL_422":  # chroma sampled every other pixel: 2 values per pixel, not 3
            need = need * 2 // 3
        present = max(0, h.file_size - h.pixel_offset - 8)
        if need > present:
            raise TruncatedFileError(
                f"{h.path}: the header claims {dims_text(h)} ({need:,} bytes) but the file holds at most "
                f"{present:,} bytes of pixel data",
                path=str(h.path),
                fix="the file is incomplete or its header is corrupt; export it again",
            )
    # decoded stored values plus their float32 copy
    ensure_memory(n_values * (4 + max(1, h.bits_allocated // 8)), dims_text(h), h.path)


def _read_native(h: DicomHeader) -> np.ndarray | None:
    """Pixel data of an uncompressed little-endian single-sample file, read at the known offset; else None."""
    if (
        h.pixel_offset is None
        or h.transfer_syntax not in (IMPLICIT_VR_LE, EXPLICIT_VR_LE)
        or h.samples != 1
        or h.photometric not in ("MONOCHROME1", "MONOCHROME2")
        or h.bits_allocated not in (8, 16, 32)
        or h.rows <= 0
        or h.cols <= 0
    ):
        return None
    with open(h.path, "rb") as fp:
        fp.seek(h.pixel_offset)
        head = fp.read(12)
        if len(head) < 8 or (int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")) != (
            0x7FE0,
            0x0010,
        ):
            return None
        if h.transfer_syntax == EXPLICIT_VR_LE:
            if head[4:6] not in (b"OB", b"OW"):
                return None
            length = int.from_bytes(head[8:12], "little")
            start = h.pixel_offset + 12
        else:
            length = int.from_bytes(head[4:8], "little")
            start = h.pixel_offset + 8
        itemsize = h.bits_allocated // 8
        count = h.rows * h.cols * h.n_frames
        if length == 0xFFFFFFFF:
            return None
        if length < count * itemsize or start + count * itemsize > h.file_size:
            _raise_truncated(h.path, count * itemsize, min(length, h.file_size - start))
        signed = h.pixel_representation == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{itemsize}")
        fp.seek(start)
        arr = np.fromfile(fp, dtype=dtype, count=count)
    if h.bits_stored < h.bits_allocated:
        shift = h.bits_allocated - h.bits_stored
        if signed:
            arr = (arr << shift) >> shift
        else:
            arr = arr & np.array((1 << h.bits_stored) - 1, dtype=dtype)
    return arr.reshape(h.n_frames, h.rows, h.cols)


def _raise_truncated(path: Path, expected: int, found: int) -> None:
    raise TruncatedFileError(
        f"{path}: pixel data is truncated ({found} of {expected} bytes present)",
        path=str(path),
        fix="the file is incomplete; copy or export it again",
    )


def _decode_with_pydicom(h: DicomHeader) -> tuple[np.ndarray, str]:
    """All frames of a file as (frames, rows, cols[, 3]) and the photometric interpretation after decoding."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(h.path, force=True)
        except Exception as exc:  # noqa: BLE001
            raise TruncatedFileError(
                f"{h.path}: cannot read pixel data ({exc})", path=str(h.path), fix="copy or export the file again"
            ) from None
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            if h.has_pixels:  # the header scan saw the pixel data tag, but its value is cut off
                raise TruncatedFileError(
                    f"{h.path}: pixel data is truncated (the file ends inside it)",
                    path=str(h.path),
                    fix="the file is incomplete; copy or export it again",
                )
            raise MissingPixelDataError(
                f"{h.path} has no pixel data", path=str(h.path), fix="pass an image file or its folder"
            )
        if getattr(ds, "file_meta", None) is None:
            from pydicom.dataset import FileMetaDataset

            ds.file_meta = FileMetaDataset()
        if "TransferSyntaxUID" not in ds.file_meta:
            # some writers omit it; the encoding pydicom detected while parsing is the answer
            ds.file_meta.TransferSyntaxUID = h.transfer_syntax
        photometric = h.photometric
        try:
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - pydicom and the plugins raise many types
            text = str(exc)
            if "less than expected" in text or "truncat" in text.lower() or "end of" in text.lower():
                raise TruncatedFileError(
                    f"{h.path}: pixel data is truncated ({text.split(' - ')[0]})",
                    path=str(h.path),
                    fix="the file is incomplete; copy or export it again",
                ) from None
            if "plugin" in text.lower() or "decoder" in text.lower() or "handler" in text.lower():
                raise UnsupportedScanError(
                    f"{h.path}: cannot decode transfer syntax {h.transfer_syntax} ({text.splitlines()[0]})",
                    path=str(h.path),
                    fix=_DECODER_FIX,
                ) from None
            raise UnsupportedScanError(
                f"{h.path}: cannot decode pixel data ({type(exc).__name__}: {text.splitlines()[0] if text else ''})",
                path=str(h.path),
                fix="check the file with `medtl inspect`; re-export it uncompressed if it persists",
            ) from None
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
            photometric = "RGB"
        elif photometric.startswith("YBR") or photometric == "RGB" or h.samples == 3:
            # pydicom converts YCbCr to RGB while decoding (as_rgb=True)
            photometric = "RGB"
    if h.samples == 3 or photometric == "RGB":
        if arr.ndim == 3 and h.n_frames == 1:
            arr = arr[None]
    elif arr.ndim == 2:
        arr = arr[None]
    return arr, photometric


def decode_frames(h: DicomHeader) -> tuple[np.ndarray, str]:
    """Raw stored values of all frames, (frames, rows, cols) or (frames, rows, cols, 3), and the photometric."""
    if not h.has_pixels:
        raise MissingPixelDataError(
            f"{h.path} has no pixel data ({h.sop_class_name or 'unknown SOP class'})",
            path=str(h.path),
            fix="pass an image file (CT, MR, CR/DX, secondary capture...) or a folder of them",
        )
    check_claimed_size(h)
    arr = _read_native(h)
    if arr is not None:
        return arr, h.photometric
    return _decode_with_pydicom(h)


def _stored_range(h: DicomHeader) -> tuple[float, float]:
    if h.pixel_representation == 1:
        return float(-(1 << (h.bits_stored - 1))), float((1 << (h.bits_stored - 1)) - 1)
    return 0.0, float((1 << h.bits_stored) - 1)


def to_physical(raw: np.ndarray, h: DicomHeader, photometric: str, slope: float, intercept: float) -> np.ndarray:
    """Stored values to float32 physical units; MONOCHROME1 is inverted so that high values are bright."""
    out = raw.astype(np.float32)
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(h)
        out = np.float32(lo + hi) - out
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def physical_into(
    out: np.ndarray, raw: np.ndarray, h: DicomHeader, photometric: str, slope: float, intercept: float
) -> None:
    """:func:`to_physical` written into ``out`` without temporaries (the hot loop of series reading)."""
    out[...] = raw
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(h)
        np.subtract(np.float32(lo + hi), out, out=out)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
