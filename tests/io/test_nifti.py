"""NIfTI reading (scaling, byte order, gzip members) and writing."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from medtl.io import read_scan
from medtl.io.nifti import read_nifti, write_nifti


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_scaled_and_big_endian_data(tmp_path, suffix):
    data = np.random.default_rng(0).integers(-300, 300, size=(6, 5, 4)).astype(">i2")
    img = nib.Nifti1Image(data, np.diag([0.5, 0.6, 0.7, 1.0]))
    img.header.set_slope_inter(2.0, 10.0)
    path = tmp_path / f"scaled{suffix}"
    nib.save(img, path)
    scan = read_scan(path)
    expected = nib.load(path).get_fdata()
    np.testing.assert_allclose(scan[0].numpy(), expected, rtol=1e-6)
    assert scan.meta["spacing"] == pytest.approx((0.5, 0.6, 0.7))
    assert scan.meta["units"] == "" and scan.meta["modality"] == ""


def test_multi_member_gzip(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    path = tmp_path / "two_members.nii.gz"
    path.write_bytes(gzip.compress(raw[:200]) + gzip.compress(raw[200:]))
    np.testing.assert_array_equal(read_nifti(path).array[0], data)


def test_write_keeps_affine_and_channels(tmp_path):
    affine = np.array([[0, -1.5, 0, 10], [2, 0, 0, -4], [0, 0, 3, 1], [0, 0, 0, 1]], dtype=float)
    arr = np.random.default_rng(1).normal(size=(3, 4, 5, 6)).astype(np.float32)
    out = write_nifti(arr, affine, tmp_path / "c.nii.gz")
    img = nib.load(out)
    assert img.shape == (4, 5, 6, 3) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, affine)
    back = read_scan(out)
    np.testing.assert_allclose(back.numpy(), arr, rtol=1e-6)
    np.testing.assert_allclose(read_scan(out, volume=2)[0].numpy(), arr[2], rtol=1e-6)
