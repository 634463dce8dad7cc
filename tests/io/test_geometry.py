"""Spacing checks, affines and orientation labels."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.io.geometry import LPS_TO_RAS, affine_lps, check_spacing, orientation_label, resample_slices

Z = np.array([0.0, 0.0, 1.0])


def _ipps(distances):
    return np.array([[1.0, 2.0, d] for d in distances])


def test_regular_stack_in_any_order():
    report = check_spacing(_ipps([4.0, 0.0, 2.0, 6.0]), Z)
    assert report.regular and report.order == [1, 2, 0, 3] and report.spacing == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("distances", "kind", "pair"),
    [
        ([0, 2, 4, 4, 6], "duplicates", (2, 3)),
        ([0, 2, 4, 8, 10, 12], "gaps", (2, 3)),
        ([0, 2, 4, 6.5, 8.5], "uneven", (2, 3)),
    ],
)
def test_problems_are_found_and_named(distances, kind, pair):
    report = check_spacing(_ipps(distances), Z)
    assert not report.regular
    found = getattr(report, kind)
    assert found and tuple(found[0][:2]) == pair
    text = report.describe([f"f{i}" for i in range(len(distances))])[0]
    assert f"f{pair[0]}" in text and f"f{pair[1]}" in text


def test_many_gaps_still_find_the_true_step():
    report = check_spacing(_ipps([0, 1, 3, 5, 7, 9]), Z)  # median step 2, true step 1: every later slice has a gap
    assert report.spacing == pytest.approx(1.0) and len(report.gaps) == 4


def test_affine_columns_follow_dicom_conventions():
    iop = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: rows along +y (P), columns along -z (I)
    a = affine_lps(iop, (10.0, 20.0, 30.0), (0.5, 0.25), (2.0, 0.0, 0.0))
    # i (columns) steps by PixelSpacing[1] along the row cosines; j by PixelSpacing[0] along the column cosines
    np.testing.assert_allclose(a @ [1, 0, 0, 1], [10.0, 20.25, 30.0, 1])
    np.testing.assert_allclose(a @ [0, 1, 0, 1], [10.0, 20.0, 29.5, 1])
    np.testing.assert_allclose(a @ [0, 0, 1, 1], [12.0, 20.0, 30.0, 1])
    assert orientation_label(LPS_TO_RAS @ a) == "sagittal (PIL)"


def test_orientation_labels():
    assert orientation_label(LPS_TO_RAS @ np.eye(4)) == "axial (LPS)"
    assert orientation_label(np.eye(4)) == "axial (RAS)"
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    assert orientation_label(rot).startswith("oblique axial")


def test_resample_slices_interpolates_linearly():
    stack = np.stack([np.full((2, 2), v, np.float32) for v in (0.0, 10.0, 30.0)])
    out, targets = resample_slices(stack, np.array([0.0, 1.0, 3.0]), 1.0)
    np.testing.assert_allclose(targets, [0, 1, 2, 3])
    np.testing.assert_allclose(out[:, 0, 0], [0, 10, 20, 30])
