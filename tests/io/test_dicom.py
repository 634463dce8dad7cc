"""DICOM series written with pydicom into tmp_path, read by medtl and compared with SimpleITK's ImageSeriesReader."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from helpers.dicom import (
    oblique_iop,
    random_raw,
    sitk_read,
    sitk_world_ras,
    write_series,
)

from medtl.errors import GeometryError, SeriesNotFoundError
from medtl.io import read_scan

pytest.importorskip("SimpleITK")

CORNERS = [(0, 0, 0), (5, 0, 0), (0, 7, 0), (0, 0, 3), (3, 4, 5), (15, 11, 7)]


def assert_same_as_sitk(scan, img, ref, indices=CORNERS) -> None:
    """Voxel values, spacing and voxel-to-world mapping of a medtl scan equal SimpleITK's."""
    arr = scan[0].numpy()
    assert arr.shape == ref.shape
    np.testing.assert_allclose(arr, ref, atol=1e-4)
    np.testing.assert_allclose(scan.meta["spacing"], img.GetSpacing(), rtol=1e-5)
    affine = np.asarray(scan.affine, dtype=np.float64)
    for idx in indices:
        idx = tuple(min(i, s - 1) for i, s in zip(idx, arr.shape, strict=True))
        world = (affine @ np.array([*idx, 1.0]))[:3]
        np.testing.assert_allclose(world, sitk_world_ras(img, idx), atol=1e-3)


def test_shuffled_axial_series_matches_sitk(tmp_path):
    raw = random_raw((8, 12, 16))
    write_series(tmp_path / "s", raw, slope=1.0, intercept=-1024.0)
    scan = read_scan(tmp_path / "s")
    img, ref = sitk_read(tmp_path / "s")
    assert_same_as_sitk(scan, img, ref)
    # truth: stored value * slope + intercept, slice k of the input at index k
    np.testing.assert_array_equal(scan[0].numpy(), raw.transpose(2, 1, 0).astype(np.float32) - 1024)
    assert scan.meta["units"] == "HU" and scan.dtype.is_floating_point
    assert scan.meta["space"] == "RAS" and scan.meta["source_format"] == "dicom"
    assert scan.meta["patient_id"] and scan.meta["patient_id"] != "PAT-001"


def test_oblique_series_matches_sitk(tmp_path):
    raw = random_raw((7, 10, 14), seed=1)
    iop = oblique_iop(25.0, 17.0)
    write_series(tmp_path / "o", raw, iop=iop, origin=(12.5, -40.0, 7.0), slice_spacing=3.1, pixel_spacing=(0.9, 1.3))
    scan = read_scan(tmp_path / "o")
    img, ref = sitk_read(tmp_path / "o")
    assert_same_as_sitk(scan, img, ref)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    rot = np.asarray(scan.affine)[:3, :3] / np.asarray(scan.meta["spacing"])
    np.testing.assert_allclose(rot, np.diag([-1, -1, 1]) @ direction, atol=1e-6)


def test_descending_positions_and_per_slice_rescale(tmp_path):
    raw = random_raw((6, 9, 11), seed=2)
    slopes = [1.0, 2.0, 0.5, 1.0, 3.0, 1.5]
    intercepts = [-1024.0, -1000.0, 0.0, 10.0, -5.0, -1024.0]
    # positions decreasing along the normal: file order, instance numbers and position all disagree
    write_series(tmp_path / "d", raw, positions=[-2.0 * k for k in range(6)], slope=slopes, intercept=intercepts)
    scan = read_scan(tmp_path / "d")
    img, ref = sitk_read(tmp_path / "d")
    assert_same_as_sitk(scan, img, ref)
    expected = np.stack([raw[k] * slopes[k] + intercepts[k] for k in range(6)])[::-1]
    np.testing.assert_allclose(scan[0].numpy(), expected.transpose(2, 1, 0), atol=1e-4)


def test_monochrome1_is_inverted(tmp_path):
    raw = np.random.default_rng(3).integers(0, 4000, size=(4, 8, 9)).astype(np.uint16)
    write_series(tmp_path / "m1", raw, photometric="MONOCHROME1", modality="MR", slope=1.0, intercept=0.0)
    scan = read_scan(tmp_path / "m1")
    img, ref = sitk_read(tmp_path / "m1")
    # both invert within the stored range, so that bright means high
    np.testing.assert_allclose(scan[0].numpy(), ref, atol=1e-3)
    np.testing.assert_array_equal(scan[0].numpy(), 65535.0 - raw.transpose(2, 1, 0))
    assert scan.meta["units"] == "" and scan.meta["modality"] == "MR"
    np.testing.assert_allclose(scan.meta["spacing"], img.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(scan.affine)[:3, 3], sitk_world_ras(img, (0, 0, 0)), atol=1e-4)


def test_two_series_in_one_folder_are_never_mixed(tmp_path, caplog):
    folder = tmp_path / "two"
    big = random_raw((9, 10, 12), seed=4)
    small = random_raw((4, 10, 12), seed=5)
    study = "1.2.826.0.1.3680043.8.498.1"
    write_series(folder, big, series_uid="1.2.3.100", study_uid=study, description="thin", seed=1)
    write_series(folder, small, series_uid="1.2.3.200", study_uid=study, description="thick", slice_spacing=5.0, seed=2)
    with caplog.at_level(logging.INFO, logger="medtl.io"):
        scan = read_scan(folder)
    assert scan.meta["series_uid"] == "1.2.3.100"
    assert "chose series 1.2.3.100" in caplog.text and "1.2.3.200" in caplog.text
    img, ref = sitk_read(folder, "1.2.3.100")
    assert_same_as_sitk(scan, img, ref)
    thick = read_scan(folder, "thick")
    img2, ref2 = sitk_read(folder, "1.2.3.200")
    assert_same_as_sitk(thick, img2, ref2)
    assert read_scan(folder, "1.2.3.200").shape == thick.shape
    with pytest.raises(SeriesNotFoundError) as err:
        read_scan(folder, "1.2.3.999")
    assert "1.2.3.100" in str(err.value) and "'thick'" in str(err.value) and str(folder) in str(err.value)


def test_missing_slice_raises_or_resamples(tmp_path, caplog):
    raw = random_raw((8, 6, 7), seed=6)
    positions = [0, 2, 4, 6, 10, 12, 14, 16]  # the slice at 8 mm is missing
    write_series(tmp_path / "gap", raw, positions=positions, slice_spacing=2.0)
    with pytest.raises(GeometryError) as err:
        read_scan(tmp_path / "gap")
    text = str(err.value)
    assert "gap of 4.000 mm between slices 3 and 4" in text and "allow_irregular=True" in text
    assert str(tmp_path / "gap") in text and "series " in text
    with caplog.at_level(logging.WARNING, logger="medtl.io"):
        scan = read_scan(tmp_path / "gap", allow_irregular=True)
    assert "resampling" in caplog.text
    assert scan.shape == (1, 7, 6, 9)
    img, ref = sitk_read(tmp_path / "gap")  # SimpleITK stacks the 8 slices as if evenly spaced
    inv = np.linalg.inv(np.asarray(scan.affine))
    for k in range(ref.shape[2]):
        # the physical position of each real slice (from its file), found in medtl's regular grid
        world = np.asarray(scan.affine)[:3, 3] + np.array([0, 0, positions[k]])
        kk = (inv @ np.array([*world, 1.0]))[2]
        assert abs(kk - round(kk)) < 1e-6
        np.testing.assert_allclose(scan[0, :, :, round(kk)].numpy(), ref[:, :, k], atol=1e-4)
    np.testing.assert_allclose(scan[0, :, :, 4].numpy(), (ref[:, :, 3] + ref[:, :, 4]) / 2, atol=1e-3)
    np.testing.assert_allclose(scan.meta["spacing"], (0.7, 0.8, 2.0), rtol=1e-6)


def test_duplicated_slice_raises_or_is_dropped(tmp_path):
    raw = random_raw((6, 5, 6), seed=7)
    folder = tmp_path / "dup"
    paths = write_series(folder, raw)
    copy = folder / "copy_of_one_slice"
    shutil.copy(paths[2], copy)
    with pytest.raises(GeometryError) as err:
        read_scan(folder)
    assert "same position" in str(err.value) and "copy_of_one_slice" in str(err.value)
    scan = read_scan(folder, allow_irregular=True)
    copy.unlink()
    img, ref = sitk_read(folder)
    assert_same_as_sitk(scan, img, ref)


def test_uneven_spacing_is_an_error(tmp_path):
    raw = random_raw((5, 4, 4), seed=8)
    write_series(tmp_path / "u", raw, positions=[0, 2, 4, 6.7, 8.7])
    with pytest.raises(GeometryError, match="spacing of 2.700 mm"):
        read_scan(tmp_path / "u")


def test_mixed_orientations_in_one_series_are_an_error(tmp_path):
    folder = tmp_path / "mixed"
    write_series(folder, random_raw((3, 4, 4)), series_uid="1.2.3.4", seed=1)
    write_series(folder, random_raw((3, 4, 4)), series_uid="1.2.3.4", iop=oblique_iop(30, 0), seed=2)
    with pytest.raises(GeometryError, match="mixes orientations"):
        read_scan(folder)


def test_nested_folders_and_dcm_suffix(tmp_path):
    raw = random_raw((5, 6, 7), seed=9)
    paths = write_series(tmp_path / "flat", raw, names="dcm")
    nested = tmp_path / "tree"
    for i, p in enumerate(paths):
        target = nested / f"d{i % 2}" / f"x{i}" / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    (nested / "notes.txt").write_text("not an image")
    a, b = read_scan(tmp_path / "flat"), read_scan(nested)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine))


def test_single_file_of_a_series_is_2d(tmp_path):
    raw = random_raw((3, 6, 8), seed=10)
    paths = write_series(tmp_path / "s", raw)
    scan = read_scan(paths[0])
    assert scan.shape[0] == 1 and scan.ndim == 3 and scan.shape[1:] == (8, 6)
    assert scan.meta["spacing"] == (0.7, 0.8)


def test_gantry_tilt_keeps_every_slice_at_its_position(tmp_path):
    # slices shifted along y as they advance along z (a tilted gantry): the affine shears to follow them
    raw = random_raw((5, 6, 6), seed=12)
    folder = tmp_path / "tilt"
    paths = write_series(folder, raw, slice_spacing=2.0)
    import pydicom

    for p in paths:
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * (z - 30.0), z]
        ds.save_as(p)
    scan = read_scan(folder)
    affine = np.asarray(scan.affine)
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient]) * [-1, -1, 1]
        k = round((float(ds.ImagePositionPatient[2]) - 30.0) / 2.0)
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*ipp, 1], atol=1e-4)


def test_position_rounding_jitter_is_tolerated(tmp_path):
    raw = random_raw((6, 4, 4), seed=13)
    write_series(tmp_path / "j", raw, positions=[0.0, 1.25, 2.49, 3.75, 5.01, 6.25])
    assert read_scan(tmp_path / "j").meta["spacing"][2] == pytest.approx(1.25, abs=1e-3)


def test_truncated_slice_in_a_series_is_named(tmp_path):
    from medtl.errors import TruncatedFileError

    paths = write_series(tmp_path / "t", random_raw((4, 16, 16), seed=14))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-100])
    with pytest.raises(TruncatedFileError) as err:
        read_scan(tmp_path / "t")
    assert str(paths[1]) in str(err.value) and "truncated" in str(err.value)


def test_real_ct5n_series_matches_sitk():
    from pathlib import Path

    from pydicom.data import get_testdata_file

    folder = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    scan = read_scan(folder)
    img, ref = sitk_read(folder)
    assert_same_as_sitk(scan, img, ref, indices=[(0, 0, 0), (15, 0, 0), (0, 15, 4), (7, 9, 2)])


def test_thread_count_does_not_change_the_result(tmp_path, monkeypatch):
    write_series(tmp_path / "w", random_raw((24, 10, 12), seed=15), slope=[1.0 + k / 10 for k in range(24)])
    monkeypatch.setenv("MEDTL_IO_WORKERS", "1")
    one = read_scan(tmp_path / "w")
    monkeypatch.setenv("MEDTL_IO_WORKERS", "4")
    four = read_scan(tmp_path / "w")
    np.testing.assert_array_equal(one.numpy(), four.numpy())
    np.testing.assert_array_equal(np.asarray(one.affine), np.asarray(four.affine))


@pytest.mark.slow
def test_larger_oblique_series_matches_sitk(tmp_path):
    raw = random_raw((64, 256, 256), seed=16, low=-1000, high=3000)
    write_series(tmp_path / "big", raw, iop=oblique_iop(5, 35), slice_spacing=1.25, pixel_spacing=(0.6, 0.6))
    scan = read_scan(tmp_path / "big")
    img, ref = sitk_read(tmp_path / "big")
    assert_same_as_sitk(scan, img, ref, indices=[(0, 0, 0), (255, 0, 0), (0, 255, 63), (128, 77, 31), (255, 255, 63)])
