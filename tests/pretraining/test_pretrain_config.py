"""The example pretraining configs load, with their paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtl.pretraining import load_pretrain_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("pretrain_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    cfg = load_pretrain_config(path)
    root = path.parent.parent
    data = cfg.data.manifest or cfg.data.folder
    assert data is not None and Path(data).is_absolute() and Path(data).is_relative_to(root / "runs" / "unlabeled")
    assert Path(cfg.output.dir) == root / "runs"
    assert cfg.output.name and cfg.method in ("simclr", "genesis")


def test_there_are_example_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"pretrain_xray_simclr.yaml", "pretrain_ct_genesis.yaml"}


def test_overrides_by_dotted_key() -> None:
    cfg = load_pretrain_config(CONFIGS[0], {"train.epochs": 2, "method": "genesis"})
    assert cfg.train.epochs == 2 and cfg.method == "genesis"
