"""Encoders pretrained here, registered in the weight cache as ``local:<name>`` weight sources.

Each lives in ``medtl_home()/weights/local/<name>/``:

- ``encoder.safetensors``: the encoder's tensors under the network's own names (torchvision / MONAI), without
  the classifier, so the ordinary loader matches every backbone tensor and leaves only the head random;
- ``source.json``: the record: method, architecture, dims, input channels, the normalisation the encoder saw,
  epochs, the SHA-256 of the data manifest and the number of scans and patients (never patient identifiers),
  and the encoder file's SHA-256.

:func:`read_local_record` is the one reader of a record: it checks every field it uses (types, ranges, the
SHA-256) and answers a bad one with a one-line :class:`~medtl.errors.WeightsError` naming the file, the field and
the fix. A folder whose record fails is "broken": :func:`list_local_sources` leaves it out and
:func:`broken_local_sources` says what is wrong with it, so one bad record does not hide the other sources.
The recorded SHA-256 is checked whenever the encoder is loaded (:func:`medtl.weights.verify.check_weight_file`).

:func:`local_weight_source` turns a record into a :class:`medtl.weights.sources.WeightSource` whose ``path`` is
the encoder file, so ``create_model(arch, weights="local:<name>")`` goes through the same safe loader and load
report as any checkpoint. ``get_weight_source("local:<name>")`` resolves through here.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from medtl.errors import HashMismatchError, UnknownOptionError, WeightsError
from medtl.utils import atomic_write_bytes, medtl_home

__all__ = [
    "LOCAL_PREFIX",
    "ENCODER_FILE",
    "RECORD_FILE",
    "local_weights_dir",
    "register_local_source",
    "resolve_local_source",
    "local_weight_source",
    "list_local_sources",
    "broken_local_sources",
    "read_local_record",
    "changed_encoder_error",
]

LOCAL_PREFIX = "local:"
ENCODER_FILE = "encoder.safetensors"
RECORD_FILE = "source.json"


def local_weights_dir() -> Path:
    """``medtl_home()/weights/local``: one folder per registered encoder."""
    return medtl_home() / "weights" / "local"


def _bare(name: str) -> str:
    return name[len(LOCAL_PREFIX) :] if name.startswith(LOCAL_PREFIX) else name


def _registered_folders() -> list[Path]:
    """Folders of ``local_weights_dir()`` holding both an encoder file and a record, sorted by name."""
    root = local_weights_dir()
    if not root.is_dir():
        return []
    return sorted(
        (d for d in root.iterdir() if (d / ENCODER_FILE).is_file() and (d / RECORD_FILE).is_file()),
        key=lambda d: d.name,
    )


def list_local_sources() -> list[str]:
    """``local:<name>`` of every registered encoder whose record is valid (see :func:`broken_local_sources`)."""
    names = []
    for d in _registered_folders():
        try:
            read_local_record(d / RECORD_FILE)
        except WeightsError:
            continue
        names.append(LOCAL_PREFIX + d.name)
    return names


def broken_local_sources() -> list[tuple[str, WeightsError]]:
    """``(local:<name>, the error)`` of every registered encoder whose record cannot be used, sorted."""
    broken = []
    for d in _registered_folders():
        try:
            read_local_record(d / RECORD_FILE)
        except WeightsError as exc:
            broken.append((LOCAL_PREFIX + d.name, exc))
    return broken


_SHA256 = re.compile(r"[0-9a-f]{64}")
_NORMALIZATION_KINDS = ("imagenet", "range", "zscore_nonzero", "none")


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def read_local_record(record_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the ``source.json`` record of a registered encoder.

    Every field the weight source is built from is checked: ``arch`` (a name), ``spatial_dims`` (2 or 3),
    ``in_channels`` (a positive integer or null), ``normalization`` (an object with ``kind`` imagenet,
    range, zscore_nonzero or none, and ``mean`` / ``std`` lists of numbers, required for imagenet and range),
    ``input_size``
    (``spatial_dims`` positive integers, or null), ``encoder_sha256`` (64 hex digits), and, where present,
    ``epochs``, ``data`` and the text fields.

    Returns:
        The record, as written.

    Raises:
        WeightsError: the file is unreadable, not a JSON object, or a field is missing or wrong; one line naming
            the file, the field and the fix.
    """
    path = Path(record_path)
    name = path.parent.name
    fix = (
        f"re-run the pretraining that made it (output.name: {name}, output.overwrite: true), or delete "
        f"{path.parent} to unregister local:{name}"
    )

    def bad(text: str) -> WeightsError:
        return WeightsError(f"weight record {path} {text}", path=str(path), fix=fix)

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        first = " ".join(str(exc).split())[:120]
        raise bad(f"is not readable JSON ({first})") from None
    if not isinstance(record, dict):
        raise bad(f"holds a JSON {type(record).__name__}, not an object (the record medtl pretrain writes)")

    def field(key: str, check: Any, expected: str, *, required: bool, nullable: bool = False) -> Any:
        if key not in record:
            if required:
                raise bad(f"has no field {key!r} ({expected})")
            return None
        value = record[key]
        if value is None and (nullable or not required):
            return None
        if not check(value):
            raise bad(f"field {key!r} is {_shown(value)}, expected {expected}")
        return value

    field("arch", lambda v: isinstance(v, str) and v.strip() != "", "the architecture's name, e.g. 'resnet18'",
          required=True)  # fmt: skip
    dims = field("spatial_dims", lambda v: _is_int(v) and v in (2, 3), "2 or 3", required=True)
    field("in_channels", lambda v: _is_int(v) and v >= 1, "a positive integer", required=False)
    field("encoder_sha256", lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None,
          f"the SHA-256 of {ENCODER_FILE} (64 lowercase hex digits)", required=True)  # fmt: skip
    norm = field("normalization", lambda v: isinstance(v, dict), "an object {kind, mean, std}", required=False)
    if norm is not None:
        kind = norm.get("kind", "none")
        if kind not in _NORMALIZATION_KINDS:
            raise bad(
                f"field 'normalization.kind' is {_shown(kind)}, expected one of {', '.join(_NORMALIZATION_KINDS)}"
            )
        for key in ("mean", "std"):
            value = norm.get(key)
            if value is None:
                if kind in ("imagenet", "range"):
                    raise bad(f"has no field 'normalization.{key}' (per-channel values, required for {kind})")
                continue
            if not (isinstance(value, list) and value and all(_is_number(v) for v in value)):
                raise bad(f"field 'normalization.{key}' is {_shown(value)}, expected a list of numbers")
            if key == "std" and any(v <= 0 for v in value):
                raise bad(f"field 'normalization.std' is {_shown(value)}, expected positive numbers")
    field("input_size", lambda v: isinstance(v, list) and len(v) == dims and all(_is_int(n) and n >= 1 for n in v),
          f"a list of {dims} positive integers (one per spatial dim), or null", required=False)  # fmt: skip
    field("epochs", lambda v: _is_int(v) and v >= 0, "a whole number of epochs", required=False)
    for key in ("method", "method_label", "started_from", "license", "citation"):
        field(key, lambda v: isinstance(v, str), "text", required=False)
    data = field("data", lambda v: isinstance(v, dict), "an object {manifest_sha256, n_scans, n_patients}",
                 required=False)  # fmt: skip
    for key in ("n_scans", "n_patients"):
        value = (data or {}).get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            raise bad(f"field 'data.{key}' is {_shown(value)}, expected a whole number")
    return record


def register_local_source(
    name: str, encoder_file: str | os.PathLike[str], record: dict[str, Any], *, overwrite: bool = False
) -> Path:
    """Copy an encoder file and its record into the cache as ``local:<name>``.

    Args:
        name: the name (``local:`` prefix optional).
        encoder_file: the encoder's safetensors file.
        record: the weight-source record (see the module docstring); ``encoder_sha256`` is filled in.
        overwrite: replace an encoder already registered under this name.

    Returns:
        The folder of the registered encoder.

    Raises:
        WeightsError: the name is taken and ``overwrite`` is off.
    """
    bare = _bare(name)
    folder = local_weights_dir() / bare
    if (folder / RECORD_FILE).is_file() and not overwrite:
        raise WeightsError(
            f"weights local:{bare} already exist ({folder})",
            path=str(folder),
            fix="choose another output.name, or set output.overwrite: true to replace them",
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ENCODER_FILE}.tmp-{os.getpid()}"
    shutil.copyfile(encoder_file, tmp)
    os.replace(tmp, folder / ENCODER_FILE)
    record = {**record, "name": bare, "source": LOCAL_PREFIX + bare, "encoder_file": ENCODER_FILE}
    from medtl.weights.cache import sha256_file

    record["encoder_sha256"] = sha256_file(folder / ENCODER_FILE)
    atomic_write_bytes(folder / RECORD_FILE, (json.dumps(record, indent=2) + "\n").encode())
    return folder


def resolve_local_source(name: str, *, verify: bool = False) -> tuple[Path, dict[str, Any]]:
    """The encoder file and the checked record of ``local:<name>``.

    Args:
        name: ``local:<name>`` or ``<name>``.
        verify: re-hash the encoder file against the SHA-256 in its record (loading always does:
            :func:`medtl.weights.verify.check_weight_file`).

    Raises:
        UnknownOptionError: no encoder of that name is registered (the message lists those that are).
        WeightsError: the record is unreadable or a field is wrong (:func:`read_local_record`).
        HashMismatchError: (``verify``) the file's SHA-256 differs from the record's.
    """
    bare = _bare(name)
    folder = local_weights_dir() / bare
    file, record_path = folder / ENCODER_FILE, folder / RECORD_FILE
    if not (file.is_file() and record_path.is_file()):
        known = ", ".join(list_local_sources()) or "none"
        raise UnknownOptionError(
            f"no pretrained encoder local:{bare} in {local_weights_dir()} (registered: {known}); run "
            "`medtl pretrain CONFIG` with output.name set to it, or check MEDTL_HOME"
        )
    record = read_local_record(record_path)
    if verify:
        from medtl.weights.cache import sha256_file

        digest = sha256_file(file)
        if digest != record["encoder_sha256"]:
            raise changed_encoder_error(LOCAL_PREFIX + bare, file, digest, record["encoder_sha256"])
    return file, record


def changed_encoder_error(source: str, file: Path, digest: str, recorded: str) -> HashMismatchError:
    """The error for an encoder file whose bytes differ from the SHA-256 its record holds."""
    folder = file.parent
    return HashMismatchError(
        f"refusing {file}: it has SHA-256 {digest}, but {source} was registered with {recorded} "
        f"({folder / RECORD_FILE}); the file was changed or replaced after the pretraining wrote it",
        path=str(file),
        fix=f"re-run the pretraining (output.name: {folder.name}, output.overwrite: true), or copy the registered "
        f"file back to {file} (the pretraining run folder keeps a copy, {ENCODER_FILE})",
    )


def _count(n: Any, noun: str) -> str:
    return f"? {noun}s" if n is None else f"{n} {noun}" + ("" if n == 1 else "s")


def _description(record: dict[str, Any]) -> str:
    data = record.get("data") or {}
    start = record.get("started_from") or "scratch"
    return (
        f"pretrained here on {data.get('n_scans', '?')} unlabeled scans ({data.get('n_patients', '?')} patients) "
        f"with {record.get('method_label', record.get('method', '?'))} for {_count(record.get('epochs'), 'epoch')}, "
        f"starting from {start}"
    )


def local_weight_source(name: str) -> Any:
    """The :class:`~medtl.weights.sources.WeightSource` of ``local:<name>`` (its ``path`` is the encoder file).

    Raises:
        UnknownOptionError: no encoder of that name is registered.
        WeightsError: its record is unreadable or a field is wrong.
    """
    from medtl.weights.sources import Normalization, WeightFile, WeightSource

    file, record = resolve_local_source(name)
    norm = record.get("normalization") or {}
    mean, std = norm.get("mean") or None, norm.get("std") or None
    arch = record["arch"]
    return WeightSource(
        name=LOCAL_PREFIX + _bare(name),
        description=_description(record),
        dims=record.get("spatial_dims"),
        archs=(arch,),
        in_channels=record.get("in_channels"),
        normalization=Normalization(
            norm.get("kind", "none"),
            None if mean is None else tuple(float(v) for v in mean),
            None if std is None else tuple(float(v) for v in std),
        ),
        license=record.get("license") or "as the owner of the pretraining data states",
        citation=record.get("citation") or "",
        files=(
            WeightFile(
                arch=arch, filename=ENCODER_FILE, url=file.resolve().as_uri(), sha256=record.get("encoder_sha256")
            ),
        ),
        input_size=tuple(record["input_size"]) if record.get("input_size") else None,
        path=str(file),
    )
