"""LoadScan / LoadScand start MONAI pipelines and work in DataLoader worker processes."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from helpers.dicom import random_raw, write_series
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, ScaleIntensityRanged

from medtl.io import LoadScan, LoadScand, read_scan


def test_loadscand_in_a_dataloader_with_workers(tmp_path):
    items = []
    for p in range(4):
        folder = tmp_path / f"p{p}"
        write_series(folder, random_raw((5, 8, 8), seed=p), series_uid=f"1.2.3.{p}.1", description="main", seed=p)
        write_series(folder, random_raw((2, 8, 8), seed=10 + p), series_uid=f"1.2.3.{p}.2", description="scout")
        items.append({"image": str(folder), "series": "main" if p % 2 else "", "label": p % 2})
    pipeline = Compose(
        [
            LoadScand(keys="image"),
            ScaleIntensityRanged(keys="image", a_min=-1000, a_max=2000, b_min=0.0, b_max=1.0, clip=True),
        ]
    )
    pickle.loads(pickle.dumps(pipeline))
    loader = DataLoader(Dataset(items, transform=pipeline), batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (4, 1, 8, 8, 5)
    for p in range(4):
        expected = read_scan(tmp_path / f"p{p}", "main")[0].numpy()
        np.testing.assert_allclose(images[p, 0].numpy(), np.clip((expected + 1000) / 3000, 0, 1), atol=1e-6)
    assert [u for b in batches for u in b["image"].meta["series_uid"]] == [f"1.2.3.{p}.1" for p in range(4)]
    assert torch.equal(torch.cat([b["label"] for b in batches]), torch.tensor([0, 1, 0, 1]))


def test_loadscan_series_argument(tmp_path):
    write_series(tmp_path, random_raw((5, 4, 4)), series_uid="1.2.3.1", description="a")
    write_series(tmp_path, random_raw((2, 4, 4)), series_uid="1.2.3.2", description="b")
    assert LoadScan()(tmp_path).shape[-1] == 5
    assert LoadScan(series="b")(tmp_path).shape[-1] == 2
    assert LoadScand(keys="img", series_key="s")({"img": tmp_path, "s": "1.2.3.2"})["img"].shape[-1] == 2
    assert LoadScand(keys="img", series_key=None)({"img": tmp_path, "s": "b"})["img"].shape[-1] == 5
    assert "img" not in LoadScand(keys="img", allow_missing_keys=True)({"other": 1})


def test_monai_orientation_keeps_world_positions(tmp_path):
    from monai.transforms import Orientationd

    raw = np.zeros((6, 8, 10), np.int16)
    raw[4, 2, 7] = 3000  # slice 4, row 2, column 7
    write_series(tmp_path, raw, iop=(1, 0, 0, 0, 0, -1), slice_spacing=2.0)  # coronal
    before = LoadScand(keys="img")({"img": tmp_path})["img"]
    after = Orientationd(keys="img", axcodes="RAS", labels=None)({"img": before})["img"]

    def bright_world(img):
        idx = np.argwhere(img[0].numpy() == img[0].numpy().max())[0]
        return (np.asarray(img.affine) @ [*idx, 1])[:3]

    assert tuple(np.argwhere(before[0].numpy() > 0)[0]) == (7, 2, 4)
    np.testing.assert_allclose(bright_world(before), bright_world(after), atol=1e-6)
    assert np.all(np.diag(np.asarray(after.affine))[:3] > 0)
