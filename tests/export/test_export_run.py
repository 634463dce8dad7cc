"""``medtl export``: ONNX, TorchScript and MONAI bundles of runs trained on the sample radiographs and CT series
reproduce ``medtl predict``, with the run's input recorded in input.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.cli import no_leftovers
from helpers.export import run_bundle_without_medtl, split_scans

from medtl.errors import UnknownOptionError
from medtl.export import ExportError, export_run
from medtl.train import predict


def _preprocess(info: dict[str, Any], scan: str) -> np.ndarray:
    """A scan through the MONAI transforms input.json lists (MONAI's ConfigParser, no medtl code), batch axis in
    front: what the exported model takes."""
    from monai.bundle import ConfigParser

    steps = info["preprocessing"]["transforms"]
    parser = ConfigParser({"imports": ["$import torch"], "pre": {"_target_": "Compose", "transforms": steps}})
    out = parser.get_parsed_content("pre")({"image": scan})["image"]
    return np.asarray(out.as_tensor() if hasattr(out, "as_tensor") else out, dtype=np.float32)[None]


def _predicted(run: Path, scans: list[str]) -> tuple[list[str], np.ndarray]:
    """``medtl predict``'s probabilities for ``scans`` (one row per scan, one column per class)."""
    classes = json.loads((run / "preprocessing.json").read_text())["classes"]
    rows = predict(run, scans)
    assert [r["image"] for r in rows] == scans
    return classes, np.array([[r[f"prob_{c}"] for c in classes] for r in rows])


@pytest.mark.parametrize("run_name", ["xray_run", pytest.param("ct_run", marks=pytest.mark.slow)])
def test_onnx_and_torchscript_reproduce_predict(run_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import onnxruntime

    run: Path = request.getfixturevalue(run_name)
    scans = split_scans(run)
    assert len(scans) >= 2
    classes, want = _predicted(run, scans)
    pre = json.loads((run / "preprocessing.json").read_text())
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.ts")):
        out = tmp_path / fmt
        result = export_run(run, out, format=fmt)
        assert sorted(p.name for p in out.iterdir()) == sorted([name, "input.json"])
        assert result.files == [out / name, out / "input.json"]
        assert 0.0 <= result.max_abs_diff <= 1e-4
        assert result.checked_on == "a scan preprocessed by the run's own pipeline"
        info = json.loads((out / "input.json").read_text())
        inputs = np.concatenate([_preprocess(info, s) for s in scans])  # a batch of all the test scans
        assert list(inputs.shape[1:]) == info["input"]["shape"][1:] == [pre["in_channels"], *pre["size"]]
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
            assert session.get_inputs()[0].name == "image" and session.get_inputs()[0].shape[0] == "batch"
            got = session.run(["scores"], {"image": inputs})[0]
        else:
            got = torch.jit.load(str(out / name)).eval()(torch.from_numpy(inputs)).detach().numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert info["check"]["max_abs_diff"] == result.max_abs_diff

    # input.json: the run's own input record and task state (preprocessing.json), the outputs and what they mean
    assert info["input"]["record"] == {k: pre[k] for k in info["input"]["record"]}
    assert info["task"] == {"task": pre["task"], "classes": classes}
    assert info["outputs"]["names"] == classes and info["outputs"]["per_window"] is False
    assert info["outputs"]["meaning"].startswith("softmax probabilities")
    assert info["preprocessing"]["description"]["intensity"] == pre["description"]["intensity"]
    # nothing that names a patient or a place: no scan path, no folder of the run, no pseudonym of the run
    text = (tmp_path / "onnx" / "input.json").read_text()
    patients = [r["patient_id"] for r in csv.DictReader(open(run / "splits.csv", newline=""))]
    assert str(run.parent) not in text and not any(Path(s).name in text for s in scans)
    assert patients and not any(p in text for p in patients)


@pytest.mark.slow  # a MONAI bundle run in a new process without medtl
@pytest.mark.parametrize("run_name", ["xray_run", "ct_run"])
def test_monai_bundle_reproduces_predict_without_medtl(
    run_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run: Path = request.getfixturevalue(run_name)
    scans = split_scans(run)
    classes, want = _predicted(run, scans)
    bundle = tmp_path / "bundle"
    result = export_run(run, bundle, format="monai-bundle", license="cc-by-4.0")
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "LICENSE",
        "configs/inference.json",
        "configs/metadata.json",
        "docs/README.md",
        "input.json",
        "models/model.pt",
        "models/model.ts",
    ]
    assert result.max_abs_diff <= 1e-4 and result.preprocessing_diff is not None and result.preprocessing_diff <= 1e-6

    out = tmp_path / "out"
    run_bundle_without_medtl(bundle, scans, out)
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert [r[0] for r in rows] == scans
    np.testing.assert_allclose(np.array([[float(v) for v in r[1:]] for r in rows]), want, atol=1e-4, rtol=0)

    pre = json.loads((run / "preprocessing.json").read_text())
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == pre["in_channels"] and image["spatial_shape"] == pre["size"]
    assert image["modality"] == pre["modality"] and image["intensity"] == pre["description"]["intensity"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["channel_def"] == {str(i): c for i, c in enumerate(classes)} and pred["type"] == "probabilities"
    assert meta["license"] == "cc-by-4.0" and "cc-by-4.0" in (bundle / "LICENSE").read_text()
    # the state dict of medtl's network loads safely and holds the run's tested weights
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    ckpt = torch.load(run / "best.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    assert all(torch.equal(state[k], ckpt["model." + k]) for k in state)


def test_zero_padding_shortcuts_are_traced_faithfully(tmp_path: Path) -> None:
    """MONAI's ResNet shortcut A (``torch.cat([out.data, zeros])``) is replaced by an equivalent module: same values
    on any input, and a trace that follows the input (the original's trace returns the traced sample's shortcut)."""
    import medtl
    from medtl.export.common import ZeroPadShortcut, traceable

    torch.manual_seed(0)
    model = medtl.create_model("resnet18_3d", in_channels=1, num_classes=2).eval()
    fixed = traceable(model)
    assert any(isinstance(m, ZeroPadShortcut) for m in fixed.modules())
    assert not any(isinstance(m, ZeroPadShortcut) for m in model.modules())  # the run's model is left as it is
    x, y = torch.randn(1, 1, 16, 16, 8), torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        assert torch.equal(fixed(x), model(x)) and torch.equal(fixed(torch.cat([x, y])), model(torch.cat([x, y])))
        traced = torch.jit.trace(fixed, (x,), check_trace=False)
        assert torch.allclose(traced(y), model(y), atol=1e-5)
        naive = torch.jit.trace(model, (x,), check_trace=False)
        assert not torch.allclose(naive(y), model(y), atol=1e-4)  # what the check below refuses


@pytest.mark.slow  # trains the 3D run; the checks before an export are tested on the X-ray run by default
def test_an_export_whose_trace_differs_is_refused_and_leaves_nothing(
    ct_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medtl.export.run as export_module

    monkeypatch.setattr(export_module, "traceable", lambda model: model)  # MONAI's shortcut as it is
    # refused either on the second input (the traced sample's shortcut is used for it: the scores differ, unless the
    # one-epoch network scores both alike) or on the batch of two (the traced batch size is baked into the zeros)
    refused = r"(differs from PyTorch by .*allowed 0.0001|fails on an input of batch size 2).*nothing was written"
    for fmt in ("torchscript", "onnx"):
        with pytest.raises(ExportError, match=refused):
            export_run(ct_run, tmp_path / fmt, format=fmt)
        assert not (tmp_path / fmt).exists()
    assert list(tmp_path.iterdir()) == [] and no_leftovers(tmp_path) == []


def test_output_folder_and_format_are_checked_first(xray_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="inside the run folder"):
        export_run(xray_run, xray_run / "export", format="onnx")
    with pytest.raises(ExportError, match="inside the run folder"):
        export_run(xray_run, xray_run, format="onnx")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_run(xray_run, full, format="torchscript")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    with pytest.raises(UnknownOptionError, match="Did you mean 'onnx'"):
        export_run(xray_run, tmp_path / "x", format="onxx")
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is taken
    export_run(xray_run, empty, format="torchscript")
    assert sorted(p.name for p in empty.iterdir()) == ["input.json", "model.ts"]


def test_the_export_command(xray_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medtl.cli import main

    out = tmp_path / "ts"
    assert main(["export", str(xray_run), "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'model.ts'}" in printed and f"wrote {out / 'input.json'}" in printed
    assert "max abs difference from PyTorch" in printed and "(allowed 0.0001)" in printed
    assert main(["export", str(xray_run), "--format", "onnx", "--out", str(xray_run / "x")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "inside the run folder" in err[0] and "Traceback" not in err[0]
    assert not (xray_run / "x").exists()


def test_the_bundle_reads_a_monochrome1_radiograph_as_medtl_does() -> None:
    """medtl inverts MONOCHROME1 images (high values bright); MONAI's reader keeps them as stored. The bundle's
    reading step gives medtl's values; without its MONOCHROME1 step MONAI's would be the negative image."""
    import pydicom
    from helpers.export import SAMPLE
    from monai.bundle import ConfigParser

    from medtl.export.transforms import bundle_transforms
    from medtl.io import LoadScand

    scan = SAMPLE / "xray" / "0FE36FA8.dcm"
    header = pydicom.dcmread(scan, stop_before_pixels=True)
    assert header.PhotometricInterpretation == "MONOCHROME1" and header.BitsStored == 12
    load = LoadScand(keys=["image"])
    ours = np.asarray(load({"image": str(scan)})["image"])
    steps = bundle_transforms([load])
    assert [s["_target_"] for s in steps] == ["LoadImaged", "EnsureChannelFirstd", "Lambdad"]

    def read(transforms: list[dict[str, Any]]) -> np.ndarray:
        parser = ConfigParser({"pre": {"_target_": "Compose", "transforms": transforms}})
        return np.asarray(parser.get_parsed_content("pre")({"image": str(scan)})["image"])

    np.testing.assert_array_equal(read(steps), ours)
    assert np.corrcoef(read(steps[:2]).ravel(), ours.ravel())[0, 1] < -0.99


@pytest.mark.slow  # ~2 min on 2 shared cores: a 3D segmentation run, two exports and a bundle run
def test_a_segmentation_export_reproduces_the_masks_predict_writes(tmp_path: Path) -> None:
    import nibabel as nib
    from helpers.export import SAMPLE, sample_subset, tiny_config

    from medtl.train import fine_tune

    manifest = sample_subset(SAMPLE / "ct_nifti_masks" / "manifest.csv", tmp_path / "manifest.csv", 8)
    cfg = tiny_config(
        manifest,
        tmp_path / "runs",
        "seg",
        data={"mode": "3d", "modality": "CT"},
        preprocess={"orientation": "RAS", "ct_window": [-1000, 400]},
        segmentation={
            "classes": ["background", "lung", "nodule"],
            "patch_size": [32, 32, 32],
            "samples_per_scan": 1,
            "decoder_channels": [16, 16, 8, 8, 8],
        },
        model={"arch": "resnet18_3d"},
        train={"batch_size": 2},
    )
    run = fine_tune(cfg, quiet=True).run_dir
    scans = split_scans(run)
    predict(run, scans, out=tmp_path / "medtl")

    # ONNX: the per-window network, its logits checked against PyTorch
    result = export_run(run, tmp_path / "onnx", format="onnx")
    assert result.max_abs_diff <= 1e-4 and result.preprocessing_diff is not None and result.preprocessing_diff <= 1e-6
    info = json.loads((tmp_path / "onnx" / "input.json").read_text())
    assert info["outputs"]["name"] == "logits" and info["outputs"]["per_window"] is True
    assert info["outputs"]["shape"] == ["batch", 3, 32, 32, 32]
    assert info["outputs"]["sliding_window"] == {"roi_size": [32, 32, 32], "overlap": 0.25, "mode": "gaussian",
                                                 "sw_batch_size": 4}  # fmt: skip

    # the bundle slides the window over each whole scan and writes the label map on the scan's own grid: the voxels
    # and the affine medtl predict writes
    bundle = tmp_path / "bundle"
    export_run(run, bundle, format="monai-bundle")
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["inferer"]["_target_"] == "SlidingWindowInferer"
    run_bundle_without_medtl(bundle, scans, tmp_path / "bundle-out")
    for scan in scans:
        name = Path(scan).name.replace(".nii.gz", "_mask.nii.gz")
        want, got = nib.load(tmp_path / "medtl" / name), nib.load(tmp_path / "bundle-out" / name)
        np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
        np.testing.assert_allclose(got.affine, want.affine, atol=1e-5)
