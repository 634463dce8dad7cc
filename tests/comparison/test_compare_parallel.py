"""compare fanned out: --parallel workers and a submitit executor give the sequential run's results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.compare import write_manifest

from medtl.comparison.compare import compare
from medtl.errors import TrainingError

_CONFIG = (
    "data: {manifest: data/manifest.csv, mode: 2d}\n"
    "splits: {val_fraction: 0.25, test_fraction: 0.35}\n"
    "preprocess: {size: [16, 16]}\n"
    "augment: {enabled: false}\n"
    "model: {arch: resnet18}\n"
    # one thread each, so sequential and parallel runs do the same arithmetic
    "train: {epochs: 1, batch_size: 8, accelerator: cpu, threads: 1, precise_bn_batches: 2, loggers: [csv]}\n"
    "compare:\n"
    "  arms:\n"
    "    - {name: finetuned, model: {weights: scratch}, schedule: fine_tune}\n"
    "    - {name: scratch, model: {weights: scratch}}\n"
    "  seeds: 1\n"
    "  fractions: [1.0]\n"
    "  n_resamples: 100\n"
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cmp")
    write_manifest(root / "data", n_patients=16, size=16)
    path = root / "compare.yaml"
    path.write_text(_CONFIG)
    return path


def _metrics(out: Path) -> dict[tuple[str, int, float], dict[str, float]]:
    data = json.loads((out / "results.json").read_text())
    assert all(r["status"] == "ok" for r in data["runs"]), [r["error"] for r in data["runs"]]
    return {(r["arm"], r["seed"], r["fraction"]): r["test_metrics"] for r in data["runs"]}


@pytest.mark.slow  # 35 s: six runs three ways; the folder lock and reuse are tested by default in tests/hostile
def test_parallel_workers_and_submitit_give_the_sequential_results(config: Path, tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    compare(config, out_dir=tmp_path / "seq")
    compare(config, out_dir=tmp_path / "par", parallel=2)
    executor = submitit.LocalExecutor(folder=str(tmp_path / "jobs"))
    executor.update_parameters(timeout_min=10)
    compare(config, out_dir=tmp_path / "slurm", launcher=executor)
    want = _metrics(tmp_path / "seq")
    assert len(want) == 2
    assert _metrics(tmp_path / "par") == want
    assert _metrics(tmp_path / "slurm") == want
    # resubmitting reuses the finished runs
    events: list[str] = []
    compare(config, out_dir=tmp_path / "slurm", launcher=executor, on_event=events.append)
    assert sum("finished earlier" in e for e in events) == 2


def test_an_arm_that_cannot_load_its_weights_stops_the_comparison(config: Path, tmp_path: Path) -> None:
    # offline and not cached: every run of the arm would fail the same way; stop at the first, keep the rest
    cfg = config.read_text().replace(
        "{name: finetuned, model: {weights: scratch}", "{name: imagenet, model: {weights: imagenet}"
    )
    path = config.parent / "bad.yaml"
    path.write_text(cfg)
    with pytest.raises(TrainingError, match="arm 'imagenet' cannot train: WeightsNotAvailableError"):
        compare(path, out_dir=tmp_path / "bad")
    assert (tmp_path / "bad" / "report.html").is_file()
