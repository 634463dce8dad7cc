"""Segmentation data: mask column, mask/image geometry and label checks, joint transforms, metrics conventions."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.seg_tasks import make_disc_task, seg_config, write_nifti

from medtl.errors import DataLoadError, ManifestError
from medtl.tasks.segmentation import segmentation_metrics
from medtl.train.experiment import prepare_experiment

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _rewrite(manifest: Path, row: int, **cells: str) -> None:
    rows = list(csv.DictReader(open(manifest)))
    rows[row].update(cells)
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_masks_load_with_their_images_on_the_same_grid(tmp_path: Path) -> None:
    manifest = make_disc_task(tmp_path, n_patients=8)
    exp = prepare_experiment(seg_config(manifest, tmp_path / "runs"))
    sample = exp.datasets["val"][0]
    assert sample["image"].shape == (1, 32, 32) and sample["mask"].shape == (1, 32, 32)
    assert sample["mask"].dtype == torch.int64 and set(sample["mask"].unique().tolist()) == {0, 1}
    # the disc is where the bright pixels are: the mask moved with the image through every transform
    img, mask = sample["image"][0], sample["mask"][0].bool()
    assert img[mask].mean() > img[~mask].mean() + 0.2
    torch.testing.assert_close(sample["spacing"], torch.tensor([0.8, 0.8], dtype=torch.float64))
    assert exp.task.name == "segmentation" and exp.classes == ["background", "disc"]
    assert exp.task.strata_names == ["big", "small"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shift", "differ in geometry"),
        ("shape", "differ in grid"),
        ("labels", "label value"),
    ],
)
def test_a_bad_mask_is_a_one_line_error_naming_both_files(tmp_path: Path, change: str, message: str) -> None:
    manifest = make_disc_task(tmp_path, n_patients=8)
    bad = tmp_path / "bad_mask.nii.gz"
    disc = np.zeros((32, 32, 1), dtype=np.uint8)
    disc[10:20, 10:20] = 1
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    if change == "shift":
        affine[0, 3] = 0.5  # half a millimetre off
    elif change == "shape":
        disc = np.zeros((30, 32, 1), dtype=np.uint8)
    else:
        disc[0, 0] = 3  # classes are background, disc: values 0..1
    write_nifti(bad, disc, affine)
    _rewrite(manifest, 0, mask=bad.name)
    with pytest.raises(DataLoadError) as info:
        prepare_experiment(seg_config(manifest, tmp_path / "runs", splits={"val_fraction": 0.5, "test_fraction": 0.0}))
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "bad_mask.nii.gz" in text and "img_000.nii.gz" in text


def test_missing_mask_column_and_missing_mask_files_are_manifest_errors(tmp_path: Path) -> None:
    manifest = make_disc_task(tmp_path, n_patients=8)
    cfg = seg_config(manifest, tmp_path / "runs", segmentation={"mask_column": "labelmap"})
    with pytest.raises(ManifestError, match="no 'labelmap' column"):
        prepare_experiment(cfg, build_datasets=False)
    _rewrite(manifest, 2, mask="nowhere.nii.gz")
    with pytest.raises(ManifestError, match=r"row 4: mask .*nowhere.nii.gz does not exist"):
        prepare_experiment(seg_config(manifest, tmp_path / "runs"), build_datasets=False)


def test_3d_training_draws_patches_with_foreground_and_evaluation_keeps_whole_volumes(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    rows = []
    rng = np.random.default_rng(0)
    for i in range(6):
        mask = np.zeros((40, 36, 20), dtype=np.uint8)
        mask[5:12, 6:12, 3:8] = 1
        write_nifti(
            tmp_path / f"v{i}.nii.gz",
            (rng.normal(0, 50, mask.shape) + 400.0 * mask.astype(np.float64)).astype(np.float32),
            affine,
        )
        write_nifti(tmp_path / f"m{i}.nii.gz", mask, affine)
        rows.append(f"v{i}.nii.gz,m{i}.nii.gz,x,P{i}")
    (tmp_path / "m.csv").write_text("image,mask,label,patient_id\n" + "\n".join(rows) + "\n")
    cfg = seg_config(
        tmp_path / "m.csv",
        tmp_path / "runs",
        data={"mode": "3d"},
        preprocess={"size": None, "orientation": "RAS"},
        model={"arch": "resnet10_3d"},
        segmentation={"patch_size": [32, 32, 32], "samples_per_scan": 3, "foreground_ratio": 1.0},
        splits={"val_fraction": 0.34, "test_fraction": 0.0},
    )
    exp = prepare_experiment(cfg)
    patches = exp.datasets["train"][0]
    assert isinstance(patches, list) and len(patches) == 3
    for p in patches:
        assert p["image"].shape == (1, 32, 32, 32) and p["mask"].shape == (1, 32, 32, 32)
        assert int(p["mask"].sum()) > 0  # foreground_ratio 1: every patch centred on foreground
    whole = exp.datasets["val"][0]
    assert whole["image"].shape == (1, 40, 36, 32)  # depth padded up to one patch, the rest kept whole
    assert int(whole["mask"].sum()) == 7 * 6 * 5
    assert exp.task.eval_batch_size == 1 and exp.task.roi_size == [32, 32, 32]


def test_metrics_conventions_for_empty_and_known_masks() -> None:
    mask = torch.zeros(1, 20, 20, dtype=torch.long)
    mask[0, 5:15, 5:15] = 1
    pred = torch.zeros_like(mask)
    pred[0, 5:15, 5:10] = 1  # half of the square
    m = segmentation_metrics(pred, mask, 3, [1.0, 1.0], 1.0)
    assert m.shape == (3, 2)
    assert m[0, 0] == pytest.approx(2 * 50 / (100 + 50))
    assert m[1, 0] == pytest.approx(5.0, abs=0.6)  # the missing half is up to 5 mm away
    # class 2 absent from both: Dice 1, HD95 0, surface Dice 1
    assert tuple(m[:, 1]) == (1.0, 0.0, 1.0)
    # absent from the prediction only: Dice 0, HD95 undefined, surface Dice 0
    m = segmentation_metrics(torch.zeros_like(mask), mask, 2, [1.0, 1.0], 1.0)
    assert m[0, 0] == 0.0 and np.isnan(m[1, 0]) and m[2, 0] == 0.0
    # spacing counts: the same half-square at 2 mm per pixel is twice as far
    m2 = segmentation_metrics(pred, mask, 2, [2.0, 2.0], 1.0)
    assert m2[1, 0] == pytest.approx(2 * segmentation_metrics(pred, mask, 2, [1.0, 1.0], 1.0)[1, 0])


def _monai_on_the_whole_grid(pred, mask, num_classes, spacing, tolerance):
    """MONAI's three metrics on float one-hot maps of the whole grid, as segmentation_metrics computed them before
    it cropped to the foreground (conventions for absent classes applied the same way)."""
    import warnings

    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
    from monai.networks.utils import one_hot

    po, mo = one_hot(pred[None, None].long(), num_classes), one_hot(mask[None, None].long(), num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = compute_dice(po, mo, include_background=False, ignore_empty=False)[0]
        h = compute_hausdorff_distance(po, mo, include_background=False, percentile=95, spacing=spacing)[0]
        s = compute_surface_dice(po, mo, [tolerance] * (num_classes - 1), include_background=False, spacing=spacing)
    out = np.stack([d.numpy(), h.numpy(), s[0].numpy()]).astype(float)
    for c in range(num_classes - 1):
        in_p, in_m = bool(po[0, c + 1].any()), bool(mo[0, c + 1].any())
        if not in_p and not in_m:
            out[:, c] = (1.0, 0.0, 1.0)
        elif in_p != in_m:
            out[:, c] = (0.0, np.nan, 0.0)
    return out


@pytest.mark.parametrize("dims", [2, 3])
def test_metrics_on_the_foreground_box_equal_the_whole_grid(dims: int) -> None:
    """Random blobs of three classes, some touching the grid's border, one class absent or one-sided: the cropped
    computation gives MONAI's whole-grid values to float precision."""
    rng = np.random.default_rng(dims)
    shape = (30, 26) if dims == 2 else (30, 26, 14)
    spacing = [0.7, 1.3] if dims == 2 else [0.7, 0.7, 2.5]
    for trial in range(6):
        pred, mask = torch.zeros(shape, dtype=torch.uint8), torch.zeros(shape, dtype=torch.uint8)
        for target in (pred, mask):
            for c in (1, 2):
                if trial == 3 and c == 2 and target is pred:
                    continue  # class 2 only in the reference
                lo = [int(rng.integers(0, n - 4)) for n in shape]
                if trial % 2 == 0:
                    lo[0] = 0  # touches the border
                box = tuple(slice(a, a + int(rng.integers(2, 8))) for a in lo)
                target[box] = c
        ours = segmentation_metrics(pred, mask, 4, spacing, 1.0)  # class 3 absent from both
        np.testing.assert_allclose(ours, _monai_on_the_whole_grid(pred, mask, 4, spacing, 1.0), rtol=1e-5, atol=1e-6)
    assert segmentation_metrics(torch.zeros(shape), torch.zeros(shape), 3, spacing, 1.0).tolist() == [
        [1.0, 1.0],
        [0.0, 0.0],
        [1.0, 1.0],
    ]


def test_sample_ct_masks_regenerate_byte_for_byte(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("medtl_sample_masks", SAMPLE / "masks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    fresh = module.generate(tmp_path)
    committed = SAMPLE / "ct_nifti_masks"
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir())
    for name in names:
        a, b = (committed / name).read_bytes(), (fresh / name).read_bytes()
        if name.endswith(".gz"):
            a, b = gzip.decompress(a), gzip.decompress(b)
        assert a == b, name
    rows = list(csv.DictReader(open(committed / "manifest.csv")))
    assert len(rows) == 48 and {r["label"] for r in rows} == {"nodule", "no_nodule"}


def test_augmentation_moves_image_and_mask_together(tmp_path: Path) -> None:
    manifest = make_disc_task(tmp_path, n_patients=8)
    cfg = seg_config(
        manifest,
        tmp_path / "runs",
        augment={"enabled": True, "flip_prob": 1.0, "rotate_deg": 30.0, "zoom": 0.2, "affine_prob": 1.0},
    )
    exp = prepare_experiment(cfg)
    plain = prepare_experiment(seg_config(manifest, tmp_path / "runs2")).datasets["train"][0]
    for _ in range(3):
        s = exp.datasets["train"][0]
        img, mask = s["image"][0], s["mask"][0].bool()
        assert set(s["mask"].unique().tolist()) <= {0, 1} and mask.any()
        assert img[mask].mean() > img[~mask].mean() + 0.2  # the bright disc is still under the mask
        assert not torch.equal(s["mask"], plain["mask"])  # and both moved


@pytest.mark.parametrize("name", ["seg_ct_medicalnet.yaml", "seg_ct_inflated.yaml", "seg_ct_scratch.yaml"])
def test_segmentation_example_configs_prepare(name: str) -> None:
    from medtl.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / name)
    assert cfg.segmentation is not None and cfg.train.monitor == "val_dice"
    exp = prepare_experiment(cfg, build_datasets=False)
    assert exp.task.name == "segmentation" and exp.task.roi_size == [32, 32, 32]
    assert exp.classes == ["background", "lung", "nodule"] and exp.task.strata_names == ["no_nodule", "nodule"]
    assert len(exp.records) == 48 and all(Path(r["mask"]).is_file() for r in exp.records)
