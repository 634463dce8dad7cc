"""Overlay PNGs: the slice with the reference's foreground, the run's window, predicted fill and reference outline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.seg_tasks import make_sphere_task, seg_config
from PIL import Image

from medtl.rundir import RunDir
from medtl.train.experiment import prepare_experiment
from medtl.train.overlay import choose_slice, display_range, overlay_name, render_overlay, write_overlays


def _png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()  # a truncated or corrupt file fails here
    assert img.format == "PNG"
    return img.convert("RGB")


def test_the_slice_is_the_one_with_the_most_reference_foreground() -> None:
    ref = np.zeros((10, 8, 9), dtype=np.int64)
    ref[2:6, 2:6, 3] = 1
    ref[1:8, 1:7, 5] = 2  # the largest cross-section, of another class
    everywhere = np.ones_like(ref)  # an untrained model's "all foreground" does not decide
    assert choose_slice(ref, everywhere) == 5
    assert choose_slice(np.zeros_like(ref), ref) == 5  # no reference foreground: the prediction's
    assert choose_slice(None, np.zeros_like(ref)) == 4  # none at all: the middle


def test_a_3d_overlay_is_a_png_of_the_physical_aspect_with_fill_and_outline() -> None:
    # x: 40 voxels of 0.5 mm (20 mm), y: 20 of 2 mm (40 mm): twice as tall as wide
    image = np.zeros((1, 40, 20, 6), dtype=np.float32)
    image[:, 20:, :, :] = 1.0  # windowed intensities in [0, 1]: the x >= 20 half is white
    ref = np.zeros((1, 40, 20, 6), dtype=np.int64)
    ref[0, 5:15, 4:16, 2] = 1
    ref[0, 4:16, 3:17, 4] = 1  # slice 4 has the most
    pred = np.zeros((40, 20, 6), dtype=np.int64)
    pred[8:18, 6:12, 4] = 1
    ov = render_overlay(torch.as_tensor(image), torch.as_tensor(pred), torch.as_tensor(ref), ["background", "ball"],
                        spacing=[0.5, 2.0, 3.0], size=256)  # fmt: skip
    assert ov.slice_index == 4 and ref[0, :, :, ov.slice_index].any()
    assert (ov.width, ov.height) == (128, 256) and ov.foreground == int((ref[0, ..., 4] | pred[..., 4]).sum())
    png = np.asarray(_png(ov.png), dtype=np.int64)
    assert png.shape == (256, 128, 3)
    # radiological view of RAS: large x (the white half) on the left; anterior (large y) at the top
    assert png[200, 10].tolist() == [255, 255, 255] and png[200, 120].tolist() == [0, 0, 0]
    # the prediction (x 8-17, y 6-11) is filled in colour: rows from the bottom, columns from the right
    r0, r1 = 256 - 12 * 256 // 20, 256 - 6 * 256 // 20
    c0, c1 = 128 - 18 * 128 // 40, 128 - 8 * 128 // 40
    fill = png[r0 + 3 : r1 - 3, c0 + 3 : c1 - 3]
    assert (np.abs(fill[..., 2] - fill[..., 0]) > 40).all()  # tinted, not grey
    # the reference's outline is drawn outside the filled part too: coloured pixels along its edge
    edge_row = 256 - 17 * 256 // 20  # the reference reaches y = 16
    band = png[edge_row - 4 : edge_row + 4, 128 - 14 * 128 // 40 : 128 - 6 * 128 // 40]
    assert (np.abs(band[..., 2] - band[..., 0]) > 40).any()


def test_a_2d_overlay_has_no_slice_and_keeps_its_layout() -> None:
    image = np.linspace(-3, 5, 30 * 50).reshape(1, 30, 50)  # z-scores: shown between percentiles
    mask = np.zeros((30, 50), dtype=np.int64)
    mask[10:20, 30:45] = 1
    ov = render_overlay(image, mask, mask[None], ["background", "lung"], spacing=[2.0, 2.0], size=200)
    assert ov.slice_index is None and (ov.width, ov.height) == (200, 120)
    assert _png(ov.png).size == (200, 120)
    lo, hi = display_range(image)
    assert lo == pytest.approx(np.percentile(image, 1)) and hi == pytest.approx(np.percentile(image, 99))
    assert display_range(np.array([0.0, 0.5, 1.0])) == (0.0, 1.0)
    with pytest.raises(ValueError, match="spatial shape"):
        render_overlay(image, mask[:, :10], None, ["background", "lung"])


def test_overlay_names_are_the_scans_names() -> None:
    used: set[str] = set()
    assert overlay_name("/d/vol_001.nii.gz", used) == "vol_001.png"
    assert overlay_name("/e/vol_001.nii", used) == "vol_001_1.png"
    assert overlay_name("/d/1A2B.dcm", used) == "1A2B.png"


def test_write_extras_draws_three_test_scans_of_a_3d_run(tmp_path: Path) -> None:
    manifest = make_sphere_task(tmp_path, n_patients=10)
    cfg = seg_config(
        manifest,
        tmp_path / "runs",
        data={"mode": "3d"},
        preprocess={"size": None, "ct_window": [-1000, 400]},
        segmentation={"patch_size": [32, 32, 16]},
        splits={"val_fraction": 0.2, "test_fraction": 0.4},
    )
    exp = prepare_experiment(cfg)
    test = exp.datasets["test"]
    assert len(test) == 4 and exp.task.strata_names == ["unlabelled"]
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 1)  # any network: what is drawn is its prediction, whatever it is
    run = RunDir(tmp_path / "run")
    exp.task.write_extras(run, model, test, exp.splits["test"])
    names = [p.name for p in run.overlays()]
    assert names == sorted(Path(r["image"]).name.replace(".nii.gz", ".png") for r in exp.splits["test"][:3])
    written = write_overlays(tmp_path / "again", model, test, exp.splits["test"], exp.classes, size=300)
    assert [p.name for p in written] == [p.name for p in run.overlays()]
    for i, (path, ov) in enumerate(written.items()):
        ref = test[i]["mask"][0].numpy()
        assert ov.slice_index is not None and ref[..., ov.slice_index].sum() == ref.sum(axis=(0, 1)).max() > 0
        # 1 x 1 mm in-plane, the volume padded to 32 x 32: square
        assert _png(path.read_bytes()).size == (300, 300) == (ov.width, ov.height)
        assert _png(run.overlay_dir.joinpath(path.name).read_bytes()).size == (512, 512)
