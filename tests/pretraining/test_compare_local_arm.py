"""From unlabeled scans to a comparison: pretrain a tiny encoder, then compare ``local:<name>`` with scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from medtl.comparison.compare import compare, run_dir_for
from medtl.pretraining import list_local_sources, pretrain

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.mark.slow  # ~40 s on 2 busy cores: a pretraining and two training runs
def test_a_local_encoder_is_an_arm_of_compare(pool: dict[str, Path], tmp_path: Path, home: Path) -> None:
    pre = pretrain(
        {
            "data": {"manifest": str(pool["xray"])},
            "preprocess": {"size": [32, 32]},
            "model": {"arch": "resnet18"},
            "train": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0, "cache": "memory", "limit_train_batches": 1},
            "output": {"dir": str(tmp_path / "pretrain"), "name": "xr-tiny"},
        },
        quiet=True,
    )
    assert pre.weights == "local:xr-tiny" and list_local_sources() == ["local:xr-tiny"]
    n_scans = pre.record["data"]["n_scans"]
    assert n_scans == 16

    out = tmp_path / "cmp"
    report = compare(
        {
            "data": {"manifest": str(SAMPLE / "xray" / "manifest.csv")},
            "preprocess": {"size": [32, 32]},
            "model": {"arch": "resnet18"},
            "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "threads": 2},
            "augment": {"enabled": False},
            "output": {"dir": str(tmp_path / "runs")},
            "compare": {
                "arms": [{"name": "mine", "model": {"weights": "local:xr-tiny"}}, {"name": "scratch"}],
                "seeds": 1,
                "fractions": [1.0],
                "n_resamples": 200,
            },
        },
        out_dir=out,
    )
    runs = {r.arm: r for r in report.results.runs}
    assert set(runs) == {"mine", "scratch"} and all(r.ok for r in runs.values()), [r.error for r in runs.values()]

    # every tensor of the pretrained encoder was loaded, unchanged in shape; only the new head is random
    load = json.loads((run_dir_for(out, "mine", 0, 1.0) / "load_report.json").read_text())
    encoder = load_file(str(pre.encoder_file))
    assert set(load["matched"]) == set(encoder)
    assert not load["adapted"] and not load["unexpected"]
    assert load["left_random"] and all(k.startswith("fc.") for k in load["left_random"])
    assert load["source"] == "local:xr-tiny"
    scratch = json.loads((run_dir_for(out, "scratch", 0, 1.0) / "load_report.json").read_text())
    assert not scratch["matched"]

    origin = f"pretrained here on {n_scans} unlabeled scans (16 patients) with SimCLR for 1 epoch"
    for name in ("report.md", "report.html"):
        assert origin in (out / name).read_text(), name
