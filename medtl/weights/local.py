"""Encoders pretrained here, registered in the weight cache as ``local:<name>`` weight sources.

Each lives in ``medtl_home()/weights/local/<name>/``:

- ``encoder.safetensors``: the encoder's tensors under the network's own names (torchvision / MONAI), without
  the classifier, so the ordinary loader matches every backbone tensor and leaves only the head random;
- ``source.json``: the record: method, architecture, dims, input channels, the normalisation the encoder saw,
  epochs, the SHA-256 of the data manifest and the number of scans and patients (never patient identifiers),
  and the encoder file's SHA-256.

:func:`local_weight_source` turns a record into a :class:`medtl.weights.sources.WeightSource` whose ``path`` is
the encoder file, so ``create_model(arch, weights="local:<name>")`` goes through the same safe loader and load
report as any checkpoint. ``get_weight_source("local:<name>")`` resolves through here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from medtl.errors import UnknownOptionError, WeightsError
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
]

LOCAL_PREFIX = "local:"
ENCODER_FILE = "encoder.safetensors"
RECORD_FILE = "source.json"


def local_weights_dir() -> Path:
    """``medtl_home()/weights/local``: one folder per registered encoder."""
    return medtl_home() / "weights" / "local"


def _bare(name: str) -> str:
    return name[len(LOCAL_PREFIX) :] if name.startswith(LOCAL_PREFIX) else name


def list_local_sources() -> list[str]:
    """``local:<name>`` of every registered encoder (folders holding both files), sorted."""
    root = local_weights_dir()
    if not root.is_dir():
        return []
    return sorted(
        LOCAL_PREFIX + d.name for d in root.iterdir() if (d / ENCODER_FILE).is_file() and (d / RECORD_FILE).is_file()
    )


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
    """The encoder file and record of ``local:<name>``.

    Args:
        name: ``local:<name>`` or ``<name>``.
        verify: re-hash the encoder file against the SHA-256 in its record.

    Raises:
        UnknownOptionError: no encoder of that name is registered (the message lists those that are).
        WeightsError: the record is unreadable, or (``verify``) the file's SHA-256 differs from the record's.
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
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{record_path} is not readable JSON ({exc})", path=str(record_path)) from None
    from medtl.weights.cache import sha256_file

    if verify and record.get("encoder_sha256") and sha256_file(file) != record["encoder_sha256"]:
        raise WeightsError(
            f"{file} has changed since it was registered (SHA-256 differs from {record_path})",
            path=str(file),
            fix="pretrain again, or restore the file",
        )
    return file, record


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
        license=record.get("license", "as the owner of the pretraining data states"),
        citation=record.get("citation", ""),
        files=(
            WeightFile(
                arch=arch, filename=ENCODER_FILE, url=file.resolve().as_uri(), sha256=record.get("encoder_sha256")
            ),
        ),
        input_size=tuple(record["input_size"]) if record.get("input_size") else None,
        path=str(file),
    )
