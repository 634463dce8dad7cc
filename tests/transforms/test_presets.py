"""Pipelines from the config and the weight source: modality intensity, normalisation, channels, sizes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medtl.config import load_config
from medtl.errors import ConfigError, DataLoadError
from medtl.train.experiment import resolve_input, resolve_weight_source
from medtl.transforms import build_pipeline, channel_stats, modality_from_meta, unwrap_load_error
from medtl.transforms.record import InputRecord
from medtl.weights.sources import Normalization


def _cfg(**sections):
    raw = {"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}, "augment": {"enabled": False}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return load_config(raw)


def _pipe(cfg, *, modality: str, mode: str, scan_dims: int, **kwargs):  # noqa: ANN001, ANN003
    """The pipeline as an experiment builds it: channels and normalisation from the resolved weight source."""
    data_channels = 3 if mode == "2.5d" and cfg.data.neighbor_slices else 1
    in_channels, norm = resolve_input(cfg, resolve_weight_source(cfg, mode), data_channels=data_channels)
    record = InputRecord.of(
        modality=modality, mode=mode, scan_dims=scan_dims, in_channels=in_channels, normalization=norm, **kwargs
    )
    return build_pipeline(cfg, record)


@pytest.fixture
def ct_volume(tmp_path: Path) -> Path:
    vol = np.full((8, 10, 12), -1000.0, dtype=np.float32)  # air
    vol[2:6, 3:7, 4:8] = 40.0  # soft tissue
    vol[0, 0, 0] = 3000.0  # metal, clipped by the window
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 1.0, 1.0, 1.0])), str(path))
    return path


def _input(weights: str, mode: str = "2d", **model):  # noqa: ANN003
    cfg = _cfg(model={"weights": weights, **model})
    return resolve_input(cfg, resolve_weight_source(cfg, mode), data_channels=1)


def test_weight_sources_give_their_channels_and_normalisation() -> None:
    channels, imagenet = _input("imagenet")
    assert channels == 3 and imagenet.kind == "imagenet" and imagenet.mean == pytest.approx((0.485, 0.456, 0.406))
    assert _input("medicalnet", "3d", arch="resnet18_3d") == (1, Normalization("zscore_nonzero"))
    assert _input("scratch") == (1, Normalization("none"))
    forced = resolve_input(
        _cfg(preprocess={"normalization": "imagenet"}), resolve_weight_source(_cfg(), "2d"), data_channels=1
    )
    assert forced[0] == 3 and forced[1].kind == "imagenet"  # the config may force one
    none = resolve_input(
        _cfg(model={"weights": "imagenet"}, preprocess={"normalization": "none"}),
        resolve_weight_source(_cfg(model={"weights": "imagenet"}), "2d"),
        data_channels=1,
    )
    assert none[1].kind == "none"
    assert _input("imagenet", "3d")[0] == 3  # a 3D model with ImageNet weights: the inflated source


def test_ct_i3resnet152_gets_three_channels_and_no_normalisation() -> None:
    # the weights were trained on 3-channel CT without ImageNet statistics: the pipeline must repeat the grey
    # channel 3 times (not sum the stem to one channel) and leave the [0, 1] window as it is
    channels, norm = _input("ct-i3resnet152", "3d", arch="i3resnet152_3d")
    assert channels == 3 and norm.kind == "none"
    cfg = _cfg(model={"arch": "i3resnet152_3d", "weights": "ct-i3resnet152"}, preprocess={"size": [4, 4, 4]})
    p = _pipe(cfg, modality="CT", mode="3d", scan_dims=3)
    x = p.post_eval({"image": torch.rand(1, 4, 4, 4)})["image"]
    assert tuple(x.shape) == (3, 4, 4, 4) and torch.equal(x[0], x[2])


def test_ct_window_then_imagenet_normalisation_on_three_channels(ct_volume: Path) -> None:
    cfg = _cfg(preprocess={"size": [4, 5, 6], "ct_window": [-1000, 1000]}, model={"weights": "imagenet-inflated"})
    p = _pipe(cfg, modality="CT", mode="3d", scan_dims=3)
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
    p = _pipe(cfg, modality="CT", mode="3d", scan_dims=3)
    assert p.in_channels == 1 and p.normalization.kind == "zscore_nonzero"
    x = p.post_eval(p.pre({"image": str(ct_volume)}))["image"]
    inside = x[x != 0]
    assert abs(float(inside.mean())) < 1e-4 and float(inside.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert int((x == 0).sum()) > 0  # air stays 0


def test_mr_percentiles_for_every_weight_source_and_zscore_on_request(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vol = np.zeros((6, 6, 6), np.float32)
    vol[1:5, 1:5, 1:5] = rng.normal(500, 100, (4, 4, 4))
    path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    # scratch gets the same intensities as a pretrained arm (it used to get a z-score: benchmarks/README.md)
    p = _pipe(_cfg(preprocess={"size": [6, 6, 6]}), modality="MR", mode="3d", scan_dims=3)
    assert p.description["intensity"].startswith("percentiles")
    x = p.pre({"image": str(path)})["image"]
    assert float(x.min()) == pytest.approx(0.0) and float(x.max()) == pytest.approx(1.0)
    p = _pipe(
        _cfg(preprocess={"size": [6, 6, 6], "intensity": "zscore_nonzero"}), modality="MR", mode="3d", scan_dims=3
    )
    assert p.description["intensity"] == "MR z-score over non-zero voxels"
    x = p.pre({"image": str(path)})["image"]
    assert abs(float(x[x != 0].mean())) < 1e-4
    p2 = _pipe(
        _cfg(preprocess={"size": [6, 6]}, model={"weights": "imagenet"}), modality="MR", mode="2.5d", scan_dims=3
    )
    assert p2.description["intensity"].startswith("percentiles")


def test_modes_sizes_and_errors() -> None:
    p = _pipe(_cfg(data={"mode": "2.5d"}), modality="CT", mode="2.5d", scan_dims=3)
    assert p.model_spatial_dims == 2 and p.data_channels == 3 and p.in_channels == 3 and p.size == [224, 224]
    p = _pipe(_cfg(), modality="XR", mode="2d", scan_dims=2)
    assert p.in_channels == 1 and p.normalization.kind == "none"
    with pytest.raises(ConfigError, match="needs 3D scans"):
        _pipe(_cfg(), modality="XR", mode="3d", scan_dims=2)
    with pytest.raises(ConfigError, match="must have 3 values"):
        _pipe(_cfg(preprocess={"size": [8, 8]}), modality="CT", mode="3d", scan_dims=3)
    with pytest.raises(ConfigError, match="model.in_channels: 4"):  # a 4D NIfTI is not averaged into one channel
        _pipe(_cfg(preprocess={"size": [8, 8, 8]}), modality="MR", mode="3d", scan_dims=3, scan_channels=4)
    with pytest.raises(ConfigError, match="volumes of one slice"):  # nor is a one-slice volume stretched into 3D
        _pipe(_cfg(), modality="MR", mode="3d", scan_dims=2, flat_volumes=True)
    assert modality_from_meta({"modality": "CR"}, 2) == "XR"
    assert modality_from_meta({"modality": "", "units": "HU"}, 3) == "CT"
    with pytest.raises(ConfigError, match="set data.modality"):
        modality_from_meta({"modality": "", "filename_or_obj": "x.nii.gz"}, 3)


def test_one_channel_model_uses_average_imagenet_statistics() -> None:
    imagenet = Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    mean, std = channel_stats(imagenet, 1)
    assert mean == pytest.approx([0.449], abs=1e-6) and std == pytest.approx([0.226], abs=1e-6)
    cfg = _cfg(model={"weights": "imagenet", "in_channels": 1}, preprocess={"size": [2, 2]})
    p = _pipe(cfg, modality="XR", mode="2d", scan_dims=2)
    x = torch.full((1, 2, 2), 0.5)
    assert torch.allclose(p.post_eval({"image": x.clone()})["image"], (x - 0.449) / 0.226, atol=1e-6)


def test_a_one_slice_volume_is_a_2d_image_and_other_kinds_of_input_are_refused(tmp_path: Path) -> None:
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(12, dtype=np.float32).reshape(3, 4, 1), np.eye(4)), str(flat))
    cfg = _cfg(preprocess={"size": [4, 3]}, data={"modality": "MR"})
    p = _pipe(cfg, modality="MR", mode="2d", scan_dims=2, flat_volumes=True)
    assert tuple(p.post_eval(p.pre({"image": str(flat)}))["image"].shape) == (1, 4, 3)
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.float32), np.eye(4)), str(vol))
    with pytest.raises(RuntimeError) as err:
        p.pre({"image": str(vol)})
    inner = unwrap_load_error(err.value)
    assert isinstance(inner, DataLoadError) and "takes 2D input" in str(inner) and str(vol) in str(inner)


def test_augmentation_only_in_training_and_failures_name_the_file(tmp_path: Path) -> None:
    cfg = _cfg(augment={"enabled": True, "flip_prob": 1.0, "flip_axes": [0], "affine_prob": 0.0})
    p = _pipe(cfg, modality="XR", mode="2d", scan_dims=2)
    img = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.equal(p.post_eval({"image": img})["image"], img)
    assert torch.equal(p.post_train({"image": img})["image"], img.flip(1))  # raw axis 0: the rows
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
    p = _pipe(cfg, modality="XR", mode="2d", scan_dims=2)
    img = p.post_eval(p.pre({"image": str(tmp_path / "cr.dcm")}))["image"]
    assert tuple(img.shape) == (1, 12, 20)
    assert bool((img[0, :3] > 0.9).all()) and bool((img[0, 3:] < 0.1).all())


def test_seeding_reaches_the_augmentation() -> None:
    # MONAI seeds only Randomizable transforms: the guard around augmentation must pass the seed on
    cfg = _cfg(augment={"enabled": True, "affine_prob": 1.0, "rotate_deg": 20.0, "noise_std": 0.1})
    p = _pipe(cfg, modality="XR", mode="2d", scan_dims=2)
    img = torch.rand(1, 16, 16)

    def draws(seed: int) -> list[torch.Tensor]:
        p.post_train.set_random_state(seed=seed)
        return [p.post_train({"image": img.clone()})["image"] for _ in range(3)]

    first, again, other = draws(7), draws(7), draws(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(
    ("mode", "flip", "dim"),
    [
        ("2d", "left_right", 2),  # (C, rows, columns) as displayed: the columns
        ("2d", "superior_inferior", 1),
        ("2.5d", "left_right", 2),
        ("2.5d", "anterior_posterior", 1),
        ("3d", "left_right", 1),  # RAS volume (C, x, y, z): x runs left to right
        ("3d", "anterior_posterior", 2),
        ("3d", "superior_inferior", 3),
    ],
)
def test_flips_are_named_by_anatomy(mode: str, flip: str, dim: int) -> None:
    cfg = _cfg(augment={"enabled": True, "flip_prob": 1.0, "flips": [flip]}, model={"weights": "scratch"})
    dims = 3 if mode == "3d" else 2
    p = _pipe(
        load_config(cfg.to_dict(), {"model.arch": "resnet18_3d"}) if dims == 3 else cfg,
        modality="CT",
        mode=mode,
        scan_dims=3 if mode != "2d" else 2,
    )
    shape = (3 if mode == "2.5d" else 1, *([4, 5, 6][:dims]))
    img = torch.arange(float(np.prod(shape))).reshape(shape)
    assert torch.equal(p.post_train({"image": img.clone()})["image"], img.flip(dim))
    assert p.description["augment"] == ["RandFlipTensord"]


def test_default_augmentation_is_a_left_right_flip_only() -> None:
    cfg = load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}})
    assert cfg.augment.flips == ["left_right"] and cfg.augment.flip_axes is None
    p = _pipe(cfg, modality="XR", mode="2d", scan_dims=2)
    assert p.description["augment"] == ["RandFlipTensord"]  # no rotation, zoom or intensity shift by default
    img = torch.arange(20.0).reshape(1, 4, 5)
    seen = set()
    for seed in range(12):
        p.post_train.set_random_state(seed=seed)
        out = p.post_train({"image": img.clone()})["image"]
        seen.add("same" if torch.allclose(out, p.post_eval({"image": img.clone()})["image"]) else "other")
        flipped = p.post_eval({"image": img.flip(2)})["image"]
        assert torch.allclose(out, flipped) or torch.allclose(out, p.post_eval({"image": img.clone()})["image"])
    assert seen == {"same", "other"}  # flipped left-right about half the time, never upside down


def test_flip_axes_out_of_range_and_both_ways_are_refused() -> None:
    with pytest.raises(ConfigError, match="flips .by anatomy. or the deprecated"):
        _cfg(augment={"flip_axes": [0], "flips": []})
    cfg = _cfg(augment={"enabled": True, "flip_axes": [2]})
    with pytest.raises(ConfigError, match="axis 2; 2D samples have axes 0..1"):
        _pipe(cfg, modality="XR", mode="2d", scan_dims=2)
    with pytest.raises(ConfigError, match="allowed: 'left_right'"):
        _cfg(augment={"flips": ["left"]})


def _mr_patch(path: Path, value: float) -> Path:
    """A one-slice 8-bit MR patch: a tissue of intensity ``value`` with a darker border."""
    arr = np.full((8, 8, 1), value, dtype=np.uint8)
    arr[:2] = 20
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("weights", ["imagenet", "scratch"])
def test_mr_intensity_range_keeps_what_per_scan_scaling_removes(tmp_path: Path, weights: str) -> None:
    grey, white = _mr_patch(tmp_path / "grey.nii.gz", 130), _mr_patch(tmp_path / "white.nii.gz", 180)

    def centre(intensity: str) -> tuple[float, float]:
        cfg = _cfg(model={"weights": weights}, preprocess={"size": [8, 8], "intensity": intensity})
        p = _pipe(cfg, modality="MR", mode="2d", scan_dims=2, flat_volumes=True)
        return tuple(float(p.pre({"image": str(f)})["image"][0, 3:6, 3:6].mean()) for f in (grey, white))

    g, w = centre("auto")  # per-scan scaling: both patches come out the same
    assert g == pytest.approx(w, abs=1e-4)
    g, w = centre("range")  # fixed 0..255: grey and white matter stay apart, as in the file
    assert g == pytest.approx(130 / 255, abs=1e-4) and w == pytest.approx(180 / 255, abs=1e-4)


def test_intensity_range_must_be_increasing() -> None:
    cfg = _cfg(preprocess={"intensity": "range", "intensity_range": [255, 0]})
    with pytest.raises(ConfigError, match="low < high"):
        _pipe(cfg, modality="MR", mode="2d", scan_dims=2)
