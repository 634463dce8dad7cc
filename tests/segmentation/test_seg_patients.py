"""Per-patient means of a segmentation task's metrics, beside the per-scan ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtl.errors import ConfigError
from medtl.tasks.segmentation import SegmentationTask, patient_means


def _scores(rows: list[tuple[list[float], list[float], list[float]]]) -> torch.Tensor:
    """Per-scan rows (dice per class, hd95 per class, surface dice per class) as evaluate_batch gives them."""
    return torch.as_tensor(np.array([np.concatenate(r) for r in rows]), dtype=torch.float64)


def test_per_patient_means_weigh_each_patient_once() -> None:
    task = SegmentationTask(["background", "lung", "nodule"])
    # patient 0: three scans, patient 1: one scan; hd95 of one nodule undefined (NaN)
    scores = _scores(
        [
            ([0.9, 0.5], [2.0, 4.0], [0.8, 0.4]),
            ([0.7, 0.3], [4.0, math.nan], [0.6, 0.2]),
            ([0.8, 0.1], [3.0, 6.0], [0.7, 0.0]),
            ([0.2, 1.0], [10.0, 0.0], [0.1, 1.0]),
        ]
    )
    m = task.metrics(scores, torch.tensor([0, 0, 0, 1]))
    # per scan: class means over the 4 scans, then over classes
    assert m["dice_lung"] == pytest.approx(0.65) and m["dice_nodule"] == pytest.approx(0.475)
    assert m["dice"] == pytest.approx((0.65 + 0.475) / 2)
    # per patient: patient 0's lung mean 0.8, patient 1's 0.2 -> 0.5; nodule: 0.3 and 1.0 -> 0.65
    assert m["dice_patient_lung"] == pytest.approx(0.5) and m["dice_patient_nodule"] == pytest.approx(0.65)
    assert m["dice_patient"] == pytest.approx((0.5 + 0.65) / 2)
    # hd95: patient 0's nodule mean leaves the NaN out (5.0), patient 1's is 0.0
    assert m["hd95_patient_nodule"] == pytest.approx(2.5) and m["hd95_patient_lung"] == pytest.approx(6.5)
    assert m["surface_dice_patient"] == pytest.approx(((0.7 + 0.1) / 2 + (0.2 + 1.0) / 2) / 2)
    assert m["n"] == 4 and m["n_patients"] == 2 and m["hd95_undefined"] == 1


def test_one_scan_per_patient_gives_the_per_scan_means_and_unknown_patients_give_none() -> None:
    task = SegmentationTask(["background", "disc"])
    rng = np.random.default_rng(0)
    scores = torch.as_tensor(rng.uniform(size=(7, 3)))
    m = task.metrics(scores, torch.tensor([3, 0, 6, 1, 5, 2, 4]))
    for name in ("dice", "hd95", "surface_dice", "dice_disc"):
        base = name.replace("_disc", "")
        key = f"{base}_patient" + ("_disc" if name.endswith("_disc") else "")
        assert m[key] == pytest.approx(m[name])
    unknown = task.metrics(scores, torch.full((7,), -1))
    assert "dice_patient" not in unknown and "n_patients" not in unknown and unknown["dice"] == m["dice"]


def test_patient_means_of_a_table() -> None:
    table = np.array([[[1.0]], [[0.0]], [[0.5]]])
    means, n = patient_means(table, np.array([0, 0, 1]))
    assert n == 2 and means[0, 0] == pytest.approx(0.5)


def test_evaluate_batch_passes_the_patient_of_each_scan_on() -> None:
    task = SegmentationTask(["background", "disc"], roi_size=[8, 8], spatial_dims=2)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.int64)
    mask[:, :, 2:6, 2:6] = 1

    def perfect(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([1.0 - 2 * mask[: x.shape[0]].float(), 2 * mask[: x.shape[0]].float() - 1.0], 1)

    batch = {
        "image": torch.zeros(2, 1, 8, 8),
        "mask": mask,
        "scan": torch.tensor([4, 7]),
        "patient": torch.tensor([1, 0]),
    }
    scores, patients, scans, _ = task.evaluate_batch(perfect, batch)
    assert patients.tolist() == [1, 0] and scans.tolist() == [4, 7] and scores[:, 0].tolist() == [1.0, 1.0]
    del batch["patient"]
    assert task.evaluate_batch(perfect, batch)[1].tolist() == [-1, -1]


@pytest.mark.parametrize("name", ["patient", "patient_lung"])
def test_a_class_whose_metric_names_read_like_per_patient_ones_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="clash"):
        SegmentationTask(["background", "lung", name])
