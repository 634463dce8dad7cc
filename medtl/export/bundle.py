"""A MONAI bundle of a run: the traced network, the run's preprocessing as MONAI transforms, and an inference
config that ``monai.bundle`` runs without medtl installed.

The bundle::

    configs/metadata.json    MONAI's metadata: versions, licence, network_data_format (the input: channels,
                             spatial dims and size, modality and intensity handling; the outputs: classes)
    configs/inference.json   LoadImaged, the run's own preprocessing steps (:mod:`medtl.export.transforms`), the
                             network (``torch.jit.load`` of models/model.ts), SimpleInferer for scan-level outputs or
                             SlidingWindowInferer for dense ones, and the output writer
    models/model.ts          the traced network (TorchScript), what inference.json runs
    models/model.pt          the same weights as a state dict of medtl's network (``torch.load(weights_only=True)``)
    docs/README.md           how to run it, what it reads and writes
    LICENSE                  the licence given at export (or a note that none was chosen)

Run it with ``python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json
--bundle_root . --datalist "['scan.dcm']" --output_dir out``. Scan-level outputs (classification...) go to
``out/predictions.csv`` (one row per scan: the path, then one value per output in ``channel_def`` order); dense ones
(segmentation) to ``out/<scan>_mask.nii.gz``, a label map put back on the scan's own grid by ``Invertd`` (nearest),
as ``medtl predict`` writes its masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medtl.export.common import ExportedNetwork, Sample
from medtl.export.formats import write_torchscript

__all__ = ["write_bundle", "bundle_config"]


def _inference_config(
    transforms: list[dict[str, Any]], *, dense: bool, window: dict[str, Any] | None
) -> dict[str, Any]:
    """``configs/inference.json``."""
    config: dict[str, Any] = {
        "imports": ["$import torch", "$import monai"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": [],
        "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location='cpu')",
        "network": "$@network_def.to(@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "initialize": ["$torch.set_grad_enabled(False)"],
    }
    if dense:
        w = window or {}
        config["inferer"] = {
            "_target_": "SlidingWindowInferer",
            "roi_size": w.get("roi_size"),
            "sw_batch_size": int(w.get("sw_batch_size", 4)),
            "overlap": float(w.get("overlap", 0.25)),
            "mode": str(w.get("mode", "gaussian")),
        }
        config["postprocessing"] = {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": True,
                    "to_tensor": True,
                },
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "mask",
                    "separate_folder": False,
                    "resample": False,
                    "output_dtype": "$numpy.uint8",
                    "print_log": False,
                },
            ],
        }
        config["imports"].append("$import numpy")
        # the logits of the whole scan by sliding window, kept as a MetaTensor with the scan's metadata so that
        # Invertd undoes the preprocessing (as medtl's segmentation predict does)
        config["predict"] = (
            "$lambda d: dict(d, pred=monai.data.MetaTensor(@inferer(d['image'].as_tensor()[None].float().to(@device), "
            "@network)[0].cpu(), meta=dict(d['image'].meta)))"
        )
        config["run"] = ["$[@postprocessing(@predict(@preprocessing({'image': path}))) for path in @datalist]"]
    else:
        config["inferer"] = {"_target_": "SimpleInferer"}
        config["saver"] = {
            "_target_": "CSVSaver",
            "output_dir": "@output_dir",
            "filename": "predictions.csv",
            "overwrite": True,
        }
        config["predict"] = (
            "$lambda path: @inferer(@preprocessing({'image': path})['image'].as_tensor()[None].float().to(@device), "
            "@network)[0].cpu()"
        )
        config["run"] = ["$[@saver.save(@predict(path), {'filename_or_obj': path}) for path in @datalist]"]
        config["finalize"] = ["$@saver.finalize()"]
    return config


def _versions() -> dict[str, str]:
    import monai
    import numpy

    out = {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0]}
    out["numpy_version"] = numpy.__version__
    return out


def _required_packages() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("pydicom", "nibabel"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _metadata(info: dict[str, Any], *, dense: bool, license_name: str) -> dict[str, Any]:
    """``configs/metadata.json`` from the export's ``input.json`` content."""
    import medtl

    record, outputs = info["input"]["record"], info["outputs"]
    classes = list(outputs["names"])
    size = list(record.get("size") or [])
    probabilities = "probabilities" in outputs["meaning"]
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
        "meta_schema_20240725.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medtl {medtl.__version__}"},
        **_versions(),
        "required_packages_version": _required_packages(),
        "name": f"medtl {info['task']['task']} ({record['modality']}, {record['mode']})",
        "task": f"{info['task']['task']} of {record['modality']} scans",
        "description": f"A {info['run']['arch']} network fine-tuned with medtl ({info['task']['task']}, "
        f"{record['modality']} {record['mode']}); preprocessing as the run's own, in configs/inference.json.",
        "authors": "",
        "copyright": "",
        "license": license_name,
        "data_source": "not recorded in the export",
        "data_type": "dicom or nifti",
        "image_classes": f"{record['in_channels']} channel(s), {record['modality']}",
        "label_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "pred_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "intended_use": "research; not validated for clinical use",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if record["modality"] == "CT" else "magnitude",
                    "modality": record["modality"],
                    "num_channels": record["in_channels"],
                    "spatial_shape": size,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": dense,
                    "channel_def": {str(i): "image" for i in range(int(record["in_channels"]))},
                    "intensity": info["preprocessing"]["description"].get("intensity", ""),
                    "normalization": record["normalization"],
                }
            },
            "outputs": {
                "pred": {
                    "type": "image" if dense else ("probabilities" if probabilities else "values"),
                    "format": "segmentation" if dense else "classes",
                    "num_channels": len(classes),
                    "spatial_shape": size if dense else [len(classes)],
                    "dtype": "float32",
                    "value_range": [0, 1] if probabilities else [],
                    "is_patch_data": dense,
                    "channel_def": {str(i): c for i, c in enumerate(classes)},
                    "meaning": outputs["meaning"],
                }
            },
        },
    }


def _readme(info: dict[str, Any], *, dense: bool) -> str:
    record = info["input"]["record"]
    size = " x ".join(str(s) for s in record.get("size") or [])
    steps = "\n".join(f"{i + 1}. `{t['_target_']}`" for i, t in enumerate(info["preprocessing"]["transforms"]))
    writes = (
        "`<output_dir>/<scan>_mask.nii.gz`: the label map (class indices) on the scan's own grid and affine, by a "
        f"sliding window of {size} voxels (logits blended), argmax, then `Invertd` (nearest neighbour)"
        if dense
        else "`<output_dir>/predictions.csv`: one row per scan, its path, then one value per output in the order of "
        "`channel_def` in configs/metadata.json (" + ", ".join(info["outputs"]["names"]) + f"): "
        f"{info['outputs']['meaning']}"
    )
    return (
        f"# medtl export: {info['run']['arch']}, {info['task']['task']} ({record['modality']} {record['mode']})\n\n"
        "A MONAI bundle written by `medtl export --format monai-bundle`. It runs with MONAI and PyTorch alone "
        "(pydicom for DICOM, nibabel for NIfTI); medtl is not needed.\n\n"
        "## Run\n\n"
        "```\n"
        "python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\\n"
        "    --bundle_root . --datalist \"['/path/to/scan']\" --output_dir out\n"
        "```\n\n"
        "A scan is a DICOM file, a folder holding one DICOM series (MONAI's reader stacks every series of a folder "
        "into one volume: give one series per folder), or a NIfTI file.\n\n"
        f"It writes {writes}.\n\n"
        "## Preprocessing (configs/inference.json, the run's own steps)\n\n"
        f"{steps}\n\n"
        f"Input of the network: {record['in_channels']} channel(s), {size}, float32 "
        f"(intensity: {info['preprocessing']['description'].get('intensity', '?')}; normalisation: "
        f"{record['normalization'].get('kind')}).\n\n"
        "`models/model.ts` is the traced network `inference.json` runs; `models/model.pt` holds the same weights as "
        "a state dict of medtl's network (`torch.load(..., weights_only=True)`). `input.json` records the run's "
        "input record, task and outputs.\n"
    )


def _license_text(license_name: str | None, info: dict[str, Any]) -> str:
    if license_name:
        return (
            f"This model is licensed under {license_name} (SPDX identifier), as chosen by its owner at export.\n\n"
            f"Its training started from the weights '{info['run']['weights']}', whose own licence also applies.\n"
        )
    return (
        "No licence was chosen at export (medtl export --license). Until the model's owner chooses one, no permission "
        "to use, copy or redistribute this model is granted.\n\n"
        f"Its training started from the weights '{info['run']['weights']}', whose own licence also applies.\n"
    )


def bundle_config(transforms: list[dict[str, Any]], *, dense: bool, window: dict[str, Any] | None) -> dict:
    """The bundle's ``inference.json`` (``transforms``: the run's preprocessing as MONAI bundle config,
    :func:`medtl.export.transforms.bundle_transforms`)."""
    return _inference_config(transforms, dense=dense, window=window)


def write_bundle(
    out: Path,
    network: ExportedNetwork,
    loaded: Any,
    sample: Sample,
    info: dict[str, Any],
    *,
    config: dict[str, Any],
    dense: bool,
    license_name: str | None,
) -> tuple[list[Path], float]:
    """Write the bundle into ``out`` (an empty folder); the preprocessing was checked before
    (:func:`medtl.export.common.check_transforms`).

    Returns:
        The files written and the network's largest difference from PyTorch.

    Raises:
        ExportError: tracing or the check of the traced network fails (a difference above the tolerance).
    """
    (out / "models").mkdir(parents=True)
    (out / "configs").mkdir()
    (out / "docs").mkdir()
    diff = write_torchscript(network, sample.tensor, out / "models" / "model.ts")
    torch.save(loaded.model.state_dict(), out / "models" / "model.pt")
    license_name = (license_name or "").strip() or None
    files = [out / "models" / "model.ts", out / "models" / "model.pt"]
    texts = {
        out / "configs" / "inference.json": json.dumps(config, indent=2) + "\n",
        out / "configs" / "metadata.json": json.dumps(
            _metadata(info, dense=dense, license_name=license_name or "not chosen (see LICENSE)"), indent=2
        )
        + "\n",
        out / "docs" / "README.md": _readme(info, dense=dense),
        out / "LICENSE": _license_text(license_name, info),
    }
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
        files.append(path)
    return files, diff
