"""A raw DICOM tag scan: the few header elements medtl needs, read straight from the file's bytes.

pydicom builds a full dataset of every element before the pixel data; indexing a tree of thousands of files
spends most of its time there. This scanner walks the elements of an ordinary file (preamble and file meta,
little-endian explicit or implicit VR) and keeps only the values of :data:`WANTED` tags, stopping at the pixel
data. Whatever it does not handle (no preamble, big endian, deflated datasets, enhanced multi-frame objects, text
in a non-ASCII character set, a header longer than :data:`MAX_HEADER`, anything malformed) returns ``None``
and the caller reads the file with pydicom instead, which also produces the precise error for a broken file.

A file costs one ``open`` and one ``read`` of its first bytes (no Python file object), and one pass over its
elements in a loop specialised for explicit or implicit VR. GDCM's C++ ``gdcm.Scanner`` (python-gdcm, what ITK
uses) was measured as the alternative and took about three times as long per file as this loop on the
benchmark's tree, so it is not used.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

__all__ = ["RawHeader", "scan_tags", "WANTED", "MAX_HEADER"]

MAX_HEADER = 256 * 1024
"""Bytes of a file the scanner reads at most; a header longer than this goes to pydicom."""

_FIRST_READ = 16 * 1024

# (group << 16 | element) -> keyword, for the elements medtl reads from a header
WANTED: dict[int, str] = {
    0x00080005: "SpecificCharacterSet",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
    0x0008103E: "SeriesDescription",
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00100030: "PatientBirthDate",
    0x00080050: "AccessionNumber",
    0x00180050: "SliceThickness",
    0x00181164: "ImagerPixelSpacing",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200013: "InstanceNumber",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280030: "PixelSpacing",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
    0x00281052: "RescaleIntercept",
    0x00281053: "RescaleSlope",
    0x30040002: "DoseUnits",
    0x3004000C: "GridFrameOffsetVector",
    0x3004000E: "DoseGridScaling",
}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
# text whose bytes depend on the character set: non-ASCII bytes send the file to pydicom
_CHARSET_TEXT = frozenset({0x0008103E, 0x00100010, 0x00100020})
_PER_FRAME = 0x52009230
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED = 0xFFFFFFFF
_HEAD = struct.Struct("<HHHH")  # group, element, VR (as a little-endian code), 16-bit length
_HEAD_IMPLICIT = struct.Struct("<HHI")  # group, element, 32-bit length
_U32 = struct.Struct("<I")
_LONG_VR_CODES = frozenset(int.from_bytes(vr, "little") for vr in _LONG_VRS)
_SHORT_VR_CODES = frozenset(
    int.from_bytes(vr.encode(), "little")
    for vr in "AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split()
)
_SQ = int.from_bytes(b"SQ", "little")
_UN = int.from_bytes(b"UN", "little")
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


@dataclass
class RawHeader:
    """The raw values (bytes, as stored) of the wanted elements, and where the pixel data starts."""

    values: dict[str, bytes]
    transfer_syntax: str
    media_sop_class: str
    implicit: bool
    has_pixels: bool
    pixel_offset: int


class _Fallback(Exception):
    """The file needs pydicom."""


def _u16(buf: bytes, pos: int) -> int:
    return buf[pos] | (buf[pos + 1] << 8)


def _u32(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 4], "little")


def _tag(buf: bytes, pos: int) -> int:
    return (_u16(buf, pos) << 16) | _u16(buf, pos + 2)


def _element(buf: bytes, pos: int, implicit: bool) -> tuple[int, int, int, bool]:
    """Tag, value start, value length, and whether the element is a sequence, of the element at ``pos``."""
    if pos + 8 > len(buf):
        raise _Fallback
    tag = _tag(buf, pos)
    if implicit or (tag >> 16) == 0xFFFE:
        length = _u32(buf, pos + 4)
        return tag, pos + 8, length, length == _UNDEFINED
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _Fallback
        length = _u32(buf, pos + 8)
        return tag, pos + 12, length, vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED)
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _Fallback  # not an explicit VR after all
    return tag, pos + 8, _u16(buf, pos + 6), False


def _skip_undefined(buf: bytes, pos: int, implicit: bool, depth: int = 0) -> int:
    """Position after an undefined-length sequence whose items start at ``pos``."""
    if depth > 16:
        raise _Fallback
    while True:
        if pos + 8 > len(buf):
            raise _Fallback
        tag, length = _tag(buf, pos), _u32(buf, pos + 4)
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Fallback
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # the elements of an undefined-length item, up to its delimiter
            if pos + 8 > len(buf):
                raise _Fallback
            if _tag(buf, pos) == _ITEM_END:
                pos += 8
                break
            _, start, length, is_seq = _element(buf, pos, implicit)
            if length == _UNDEFINED:
                if not is_seq and not implicit:
                    raise _Fallback
                pos = _skip_undefined(buf, start, implicit, depth + 1)
            else:
                pos = start + length


def _is_vr(code: int) -> bool:
    """Whether a VR code (two bytes, little endian) is two capital letters."""
    return 65 <= (code & 0xFF) <= 90 and 65 <= (code >> 8) <= 90


def _parse(buf: bytes, file_size: int) -> RawHeader:
    n = len(buf)
    if n < 132 or buf[128:132] != b"DICM":
        raise _Fallback
    head = _HEAD.unpack_from
    u32 = _U32.unpack_from
    pos = 132
    ts = ""
    media_class = ""
    # file meta: always explicit VR little endian
    while pos + 8 <= n:
        group, elem, vr, length = head(buf, pos)
        if group != 0x0002:
            break
        if vr in _LONG_VR_CODES:
            if pos + 12 > n:
                raise _Fallback
            start = pos + 12
            length = u32(buf, start - 4)[0]
        elif _is_vr(vr):
            start = pos + 8
        else:
            raise _Fallback
        pos = start + length  # an undefined length lands past the buffer too
        if pos > n:
            raise _Fallback
        if elem == 0x0010:
            ts = buf[start:pos].decode("latin-1").strip(" \x00")
        elif elem == 0x0002:
            media_class = buf[start:pos].decode("latin-1").strip(" \x00")
    if ts in (_BIG_ENDIAN, _DEFLATED) or not ts:
        raise _Fallback
    implicit = ts == _IMPLICIT_LE
    if implicit:
        values, pos, has_pixels = _walk_implicit(buf, pos, file_size)
    else:
        values, pos, has_pixels = _walk_explicit(buf, pos, file_size)
    return RawHeader(values, ts, media_class, implicit, has_pixels, pos)


# The two loops below are the hot path of indexing: one unpack, a few integer comparisons and one dict lookup per
# element, no calls in the common case. The elements medtl does not want are skipped by their length, unsliced.


def _walk_explicit(buf: bytes, pos: int, file_size: int) -> tuple[dict[str, bytes], int, bool]:
    """The wanted values of an explicit VR little endian dataset from ``pos``, where it stopped, and whether that is
    the pixel data."""
    values: dict[str, bytes] = {}
    wanted = WANTED
    short_vrs = _SHORT_VR_CODES
    long_vrs = _LONG_VR_CODES
    head = _HEAD.unpack_from
    u32 = _U32.unpack_from
    n = len(buf)
    while True:
        if pos + 8 > n:
            if pos >= n and n >= file_size:
                return values, pos, False  # the file ends without pixel data
            raise _Fallback  # more header than was read, or cut inside an element (pydicom names the problem)
        group, elem, vr, length = head(buf, pos)
        if group >= 0x5200:  # pixel data, enhanced multi-frame groups, item tags: the rare cases
            tag = (group << 16) | elem
            if tag in _PIXEL_TAGS:
                return values, pos, True
            if tag == _PER_FRAME or group == 0xFFFE:
                raise _Fallback  # pydicom reads functional groups; a stray item tag is malformed
        if vr in short_vrs:
            start = pos + 8
        elif vr in long_vrs:
            if pos + 12 > n:
                raise _Fallback
            start = pos + 12
            length = u32(buf, pos + 8)[0]
            if length == _UNDEFINED:
                if vr == _SQ or vr == _UN:
                    pos = _skip_undefined(buf, start, False)
                    continue
                raise _Fallback
        else:
            raise _Fallback  # not an explicit VR after all
        pos = start + length
        if pos > n:
            raise _Fallback  # past what was read (or past the end of a truncated file)
        keyword = wanted.get((group << 16) | elem)
        if keyword is not None:
            value = buf[start:pos]
            if not value.isascii() and ((group << 16) | elem) in _CHARSET_TEXT:
                raise _Fallback
            values[keyword] = value


def _walk_implicit(buf: bytes, pos: int, file_size: int) -> tuple[dict[str, bytes], int, bool]:
    """:func:`_walk_explicit` for an implicit VR little endian dataset."""
    values: dict[str, bytes] = {}
    wanted = WANTED
    head = _HEAD_IMPLICIT.unpack_from
    n = len(buf)
    while True:
        if pos + 8 > n:
            if pos >= n and n >= file_size:
                return values, pos, False
            raise _Fallback
        group, elem, length = head(buf, pos)
        if group >= 0x5200:
            tag = (group << 16) | elem
            if tag in _PIXEL_TAGS:
                return values, pos, True
            if tag == _PER_FRAME or group == 0xFFFE:
                raise _Fallback
        if length == _UNDEFINED:  # a sequence
            pos = _skip_undefined(buf, pos + 8, True)
            continue
        start = pos + 8
        pos = start + length
        if pos > n:
            raise _Fallback
        keyword = wanted.get((group << 16) | elem)
        if keyword is not None:
            value = buf[start:pos]
            if not value.isascii() and ((group << 16) | elem) in _CHARSET_TEXT:
                raise _Fallback
            values[keyword] = value


def _read_more(fd: int, buf: bytes, limit: int) -> bytes:
    """``buf`` (the file's first bytes) followed by what comes next, up to ``limit`` bytes or the end of the file."""
    parts = [buf]
    got = len(buf)
    while got < limit:
        chunk = os.read(fd, limit - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def scan_tags(path: str | os.PathLike[str], file_size: int) -> RawHeader | None:
    """The wanted elements of an ordinary DICOM file, or None when pydicom must read it.

    The first 16 KiB are read with one ``os.read`` (a buffered Python file object costs more than the read itself);
    a longer header is read on, up to :data:`MAX_HEADER` bytes.

    Args:
        path: a regular file.
        file_size: its size in bytes (from the caller's stat).
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        buf = os.read(fd, min(_FIRST_READ, file_size))
        if len(buf) < 132 or buf[128:132] != b"DICM":
            return None
        try:
            return _parse(buf, file_size)
        except _Fallback:
            limit = min(MAX_HEADER, file_size)
            if len(buf) >= limit:
                return None
        buf = _read_more(fd, buf, limit)
    finally:
        os.close(fd)
    try:
        return _parse(buf, file_size)
    except _Fallback:
        return None
