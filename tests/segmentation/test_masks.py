"""sample_data/masks.py: the lung-field masks of the sample radiographs fit their images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.seg_tasks import SAMPLE, sample_module, seg_config

from medtl.io import read_scan
from medtl.train.experiment import prepare_experiment, read_manifest
from medtl.transforms.segmentation import check_mask


def test_xray_masks_name_every_radiograph_without_labels(xray_masks: Path) -> None:
    rows = list(csv.DictReader(open(xray_masks)))
    assert list(rows[0]) == ["image", "mask", "patient_id"]  # no label column: a manifest for unstratified splits
    images = sorted(r["image"] for r in csv.DictReader(open(xray_masks.parent.parent / "xray" / "manifest.csv")))
    assert sorted(Path(r["image"]).name for r in rows) == images
    assert len({r["patient_id"] for r in rows}) == 52 == len(rows)
    # the same names and patients as the committed radiographs: the replay follows generate.py's draws
    committed = {r["image"] for r in csv.DictReader(open(SAMPLE / "xray" / "manifest.csv"))}
    assert set(images) == committed


def test_xray_masks_lie_on_their_images_and_cover_the_dark_lung_fields(xray_masks: Path) -> None:
    from scipy.ndimage import binary_dilation

    rows = list(csv.DictReader(open(xray_masks)))
    for r in rows[:12]:
        image = read_scan(xray_masks.parent / r["image"])
        mask = read_scan(xray_masks.parent / r["mask"])[..., 0]  # one slice deep
        check_mask(image, mask, ["background", "lung"], r["image"], r["mask"])  # same grid and affine
        m = np.asarray(mask[0]) > 0
        assert 0.15 < m.mean() < 0.45  # two lung fields: about a quarter of the radiograph
        a = np.asarray(image[0], dtype=np.float64)
        ring = binary_dilation(m, iterations=4) & ~binary_dilation(m, iterations=1)  # the tissue just outside
        inside = binary_dilation(~m, iterations=2)  # keep away from the soft edge
        # the lung fields are 0.25-0.32 x gain (1800-2600) less dense than the tissue around them
        assert a[ring].mean() - a[m & ~inside].mean() > 300, r["image"]
        # and a mask shifted by 6 pixels fits worse: the edges are where the image's edges are
        shifted = np.roll(m, 6, axis=0)
        assert a[shifted].mean() > a[m].mean() + 20, r["image"]


def test_xray_masks_are_deterministic(xray_masks: Path, tmp_path: Path) -> None:
    again = sample_module("masks").generate(tmp_path, task="xray_masks")
    for f in sorted(xray_masks.parent.iterdir()):
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name


def test_a_label_free_segmentation_manifest_prepares_and_splits_by_patient(xray_masks: Path, tmp_path: Path) -> None:
    cfg = seg_config(
        xray_masks,
        tmp_path,
        data={"modality": "XR"},
        preprocess={"size": [64, 64]},
        segmentation={"classes": ["background", "lung"]},
        splits={"label_fraction": 0.5},
    )
    exp = prepare_experiment(cfg, build_datasets=False)
    assert not read_manifest(exp.config).labelled
    assert exp.task.strata_names == ["unlabelled"] and exp.mode == "2d" and exp.task.spatial_dims == 2
    counts = exp.patient_counts()
    assert counts == {"train": 13, "val": 13, "test": 13}  # half of the 26 training patients, 13 + 13 held out
    assert sum(s == "train" for s in exp.assignment.values()) == 26
    split_of = {p: {s for s in ("train", "val", "test") if any(r["patient_id"] == p for r in exp.splits[s])}
                for p in exp.assignment}  # fmt: skip
    assert all(len(s) <= 1 for s in split_of.values())
    # a classification config on the same manifest still needs labels
    with pytest.raises(Exception, match="missing column 'label'"):
        prepare_experiment({k: v for k, v in cfg.items() if k != "segmentation"}, build_datasets=False)
    sample = prepare_experiment(cfg).datasets["val"][0]
    assert sample["image"].shape == (1, 64, 64) and sample["mask"].shape == (1, 64, 64)
    assert isinstance(sample["patient"], int) and sample["mask"].dtype == torch.int64
