"""Pretrained encoders shared as Hugging Face hub-ready folders, and such folders or hub repositories read back as
``local:<name>`` weight sources.

:func:`export_shared` writes, from a registered ``local:<name>`` encoder (:mod:`medtl.weights.local`)::

    model.safetensors   the encoder's tensors, byte for byte the registered file
    config.json         architecture, spatial dims, input channels, normalisation, input size and the preprocessing
                        the encoder saw, medtl version, method, epochs, the pretraining data summary (number of scans
                        and patients, modality, the manifest's SHA-256), licence, and model.safetensors' SHA-256
    README.md           a model card with YAML front matter (license, library_name: medtl, tags): data summary,
                        method, epochs, expected input, how to use it, licence

Only fields of the record listed here are copied, so a patient identifier, a file path or a series description
never leaves the site; a licence must be chosen (:data:`COMMON_LICENSES` lists common ones).

:func:`import_shared` (a folder) and :func:`pull_shared` (``hf:ORG/NAME[@REVISION]``, through
``huggingface_hub.snapshot_download``) read such a folder back: the model file's SHA-256 must be the one config.json
records, the record built from config.json passes :func:`~medtl.weights.local.read_local_record`'s checks, and the
encoder is registered with :func:`~medtl.weights.local.register_local_source`, the path every ``local:`` source
takes: ``model.weights: local:<name>`` then loads it like an encoder pretrained here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.errors import HashMismatchError, WeightsError, WeightsNotAvailableError
from medtl.weights.local import LOCAL_PREFIX, RECORD_FILE, local_weights_dir, read_local_record

__all__ = [
    "HF_PREFIX",
    "MODEL_FILE",
    "CONFIG_FILE",
    "CARD_FILE",
    "FORMAT",
    "COMMON_LICENSES",
    "SharedWeights",
    "export_shared",
    "import_shared",
    "pull_shared",
    "is_shared_folder",
    "is_hub_reference",
    "parse_hub_reference",
]

HF_PREFIX = "hf:"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
#: the ``format`` of a shared folder's config.json
FORMAT = "medtl-encoder"
FORMAT_VERSION = 1
#: licence identifiers of the Hugging Face hub most often chosen for model weights (any other identifier is taken)
COMMON_LICENSES = (
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0",
    "openrail",
    "other",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,119}")
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,254}")
_HEX40 = re.compile(r"[0-9a-f]{40}")
#: keys of the record's ``preprocessing`` (the pipeline's description) that a shared config keeps: each is a word, a
#: number or a list of numbers, never a path
_PREPROCESSING_KEYS = (
    "modality",
    "mode",
    "size",
    "orientation",
    "spacing_mm",
    "layout",
    "intensity",
    "resize",
    "slices",
)


@dataclass
class SharedWeights:
    """A shared folder written, or one read back and registered.

    Attributes:
        source: the ``local:<name>`` source it was exported from or registered as.
        folder: the shared folder (exported, imported, or the hub snapshot).
        files: the files written (export) or registered (import: the encoder and its record).
        config: the folder's config.json.
        sha256: SHA-256 of model.safetensors.
        already: (import) the same encoder was registered under this name already; nothing was changed.
    """

    source: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    already: bool = False


def is_hub_reference(value: str) -> bool:
    """Whether ``value`` names a Hugging Face hub repository (``hf:ORG/NAME[@REVISION]``)."""
    return str(value).startswith(HF_PREFIX)


def is_shared_folder(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` is a folder holding a config.json (a shared folder, or one that claims to be)."""
    path = Path(value).expanduser()
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def parse_hub_reference(value: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME[@REVISION]`` -> ``(ORG/NAME, REVISION or None)``.

    Raises:
        WeightsError: not of that form.
    """
    text = str(value)[len(HF_PREFIX) :] if is_hub_reference(value) else str(value)
    repo, _, revision = text.partition("@")
    if not _REPO.fullmatch(repo) or (revision and not _REVISION.fullmatch(revision)) or ".." in text:
        raise WeightsError(
            f"{value!r} is not a hub repository reference",
            fix="write hf:ORG/NAME or hf:ORG/NAME@REVISION (a branch, tag or commit), e.g. hf:my-lab/xray-simclr@main",
        )
    return repo, revision or None


def _check_name(name: str, what: str) -> str:
    bare = name[len(LOCAL_PREFIX) :] if name.startswith(LOCAL_PREFIX) else name
    if not _NAME.fullmatch(bare):
        raise WeightsError(
            f"{what} {name!r} is not a weight name",
            fix="use 1-120 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return bare


def _check_license(license: str | None) -> str:
    common = ", ".join(COMMON_LICENSES)
    text = (license or "").strip().lower()
    if not text:
        raise WeightsError(
            "sharing weights needs a licence chosen by their owner (the pretraining data's terms may restrict it)",
            fix=f"pass --license ID, a Hugging Face licence identifier: {common} ('other': describe it in README.md)",
        )
    if not _LICENSE.fullmatch(text):
        raise WeightsError(
            f"licence {license!r} is not a licence identifier",
            fix=f"pass a Hugging Face licence identifier, e.g. {common}",
        )
    return text


def _empty_target(out: Path, what: str) -> None:
    if out.exists() and not out.is_dir():
        raise WeightsError(
            f"{what} {out} is a file; the export writes a folder", path=str(out), fix="give a new folder"
        )
    if out.is_dir() and any(out.iterdir()):
        raise WeightsError(
            f"{what} {out} exists and is not empty",
            path=str(out),
            fix="give a new or empty folder (it becomes the repo)",
        )
    root = local_weights_dir().resolve()
    if out.expanduser().resolve().is_relative_to(root):
        raise WeightsError(
            f"{what} {out} lies inside medtl's weight registry ({root})",
            path=str(out),
            fix="give a folder outside MEDTL_HOME",
        )


def _started_from(value: Any) -> str:
    """The weights a pretraining started from, as shared: a source name, never a path."""
    from medtl.utils import is_weights_file

    text = str(value or "scratch")
    return "a checkpoint file" if is_weights_file(text) else text


def _shared_config(record: dict[str, Any], name: str, license: str, sha256: str) -> dict[str, Any]:
    """config.json: the listed fields of a local record (see the module docstring), nothing else."""
    import medtl

    data = record.get("data") or {}
    pre = record.get("preprocessing") or {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "medtl",
        "name": name,
        "architecture": record["arch"],
        "spatial_dims": record["spatial_dims"],
        "in_channels": record.get("in_channels"),
        "normalization": record.get("normalization") or {"kind": "none", "mean": None, "std": None},
        "input_size": record.get("input_size"),
        "preprocessing": {k: pre[k] for k in _PREPROCESSING_KEYS if k in pre},
        "method": record.get("method"),
        "method_label": record.get("method_label"),
        "epochs": record.get("epochs"),
        "started_from": _started_from(record.get("started_from")),
        "data": {
            "n_scans": data.get("n_scans"),
            "n_patients": data.get("n_patients"),
            "modality": data.get("modality") or pre.get("modality"),
            "manifest_sha256": data.get("manifest_sha256"),
        },
        "license": license,
        "citation": record.get("citation") or "",
        "medtl_version": record.get("medtl_version") or medtl.__version__,
        "exported_with": medtl.__version__,
        "created": record.get("created"),
        "model_file": MODEL_FILE,
        "model_sha256": sha256,
    }


def _card(config: dict[str, Any]) -> str:
    """README.md: the model card (YAML front matter, then Markdown)."""
    import yaml

    data = config["data"]
    modality = str(data.get("modality") or "unknown")
    dims = f"{config['spatial_dims']}d"
    method = config.get("method_label") or config.get("method") or "?"
    tags = ["medtl", "medical-imaging", "self-supervised", str(config.get("method") or "pretraining"), dims]
    tags.append(modality.lower())
    front = yaml.safe_dump(
        {"license": config["license"], "library_name": "medtl", "tags": list(dict.fromkeys(tags))}, sort_keys=False
    )
    norm = config["normalization"] or {}
    size = " x ".join(str(s) for s in config.get("input_size") or []) or "any"
    pre = config.get("preprocessing") or {}
    epochs = config.get("epochs")
    name = config["name"]
    lines = [
        "---",
        front.rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"A {config['architecture']} encoder ({dims.upper()}, {config.get('in_channels') or '?'} input channel(s)) "
        f"pretrained with {method} for {epochs if epochs is not None else '?'} epoch(s) by medtl "
        f"{config['medtl_version']}, to be fine-tuned with medtl. It holds the encoder only: a task's head starts "
        "random.",
        "",
        "## Pretraining data",
        "",
        f"- {data.get('n_scans', '?')} unlabeled scans of {data.get('n_patients', '?')} patients, modality {modality}",
        f"- SHA-256 of the manifest of scans used: `{data.get('manifest_sha256') or 'not recorded'}`",
        "- No patient identifier, file path or series description is recorded here.",
        "",
        "## Method",
        "",
        f"- {method}, {epochs if epochs is not None else '?'} epoch(s), starting from {config['started_from']}",
    ]
    if config.get("citation"):
        lines.append(f"- Cite: {config['citation']}")
    lines += [
        "",
        "## Expected input",
        "",
        f"- {config['spatial_dims']}D, {config.get('in_channels') or '?'} channel(s), size {size}",
        f"- intensity: {pre.get('intensity', 'not recorded')}; normalisation: {norm.get('kind', 'none')}"
        + (f" (mean {norm.get('mean')}, std {norm.get('std')})" if norm.get("mean") else ""),
        "",
        "## Use",
        "",
        "```",
        "medtl weights pull hf:ORG/NAME        # this repository; or, from a copy of this folder:",
        "medtl weights import ./FOLDER",
        "```",
        "",
        f"then `model.weights: local:{name}` in a medtl experiment config.",
        "",
        "## Licence",
        "",
        f"{config['license']}, as chosen by the weights' owner. The terms of the pretraining data may also apply.",
        "",
        "## Files",
        "",
        f"- `{MODEL_FILE}` (SHA-256 `{config['model_sha256']}`): the encoder's tensors under the network's own names",
        f"- `{CONFIG_FILE}`: architecture, expected input, method, data summary; read by `medtl weights import`",
        "",
    ]
    return "\n".join(lines)


def export_shared(source: str, out_dir: str | os.PathLike[str], *, license: str | None, name: str | None = None):
    """Write a registered ``local:<name>`` encoder as a Hugging Face hub-ready folder (see the module docstring).

    Args:
        source: ``local:<name>`` (or ``<name>``).
        out_dir: a new or empty folder (the repository's content).
        license: the licence chosen by the weights' owner (a Hugging Face identifier: :data:`COMMON_LICENSES`...).
        name: the name the weights are shared under (default: the local name).

    Returns:
        A :class:`SharedWeights`.

    Raises:
        WeightsError: no licence, a bad name or output folder; the source is unknown, broken or its file changed.
    """
    from medtl.utils import atomic_write_bytes
    from medtl.weights.local import resolve_local_source

    license = _check_license(license)
    out = Path(out_dir).expanduser()
    _empty_target(out, "output folder")
    file, record = resolve_local_source(source, verify=True)
    bare = _check_name(name or file.parent.name, "--name")
    config = _shared_config(record, bare, license, record["encoder_sha256"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copyfile(file, tmp / MODEL_FILE)
        atomic_write_bytes(tmp / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
        atomic_write_bytes(tmp / CARD_FILE, _card(config).encode())
        from medtl.weights.cache import sha256_file

        if sha256_file(tmp / MODEL_FILE, use_memo=False) != config["model_sha256"]:  # pragma: no cover - a race
            raise WeightsError(f"{file} changed while it was copied", path=str(file), fix="run the export again")
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [out / MODEL_FILE, out / CONFIG_FILE, out / CARD_FILE]
    return SharedWeights(LOCAL_PREFIX + file.parent.name, out, files, config, config["model_sha256"])


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    fix = "give the folder `medtl weights export` wrote (model.safetensors, config.json, README.md)"
    if not path.is_file():
        raise WeightsError(
            f"{folder} has no {CONFIG_FILE}; it is not a shared medtl encoder", path=str(folder), fix=fix
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        first = " ".join(str(exc).split())[:120]
        raise WeightsError(f"{path} is not readable JSON ({first})", path=str(path), fix=fix) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise WeightsError(
            f"{path} is not a shared medtl encoder (format {found!r}, expected {FORMAT!r})", path=str(path), fix=fix
        )
    if not (folder / MODEL_FILE).is_file():
        raise WeightsError(f"{folder} has no {MODEL_FILE}", path=str(folder), fix=fix)
    return config


def _record_from_config(config: dict[str, Any], origin: dict[str, Any]) -> dict[str, Any]:
    """The ``local:`` record of a shared folder's config.json (checked by :func:`read_local_record` after)."""
    return {
        "method": config.get("method"),
        "method_label": config.get("method_label"),
        "arch": config.get("architecture"),
        "spatial_dims": config.get("spatial_dims"),
        "in_channels": config.get("in_channels"),
        "normalization": config.get("normalization"),
        "preprocessing": config.get("preprocessing") or {},
        "input_size": config.get("input_size"),
        "epochs": config.get("epochs"),
        "started_from": config.get("started_from"),
        "data": config.get("data") or {},
        "license": config.get("license"),
        "citation": config.get("citation") or "",
        "created": config.get("created"),
        "medtl_version": config.get("medtl_version"),
        "encoder_sha256": config.get("model_sha256"),
        "shared": origin,
    }


def _check_tensors(file: Path) -> None:
    """The model file is a safetensors file of finite tensors.

    Raises:
        WeightsError: it cannot be read, holds no tensor, or a non-finite value.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from medtl.weights.load import check_finite

    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        first = " ".join(str(exc).split())[:120]
        raise WeightsError(
            f"{file} is not a readable safetensors file ({first})", path=str(file), fix="download the folder again"
        ) from None
    if not state:
        raise WeightsError(f"{file} holds no tensor", path=str(file), fix="download the folder again")
    check_finite(state, path=str(file))


def import_shared(
    folder: str | os.PathLike[str], *, name: str | None = None, origin: dict[str, Any] | None = None
) -> SharedWeights:
    """Register a shared folder's encoder as ``local:<name>``.

    Args:
        folder: the folder :func:`export_shared` wrote (or a hub snapshot of it).
        name: the local name (default: the name in config.json).
        origin: where the folder came from (recorded in the local record as ``shared``; default a folder).

    Returns:
        A :class:`SharedWeights` (``already`` when the same encoder was registered under that name before).

    Raises:
        WeightsError: not a shared folder; config.json fails the record's checks (named field); another encoder is
            registered under that name.
        HashMismatchError: model.safetensors' SHA-256 is not the one config.json records.
    """
    from medtl.weights.cache import sha256_file
    from medtl.weights.local import ENCODER_FILE, register_local_source

    src = Path(folder).expanduser()
    if not src.is_dir():
        raise WeightsError(
            f"{src} is not a folder of shared weights",
            path=str(src),
            fix="give the folder `medtl weights export` wrote; to import a weight file, give its source and the file: "
            "medtl weights import SOURCE FILE",
        )
    config = _read_config(src)
    model = src / MODEL_FILE
    digest = sha256_file(model, use_memo=False)
    recorded = config.get("model_sha256")
    if digest != recorded:
        raise HashMismatchError(
            f"refusing {model}: it has SHA-256 {digest}, but {src / CONFIG_FILE} records {recorded!r}; the file was "
            "changed or damaged after the export",
            path=str(model),
            fix="download or copy the folder again",
        )
    bare = _check_name(name or str(config.get("name") or ""), "--name" if name else f"the name in {CONFIG_FILE}")
    record = _record_from_config(config, origin or {"from": "folder"})
    with tempfile.TemporaryDirectory() as tmp:  # the same checks as every registered record, before registering
        check = Path(tmp) / RECORD_FILE
        check.write_text(json.dumps(record), encoding="utf-8")
        try:
            read_local_record(check)
        except WeightsError as exc:
            text = str(exc).split("; ")[0].replace(f"weight record {check}", str(src / CONFIG_FILE))
            raise WeightsError(text, path=str(src / CONFIG_FILE), fix="ask the weights' owner to export them again") \
                from None  # fmt: skip
    _check_tensors(model)
    existing = local_weights_dir() / bare
    if (existing / RECORD_FILE).is_file():
        try:
            same = read_local_record(existing / RECORD_FILE).get("encoder_sha256") == digest
        except WeightsError:
            same = False
        if same and sha256_file(existing / ENCODER_FILE, use_memo=False) == digest:
            files = [existing / ENCODER_FILE, existing / RECORD_FILE]
            return SharedWeights(LOCAL_PREFIX + bare, src, files, config, digest, already=True)
        raise WeightsError(
            f"weights {LOCAL_PREFIX}{bare} are registered already ({existing}) and hold another encoder",
            path=str(existing),
            fix="pass --name to register these under another name",
        )
    target = register_local_source(bare, model, record)
    return SharedWeights(LOCAL_PREFIX + bare, src, [target / ENCODER_FILE, target / RECORD_FILE], config, digest)


def pull_shared(reference: str, *, name: str | None = None, force: bool = False) -> SharedWeights:
    """Download a shared encoder from the Hugging Face hub and register it (:func:`import_shared`).

    Args:
        reference: ``hf:ORG/NAME[@REVISION]``.
        name: the local name (default: the name in the repository's config.json).
        force: download again even if the hub's cache holds the files.

    Raises:
        WeightsNotAvailableError: the hub cannot be reached (offline), or has no such repository or revision.
        WeightsError, HashMismatchError: as :func:`import_shared`.
    """
    import huggingface_hub

    repo, revision = parse_hub_reference(reference)
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id=repo, revision=revision, allow_patterns=[MODEL_FILE, CONFIG_FILE, CARD_FILE], force_download=force
        )
    except Exception as exc:  # noqa: BLE001 - offline, missing repository or revision, HTTP: all "not available"
        first = " ".join(str(exc).split())[:160]
        raise WeightsNotAvailableError(
            f"could not download hf:{repo}"
            + (f"@{revision}" if revision else "")
            + f" ({type(exc).__name__}: {first})",
            fix=f"check the name and your connection (HF_HUB_OFFLINE must be unset), or download "
            f"https://huggingface.co/{repo} elsewhere and run `medtl weights import FOLDER`",
        ) from None
    snapshot = Path(folder)
    commit = snapshot.name if _HEX40.fullmatch(snapshot.name) else None
    origin = {"from": f"{HF_PREFIX}{repo}", "revision": revision, "commit": commit}
    return import_shared(snapshot, name=name, origin=origin)
