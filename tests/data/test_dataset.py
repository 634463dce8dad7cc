"""2.5D slices: rows first, as a radiologist displays an axial slice of a RAS volume."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from medtl.data.dataset import SampleDataset


def test_axial_slice_of_a_ras_volume_is_displayed_anterior_up_patient_right_left() -> None:
    # RAS volume (C, x, y, z): x grows toward the patient's right, y toward anterior
    vol = torch.zeros(1, 4, 5, 3)
    vol[0, :, 4, 1] = 1.0  # the most anterior row of slice 1
    vol[0, 3, :, 1] += 2.0  # the right-most column of slice 1 (largest x = most to the patient's right)
    ds = SimpleNamespace(neighbor_slices=False, display_layout=True)
    img = SampleDataset._slice(ds, vol, 1)
    assert tuple(img.shape) == (1, 5, 4)  # (channel, rows = y, columns = x)
    assert bool((img[0, 0] >= 1).all())  # anterior at the top
    assert bool((img[0, :, 0] >= 2).all())  # the patient's right on the viewer's left
    ds3 = SimpleNamespace(neighbor_slices=True, display_layout=True)
    rgb = SampleDataset._slice(ds3, vol, 1)
    assert tuple(rgb.shape) == (3, 5, 4) and torch.equal(rgb[1], img[0])
