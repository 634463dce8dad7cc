"""The model-randomisation sanity check of saliency maps (Adebayo et al., "Sanity checks for saliency maps", NeurIPS
2018): a model trained to find a bright disc gives Grad-CAM maps that peak on the disc, and the same network with its
weights re-randomised gives maps that have nothing to do with them. A map that survived the randomisation would
show the input (an edge detector), not what the model learnt.

The radiographs (``helpers.tasks.make_xray_task``, 32 px) are scaled by a fixed intensity range: with the default
percentile scaling, a disc darkens the whole background after scaling, so a model can tell the classes from the
background alone and its maps need not point at the disc. The network sees them at 128 px so that ResNet-18's last
stage (stride 32) is a 4 x 4 grid.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers.tasks import base_config, make_xray_task
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr

from medtl.train import fine_tune, predict
from medtl.train.predict import load_run
from medtl.train.saliency import write_saliency

SIZE, N_PATIENTS = 32, 24


def _discs() -> dict[int, np.ndarray]:
    """Where make_xray_task put each positive's disc: its random draws, replayed (rows, columns)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    discs = {}
    for i in range(N_PATIENTS):
        rng.normal(1000, 150, (SIZE, SIZE))
        if i % 2:
            cy, cx = rng.integers(SIZE // 4, 3 * SIZE // 4, 2)
            discs[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= (SIZE // 5) ** 2
    return discs


def _map(path: str) -> np.ndarray:
    """A 2D map's NIfTI (columns, rows, 1) as displayed (rows, columns)."""
    return np.asarray(nib.load(path).dataobj)[:, :, 0].T


@pytest.mark.slow  # trains 6 epochs at 128 px and draws 24 maps (1 to 2 minutes on two cores)
def test_maps_find_the_disc_and_do_not_survive_randomising_the_weights(tmp_path: Path) -> None:
    manifest = make_xray_task(tmp_path / "data", n_patients=N_PATIENTS, size=SIZE, seed=0)
    discs = _discs()
    for i, disc in discs.items():  # the replayed discs are the ones written
        pixels = pydicom.dcmread(tmp_path / "data" / f"img_{i:03d}.dcm").pixel_array.astype(float)
        assert pixels[disc].mean() > pixels[~disc].mean() + 1000
    cfg = base_config(
        manifest,
        tmp_path / "runs",
        preprocess={"size": [128, 128], "intensity": "range", "intensity_range": [0, 4095]},
        train={"epochs": 6, "batch_size": 4, "lr": 1e-3, "precise_bn_batches": 3},
        output={"name": "disc"},
    )
    run_dir = fine_tune(cfg, quiet=True).run_dir
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    positives = tmp_path / "data" / "positives.csv"  # beside the scans its rows name
    with open(positives, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[i] for i in discs)
    trained = predict(run_dir, [positives], out=tmp_path / "pred" / "p.csv", saliency="gradcam")
    assert [r["pred"] for r in trained].count("positive") >= 10  # the model learnt the task

    # the same network with every weight re-randomised (Adebayo's full randomisation), same scans, same class
    loaded = load_run(run_dir, quiet=True)
    randomised = copy.deepcopy(loaded.model)
    torch.manual_seed(1)
    for module in randomised.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    records = [{"image": r["image"]} for r in trained]
    random_maps = write_saliency(
        randomised, loaded.task, loaded.config, loaded.pipeline, records, tmp_path / "random", target="positive"
    )

    peaks, inside, upper, rhos, random_inside = [], [], [], [], []
    for disc, row, other in zip(discs.values(), trained, random_maps, strict=True):
        m, r = _map(row["saliency_file"]), _map(other["saliency_file"])
        assert m.shape == disc.shape and m.max() == pytest.approx(1.0)
        near = binary_dilation(disc, iterations=2)  # the disc and its 2-pixel rim (the map is 4 x 4 underneath)
        peaks.append(bool(near[np.unravel_index(np.argmax(m), m.shape)]))
        inside.append(m[disc].sum() / m.sum() / disc.mean())  # the map's mass in the disc over the disc's area share
        top = m >= 0.5
        upper.append((top & near).sum() / top.sum())
        # a constant map (a ReLU'd CAM that is zero everywhere) ranks nothing: no agreement
        rhos.append(0.0 if r.std() == 0 or m.std() == 0 else float(spearmanr(m.ravel(), r.ravel()).statistic))
        if r.sum() > 0:
            random_inside.append(r[disc].sum() / r.sum() / disc.mean())
    # Grad-CAM at a 4 x 4 grid is blurred over the disc's neighbours, so "most of the mass in the disc" cannot hold;
    # what does: the peak on the disc, about twice the mass a map unrelated to it would put there, and the map's
    # upper half on the disc and its rim (a fifth of the image) twice as often as chance
    assert np.mean(peaks) >= 0.8, peaks
    assert np.mean(inside) >= 1.8, inside
    assert np.mean(upper) >= 0.4, upper
    # randomising the weights destroys the maps: no rank agreement, and no preference for the disc (most such maps
    # are flat: the randomised network's class score has a negative gradient-weighted sum everywhere)
    assert np.median(np.abs(rhos)) < 0.3, rhos
    assert not random_inside or np.mean(random_inside) < 1.5, random_inside
