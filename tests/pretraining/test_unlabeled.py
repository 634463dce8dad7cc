"""sample_data/unlabeled.py writes readable 2D and 3D scans with one-column manifests."""

from __future__ import annotations

import csv
from pathlib import Path

from medtl.io import read_scan


def test_pool_has_one_column_manifests_of_readable_scans(pool: dict[str, Path]) -> None:
    for part, dims, n, modality in (("xray", 2, 16, "DX"), ("ct", 3, 8, "")):
        with open(pool[part], newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["image"] and len(rows) == n + 1
        scan = read_scan(pool[part].parent / rows[1][0])
        assert scan.ndim - 1 == dims
        assert scan.meta.get("modality", "") == modality
    ct = read_scan(pool["ct"].parent / "UNL-CT-0001.nii.gz")
    assert float(ct.min()) >= -1024 and float(ct.max()) > 100  # Hounsfield units: air and bone
