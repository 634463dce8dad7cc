""":func:`export_run`: a finished run as a model that runs without medtl (ONNX, TorchScript or a MONAI bundle), with
its input recorded next to it."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medtl.export.common import (
    INPUT_NAME,
    TOLERANCE,
    ExportedNetwork,
    ExportError,
    Sample,
    check_transforms,
    inference_transforms,
    preprocess_sample,
    refuse_above,
    score_meaning,
    traceable,
)
from medtl.export.transforms import bundle_transforms
from medtl.utils import look_up_option

__all__ = ["FORMATS", "ExportResult", "export_run", "check_export_folder"]

#: export formats and the model file each writes
FORMATS: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts", "monai-bundle": "models/model.ts"}
INPUT_FILE = "input.json"


@dataclass
class ExportResult:
    """What an export wrote and how well it matched PyTorch.

    Attributes:
        format: ``onnx``, ``torchscript`` or ``monai-bundle``.
        out_dir: the folder written.
        files: every file written.
        max_abs_diff: the largest absolute difference between the exported network and PyTorch (float32, the
            sample and a batch of two).
        checked_on: what the check ran on (one preprocessed scan of the run, or random values).
        preprocessing_diff: the largest difference between the MONAI transforms of ``input.json`` (the bundle's
            preprocessing) and the run's own preprocessing, on up to 8 of the run's scans; None when no scan was
            found or a step has no MONAI equivalent. A bundle above the tolerance is refused.
        tolerance: the largest difference allowed.
    """

    format: str
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    max_abs_diff: float = 0.0
    checked_on: str = ""
    preprocessing_diff: float | None = None
    tolerance: float = TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "out_dir": str(self.out_dir),
            "files": [str(f) for f in self.files],
            "max_abs_diff": self.max_abs_diff,
            "checked_on": self.checked_on,
            "preprocessing_diff": self.preprocessing_diff,
            "tolerance": self.tolerance,
        }


def check_export_folder(out: Path, run_dir: Path) -> None:
    """Refuse an output folder inside the run folder (or the run folder itself), one that holds files already, or a
    path that is a file.

    Raises:
        ExportError: naming the folder and the fix.
    """
    target, run = out.expanduser().resolve(), run_dir.expanduser().resolve()
    if target == run or target.is_relative_to(run):
        raise ExportError(
            f"--out {out} lies inside the run folder {run_dir}; the run folder is the run's own",
            path=str(out),
            fix="give a folder outside the run folder as --out",
        )
    if target.exists() and not target.is_dir():
        raise ExportError(f"--out {out} is a file; an export writes a folder", path=str(out), fix="give a new folder")
    if target.is_dir() and any(target.iterdir()):
        raise ExportError(
            f"--out {out} exists and is not empty; an export writes a folder of its own",
            path=str(out),
            fix="give a new or empty folder as --out",
        )


def _weights_named(value: Any) -> str:
    """The weights a run started from, as shared: a source name, or only the file name of a checkpoint path."""
    from medtl.utils import is_weights_file

    text = str(value)
    return f"a checkpoint file ({Path(text).name})" if is_weights_file(text) else text


def _input_info(
    loaded: Any, fmt: str, *, dense: bool, meaning: str, output: str, sample: Sample, transforms: list[dict[str, Any]]
) -> dict[str, Any]:
    """The content of ``input.json``: everything a user needs to feed the exported model, from the run's
    ``preprocessing.json`` (the input record, the task's state, the pipeline's description)."""
    import medtl

    pre, record = loaded.preprocessing, loaded.record
    state = loaded.task.state()
    size = list(record.size or [])
    info: dict[str, Any] = {
        "format": fmt,
        "medtl_version": medtl.__version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": {
            "name": loaded.run.path.name,
            "arch": str(loaded.config.model.arch),
            "weights": _weights_named(pre.get("weight_source") or loaded.config.model.weights),
            "checkpoint": loaded.checkpoint.name,
        },
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", record.in_channels, *size],
            "dtype": "float32",
            "record": record.to_dict(),
        },
        "task": state,
        "outputs": {
            "name": output,
            "shape": ["batch", len(loaded.task.classes), *(size if dense else [])],
            "names": list(loaded.task.classes),
            "meaning": meaning,
            "per_window": dense,
        },
        "preprocessing": {
            "description": {k: v for k, v in (pre.get("description") or {}).items() if k != "augment"},
            "transforms": transforms,
            "note": (
                "apply these steps (MONAI transforms, in order, on {'image': path}) to a scan; the result, with a "
                "batch axis in front, is the model's input"
                + (
                    "; whole scans larger than the window are segmented by a sliding window (see outputs.meaning)"
                    if dense
                    else ""
                )
                + (
                    "; mode 2.5d: the network scores one slice at a time and medtl averages the slices' scores of a "
                    "scan"
                    if record.mode == "2.5d"
                    else ""
                )
            ),
        },
        "check": {"tolerance": TOLERANCE, "on": sample.described},
    }
    if dense:
        info["outputs"]["sliding_window"] = loaded.task.export_spec(record)["window"]
    return info


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    format: str = "onnx",
    sample: str | Path | None = None,
    license: str | None = None,
) -> ExportResult:
    """Export a finished run as a model that runs without medtl, its input recorded in ``input.json``.

    The network, the task and the input record come from :func:`medtl.train.predict.load_run` (the run's
    ``preprocessing.json`` and its tested checkpoint). The exported model takes the preprocessed tensor ``(batch,
    C, *size)`` and returns what ``medtl predict`` writes: the task's scores (softmax probabilities for
    classification) for scan-level tasks; for a dense network (segmentation) the logits of one window, which the
    MONAI bundle slides over whole scans. Each export is checked against PyTorch on a preprocessed scan of the run
    (or ``sample``) and refused above :data:`~medtl.export.common.TOLERANCE`; nothing is left behind by a refused
    export.

    Args:
        run_dir: a finished run folder.
        out_dir: a new or empty folder outside the run folder.
        format: ``onnx`` (``model.onnx``, checked with onnxruntime), ``torchscript`` (``model.ts``, traced) or
            ``monai-bundle`` (see :mod:`medtl.export.bundle`).
        sample: the scan the check runs on (default: the first existing scan of the run's test, then validation
            predictions; random values when none exists).
        license: (monai-bundle) the licence of the exported model, an SPDX identifier written to LICENSE and the
            metadata.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: a bad output folder; a check above the tolerance; a step the bundle cannot write; onnx or
            onnxruntime missing (the ``export`` extra).
        RunDirError: the folder is not a finished run.
    """
    from medtl.train.predict import load_run

    fmt = look_up_option(str(format), tuple(FORMATS), what="export format")
    run_path, out = Path(run_dir), Path(out_dir)
    check_export_folder(out, run_path)
    loaded = load_run(run_path, quiet=True)
    record = loaded.record
    if fmt == "monai-bundle" and record.mode == "2.5d":
        raise ExportError(
            f"run {run_path} reads volumes as 2.5D slices; a MONAI bundle cannot cut and average them as medtl does",
            fix="export to onnx or torchscript (the per-slice network) and average the slices' scores yourself",
        )
    model = loaded.model.cpu().eval()
    spec = loaded.task.export_spec(record)
    dense, scores = bool(spec["dense"]), spec["scores"]
    network = ExportedNetwork(traceable(model), scores).eval()
    chosen = preprocess_sample(loaded, dense, sample)
    leaf_transforms = inference_transforms(loaded, dense)
    try:
        described = bundle_transforms(leaf_transforms)
    except ExportError:
        if fmt == "monai-bundle":
            raise
        described = [{"step": type(t).__name__, "monai": False} for t in leaf_transforms]
        preprocessing_diff = None
    else:
        preprocessing_diff = check_transforms(described, chosen)
        if fmt == "monai-bundle" and preprocessing_diff is not None:
            refuse_above(
                preprocessing_diff,
                "the bundle's preprocessing (MONAI alone) of the run's scans",
                "export to onnx or torchscript and apply the run's preprocessing yourself (input.json describes it)",
            )
    output = "logits" if dense else "scores"
    meaning = score_meaning(scores, len(loaded.task.classes))
    info = _input_info(loaded, fmt, dense=dense, meaning=meaning, output=output, sample=chosen, transforms=described)
    if preprocessing_diff is not None:
        info["preprocessing"]["checked"] = {
            "scans": len(chosen.scans),
            "max_abs_diff": preprocessing_diff,
            "reproduces_medtl": preprocessing_diff <= TOLERANCE,
        }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    result = ExportResult(fmt, out, checked_on=chosen.described)
    try:
        files, result.max_abs_diff = _write(
            fmt, tmp, network, loaded, chosen, info, dense=dense, output=output, license=license, transforms=described
        )
        result.preprocessing_diff = preprocessing_diff
        info["check"]["max_abs_diff"] = result.max_abs_diff
        (tmp / INPUT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.files = [out / f.relative_to(tmp) for f in files] + [out / INPUT_FILE]
    return result


def _write(
    fmt: str,
    tmp: Path,
    network: ExportedNetwork,
    loaded: Any,
    sample: Sample,
    info: dict[str, Any],
    *,
    dense: bool,
    output: str,
    license: str | None,
    transforms: list[dict[str, Any]],
) -> tuple[list[Path], float]:
    """Write one format into ``tmp``: (the files, the network's largest difference from PyTorch)."""
    from medtl.export.formats import write_onnx, write_torchscript

    if fmt == "onnx":
        path = tmp / FORMATS["onnx"]
        return [path], write_onnx(network, sample.tensor, path, output)
    if fmt == "torchscript":
        path = tmp / FORMATS["torchscript"]
        return [path], write_torchscript(network, sample.tensor, path)
    from medtl.export.bundle import bundle_config, write_bundle

    window = loaded.task.export_spec(loaded.record)["window"]
    config = bundle_config(transforms, dense=dense, window=window)
    return write_bundle(tmp, network, loaded, sample, info, config=config, dense=dense, license_name=license)
