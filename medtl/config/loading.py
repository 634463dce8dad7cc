"""Reading an experiment config: YAML files, paths relative to the file, dotted overrides, one-line errors."""

from __future__ import annotations

import copy
import csv
import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medtl.config.sections import ExperimentConfig
from medtl.errors import ConfigError, ManifestError
from medtl.utils import is_weights_file

__all__ = [
    "load_config",
    "read_config_file",
    "resolve_config_paths",
    "resolve_relative_path",
    "config_to_yaml",
    "apply_overrides",
    "check_manifest_columns",
    "read_manifest_header",
]


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at ``loc`` (the parent of an unknown key), walking nested sections."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        current = ann if isinstance(ann, type) else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(ExperimentConfig, loc[:-1]) or []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{where}: unknown field; allowed: {', '.join(allowed)}{hint}")
        elif err["type"] == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            lines.append(f"{where}: {err['input']!r} is not allowed; allowed: {expected}")
        elif err["type"] == "missing":
            lines.append(f"{where}: required field missing")
        elif not loc or isinstance(err.get("input"), dict | BaseModel):  # a whole section: its own message says it
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid config {source}: " + "; ".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted keys (``"train.epochs"``) or nested dicts merged in."""
    out = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and "." not in key:
            section = out.setdefault(key, {})
            if not isinstance(section, dict):
                raise ConfigError(f"cannot override {key!r}: it is not a section")
            out[key] = apply_overrides(section, value)
            continue
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def resolve_relative_path(section: Any, key: str, base: Path, *, only_files: bool = False) -> None:
    """Make ``section[key]`` absolute against ``base``, the folder of the config file that holds it.

    Args:
        section: a config section (anything else is left alone).
        key: the field holding a path.
        base: the config file's folder.
        only_files: resolve only values that name a weight file (``weights`` may also be a source name).
    """
    if not isinstance(section, dict) or not isinstance(section.get(key), str | Path):
        return
    value = str(section[key])
    if only_files and not is_weights_file(value):
        return
    p = Path(value).expanduser()
    section[key] = os.path.normpath(p if p.is_absolute() else base / p)


def resolve_config_paths(raw: dict[str, Any], base: Path) -> None:
    """Paths in an experiment config file are relative to the file."""
    resolve_relative_path(raw.get("data"), "manifest", base)
    resolve_relative_path(raw.get("splits"), "file", base)
    resolve_relative_path(raw.get("output"), "dir", base)
    resolve_relative_path(raw.get("model"), "weights", base, only_files=True)


def read_config_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``, or a ConfigError saying why there is none."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", path=str(path), fix="check the path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config {path} is not a text file (byte {exc.start} is not UTF-8)",
            path=str(path),
            fix="pass the YAML experiment config",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (data, model, train...)", path=str(path))
    return raw


def raw_config(
    path_or_dict: str | Path | dict[str, Any],
    overrides: dict[str, Any] | None,
    resolve: Callable[[dict[str, Any], Path], None],
) -> tuple[dict[str, Any], str]:
    """The mapping of a config before validation, and where it came from (its path, or ``(dict)``).

    A dict is copied; a file is read and ``resolve`` makes its relative paths relative to the file. The overrides
    (dotted keys or nested dicts) are applied last.
    """
    if isinstance(path_or_dict, dict):
        raw, source = copy.deepcopy(path_or_dict), "(dict)"
    else:
        path = Path(path_or_dict).expanduser()
        raw, source = read_config_file(path), str(path)
        resolve(raw, path.parent.resolve())
    return apply_overrides(raw, overrides), source


def load_config(
    path_or_dict: str | Path | dict[str, Any] | ExperimentConfig, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read and validate an experiment config.

    Args:
        path_or_dict: a YAML file, a dict with the same structure, or an ExperimentConfig (copied).
        overrides: values that replace the file's, by dotted key (``{"train.epochs": 3}``) or nested dict.

    Returns:
        The validated config with defaults filled in. Relative paths in a file are made relative to it.

    Raises:
        ConfigError: the file is missing or not YAML, or a field is unknown or invalid (with its path and
            the allowed values).
    """
    given = path_or_dict.to_dict() if isinstance(path_or_dict, ExperimentConfig) else path_or_dict
    raw, source = raw_config(given, overrides, resolve_config_paths)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source), path=None if source.startswith("(") else source) from None


def config_to_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML (defaults filled in)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def read_manifest_header(path: str | os.PathLike[str]) -> list[str]:
    """The column names of a manifest CSV: its first non-blank line, without reading the rest of the file.

    Raises:
        ManifestError: the file is missing, not UTF-8 text, not a CSV, or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file",
            path=str(path),
            fix="check data.manifest (relative paths are relative to the config file)",
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for cells in csv.reader(fh):
                if any(c.strip() for c in cells):
                    return [c.strip() for c in cells]
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            path=str(path),
            fix="save it as a UTF-8 CSV",
        ) from None
    except csv.Error as exc:
        raise ManifestError(f"manifest {path} is not a valid CSV: {exc}", path=str(path)) from None
    raise ManifestError(
        f"manifest {path} is empty: it has no header", path=str(path), fix="write a header line and one row per scan"
    )


#: the ``data`` fields that name a manifest column, and the column each names by default
COLUMN_FIELDS = {"image_column": "image", "label_column": "label", "patient_column": "patient_id"}


def check_manifest_columns(config: ExperimentConfig) -> None:
    """Refuse a manifest whose header lacks a column the config names, from its header line only (no scan is read).

    ``data.image_column`` is always checked (every task reads scans); ``data.label_column`` and
    ``data.patient_column`` when the config maps them to another name than the default (a manifest without a label
    or patient column can be valid: segmentation, one scan per patient). Names are matched with case ignored, as the
    manifest reader does.

    Raises:
        ManifestError: one line naming the manifest, the field, the column and the columns the manifest has.
    """
    data = config.data
    header = read_manifest_header(data.manifest)
    have = {h.lower() for h in header if h}
    for field, default in COLUMN_FIELDS.items():
        name = getattr(data, field)
        if field != "image_column" and name == default:
            continue
        if name.lower() not in have:
            close = difflib.get_close_matches(name, [h for h in header if h], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ManifestError(
                f"data.{field} is {name!r}, but manifest {data.manifest} has no such column{hint}; its columns are "
                f"{','.join(header)!r}",
                path=str(data.manifest),
                fix=f"set data.{field} to one of the manifest's columns, or rename the column in the manifest",
            )
