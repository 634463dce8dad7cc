"""Pipelines from the config and the weight source: modality intensity, normalisation, channels, sizes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medtl.config import load_config
from medtl.errors import ConfigError, DataLoadError
from medtl.transforms import (
    ChannelNormalize,
    NormalizationSpec,
    build_pipeline,
    modality_from_meta,
    normalization_for,
    unwrap_load_error,
)


def _cfg(**sections):
    raw = {"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}, "augment": {"enabled": False}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return load_config(raw)


@pytest.fixture
def ct_volume(tmp_path: Path) -> Path:
    vol = np.full((8, 10, 12), -1000.0, dtype=np.float32)  # air
    vol[2:6, 3:7, 4:8] = 40.0  # soft tissue
    vol[0, 0, 0] = 3000.0  # metal, clipped by the window
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 1.0, 1.0, 1.0])), str(path))
    return path


def test_weight_sources_give_their_normalisation() -> None:
    imagenet = normalization_for("imagenet")
    assert imagenet.kind == "imagenet" and imagenet.mean == pytest.approx((0.485, 0.456, 0.406))
    assert normalization_for("medicalnet").kind == "zscore_nonzero"
    assert normalization_for("scratch").kind == "none"
    assert normalization_for("scratch", "imagenet").kind == "imagenet"  # the config may force one
    assert normalization_for("imagenet", "none").kind == "none"


def test_ct_window_then_imagenet_normalisation_on_three_channels(ct_volume: Path) -> None:
    cfg = _cfg(preprocess={"size": [4, 5, 6], "ct_window": [-1000, 1000]}, model={"weights": "imagenet-inflated"})
    p = build_pipeline(cfg, modality="CT", mode="3d", scan_dims=3)
    assert p.in_channels == 3 and p.normalization.kind == "imagenet"
    pre = p.pre({"image": str(ct_volume)})["image"]
    assert tuple(pre.shape) == (1, 4, 5, 6)
    assert float(pre.min()) >= 0.0 and float(pre.max()) <= 1.0  # HU window -> [0, 1], clipped
    x = p.post_eval({"image": pre})["image"]
    assert tuple(x.shape) == (3, 4, 5, 6)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (pre.repeat(3, 1, 1, 1) - mean.view(3, 1, 1, 1)) / std.view(3, 1, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)


def test_medicalnet_zscore_over_non_zero_voxels(ct_volume: Path) -> None:
    cfg = _cfg(
        preprocess={"size": [8, 10, 12], "orientation": None}, model={"arch": "resnet18_3d", "weights": "medicalnet"}
    )
    p = build_pipeline(cfg, modality="CT", mode="3d", scan_dims=3)
    assert p.in_channels == 1 and p.normalization.kind == "zscore_nonzero"
    x = p.post_eval(p.pre({"image": str(ct_volume)}))["image"]
    inside = x[x != 0]
    assert abs(float(inside.mean())) < 1e-4 and float(inside.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert int((x == 0).sum()) > 0  # air stays 0


def test_mr_zscore_for_scratch_and_percentiles_for_imagenet(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vol = np.zeros((6, 6, 6), np.float32)
    vol[1:5, 1:5, 1:5] = rng.normal(500, 100, (4, 4, 4))
    path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    p = build_pipeline(_cfg(preprocess={"size": [6, 6, 6]}), modality="MR", mode="3d", scan_dims=3)
    assert p.description["intensity"] == "MR z-score over non-zero voxels"
    x = p.pre({"image": str(path)})["image"]
    assert abs(float(x[x != 0].mean())) < 1e-4
    p2 = build_pipeline(
        _cfg(preprocess={"size": [6, 6]}, model={"weights": "imagenet"}), modality="MR", mode="2.5d", scan_dims=3
    )
    assert p2.description["intensity"].startswith("percentiles")


def test_modes_sizes_and_errors() -> None:
    p = build_pipeline(_cfg(data={"mode": "2.5d"}), modality="CT", mode="2.5d", scan_dims=3)
    assert p.model_spatial_dims == 2 and p.data_channels == 3 and p.in_channels == 3 and p.size == [224, 224]
    p = build_pipeline(_cfg(), modality="XR", mode="2d", scan_dims=2)
    assert p.in_channels == 1 and p.normalization.kind == "none"
    with pytest.raises(ConfigError, match="needs 3D scans"):
        build_pipeline(_cfg(), modality="XR", mode="3d", scan_dims=2)
    with pytest.raises(ConfigError, match="must have 3 values"):
        build_pipeline(_cfg(preprocess={"size": [8, 8]}), modality="CT", mode="3d", scan_dims=3)
    assert modality_from_meta({"modality": "CR"}, 2) == "XR"
    assert modality_from_meta({"modality": "", "units": "HU"}, 3) == "CT"
    with pytest.raises(ConfigError, match="set data.modality"):
        modality_from_meta({"modality": "", "filename_or_obj": "x.nii.gz"}, 3)


def test_one_channel_model_uses_average_imagenet_statistics() -> None:
    op = ChannelNormalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = torch.full((1, 2, 2), 0.5)
    assert torch.allclose(op(x), (x - 0.449) / 0.226, atol=1e-6)


def test_augmentation_only_in_training_and_failures_name_the_file(tmp_path: Path) -> None:
    cfg = _cfg(augment={"enabled": True, "flip_prob": 1.0, "affine_prob": 0.0, "intensity_shift": 0.0})
    p = build_pipeline(cfg, modality="XR", mode="2d", scan_dims=2, normalization=NormalizationSpec("none"))
    img = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.equal(p.post_eval({"image": img})["image"], img)
    assert torch.equal(p.post_train({"image": img})["image"], img.flip(1))
    missing = tmp_path / "nope.dcm"
    with pytest.raises(RuntimeError) as err:
        p.pre({"image": str(missing), "row": 7})
    inner = unwrap_load_error(err.value)
    assert isinstance(inner, DataLoadError) and inner.path == str(missing) and "manifest row 7" in str(inner)


def test_2d_samples_are_rows_first_as_displayed(tmp_path: Path) -> None:
    # a radiograph 12 rows x 20 columns, bright in its top 3 rows: the network must see it the same way up
    from helpers.tasks import write_dx

    pixels = np.full((12, 20), 100, dtype=np.uint16)
    pixels[:3, :] = 3000
    write_dx(tmp_path / "cr.dcm", pixels, "P1")
    cfg = _cfg(preprocess={"size": [12, 20]})
    p = build_pipeline(cfg, modality="XR", mode="2d", scan_dims=2, normalization=NormalizationSpec("none"))
    img = p.post_eval(p.pre({"image": str(tmp_path / "cr.dcm")}))["image"]
    assert tuple(img.shape) == (1, 12, 20)
    assert bool((img[0, :3] > 0.9).all()) and bool((img[0, 3:] < 0.1).all())


def test_seeding_reaches_the_augmentation() -> None:
    # MONAI seeds only Randomizable transforms: the guard around augmentation must pass the seed on
    cfg = _cfg(augment={"enabled": True, "affine_prob": 1.0, "rotate_deg": 20.0, "noise_std": 0.1})
    p = build_pipeline(cfg, modality="XR", mode="2d", scan_dims=2, normalization=NormalizationSpec("none"))
    img = torch.rand(1, 16, 16)

    def draws(seed: int) -> list[torch.Tensor]:
        p.post_train.set_random_state(seed=seed)
        return [p.post_train({"image": img.clone()})["image"] for _ in range(3)]

    first, again, other = draws(7), draws(7), draws(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
