"""``medtl.pretrain``: the loss falls, the encoder is saved, registered as local:<name> and loads fully."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import medtl
from medtl.errors import ConfigError, ManifestError
from medtl.pretraining import list_local_sources, local_weight_source, pretrain, resolve_local_source

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _config(pool: dict[str, Path], tmp_path: Path, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"manifest": str(pool["xray"])},
        "preprocess": {"size": [32, 32]},
        "model": {"arch": "resnet18"},
        # mild views: 16 near-identical phantoms must stay tellable apart for the loss to fall within a few steps
        "views": {
            "crop_scale": [0.95, 1.0],
            "flip_prob": 0,
            "affine_prob": 0,
            "intensity_scale": 0,
            "intensity_shift": 0,
            "blur_prob": 0,
            "noise_std": 0.01,
        },
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.001, "warmup_epochs": 0, "cache": "memory"},
        "output": {"dir": str(tmp_path / "runs"), "name": "xr"},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def _check_loads(encoder_file: Path, arch: str, weights: Any, spatial_dims: int, in_channels: int | None = 1) -> None:
    """Every encoder tensor of the file is matched and equal in a new model; only the head stays random."""
    saved = load_file(str(encoder_file))
    model = medtl.create_model(arch, weights=weights, in_channels=in_channels, num_classes=3, spatial_dims=spatial_dims)
    report = model.load_report
    head = model.spec.head_prefixes
    assert set(report.matched) == set(saved)
    assert not report.adapted and not report.unexpected
    assert report.left_random and all(k.startswith(head) for k in report.left_random)
    state = model.net.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


def test_simclr_2d_learns_and_registers_a_local_source(pool: dict[str, Path], tmp_path: Path, home: Path) -> None:
    # a small labelled set for the k-NN probe: 16 of the sample radiographs, both classes
    lines = (SAMPLE / "xray" / "manifest.csv").read_text().splitlines()
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("\n".join(["image,label"] + [f"{SAMPLE / 'xray'}/{line}" for line in lines[1:17]]) + "\n")
    knn = {"manifest": str(labelled), "every": 3, "k": 3}
    result = pretrain(_config(pool, tmp_path, method="simclr", knn=knn), quiet=True)

    losses = [row["train_loss"] for row in result.metrics]
    assert len(losses) == 6
    assert max(losses[-2:]) < 0.75 * losses[0], losses
    # the k-NN probe ran at epochs 3 and 6 only, and scored something
    scored = [row["epoch"] for row in result.metrics if row["knn_accuracy"] == row["knn_accuracy"]]
    assert scored == [3, 6]
    assert 0.0 <= result.metrics[-1]["knn_accuracy"] <= 1.0
    before = json.loads((result.run_dir / "result.json").read_text())["knn_before"]
    assert 0.0 <= before["knn_accuracy"] <= 1.0 and set(before) == {"knn_accuracy", "knn_balanced_accuracy"}

    run = result.run_dir
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.csv", "result.json", "encoder.safetensors"}
    assert len((run / "metrics.csv").read_text().splitlines()) == 7
    res = json.loads((run / "result.json").read_text())
    assert res["status"] == "ok" and res["weights"] == "local:xr" and res["epochs_run"] == 6

    # the record: what a weight source needs, and no patient identifier
    file, record = resolve_local_source("local:xr", verify=True)
    assert file.read_bytes() == (run / "encoder.safetensors").read_bytes()
    assert file.parent == home / "weights" / "local" / "xr"
    assert record["method"] == "simclr" and record["arch"] == "resnet18" and record["epochs"] == 6
    assert record["spatial_dims"] == 2 and record["in_channels"] == 1
    assert record["normalization"]["kind"] == "none"
    data = record["data"]
    assert data["n_scans"] == 16 and data["n_patients"] == 16
    import hashlib

    assert data["manifest_sha256"] == hashlib.sha256(pool["xray"].read_bytes()).hexdigest()
    assert "UNL-XR" not in json.dumps(record)  # PatientIDs of the pool
    assert list_local_sources() == ["local:xr"]

    source = local_weight_source("xr")
    assert source.name == "local:xr" and source.dims == 2 and source.in_channels == 1
    assert source.archs == ("resnet18",) and source.path == str(file)
    assert "16 unlabeled scans" in source.description and "SimCLR" in source.description
    assert source.files[0].sha256 == record["encoder_sha256"]

    _check_loads(file, "resnet18", str(file), 2)  # a file path is a weight source already
    _check_loads(file, "resnet18", source, 2, in_channels=None)  # local:xr's record says 1 channel

    # the name is taken: refused before any training
    with pytest.raises(ConfigError, match="local:xr already exist"):
        pretrain(_config(pool, tmp_path, output={"name": "xr", "dir": str(tmp_path / "other")}), quiet=True)


@pytest.mark.slow  # 3D pretraining; 2D SimCLR is tested end to end by default
def test_genesis_3d_learns_and_saves_a_loadable_encoder(pool: dict[str, Path], tmp_path: Path, home: Path) -> None:
    cfg = _config(
        pool,
        tmp_path,
        data={"manifest": str(pool["ct"]), "modality": "CT"},
        preprocess={"size": [16, 16, 16], "ct_window": [-1000, 400]},
        model={"arch": "resnet10_3d"},
        method="genesis",
        genesis={"decoder_width": 8},
        train={"epochs": 4, "batch_size": 4},
        output={"name": "ct-genesis", "register_weights": False},
    )
    result = pretrain(cfg, quiet=True)
    losses = [row["train_loss"] for row in result.metrics]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.weights == str(result.encoder_file.resolve())
    assert list_local_sources() == []
    assert json.loads((result.run_dir / "source.json").read_text())["spatial_dims"] == 3
    _check_loads(result.encoder_file, "resnet10_3d", str(result.encoder_file), 3)


def test_manifest_needs_an_image_column(pool: dict[str, Path], tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nx.dcm\n")
    with pytest.raises(ManifestError, match="no 'image' column"):
        pretrain(_config(pool, tmp_path, data={"manifest": str(bad)}), quiet=True)
    missing = tmp_path / "missing.csv"
    missing.write_text("image\nnope.dcm\n\n")
    with pytest.raises(ManifestError, match="row 2: .*nope.dcm does not exist"):
        pretrain(_config(pool, tmp_path, data={"manifest": str(missing)}), quiet=True)


def test_config_errors_name_the_field(pool: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.epoch: unknown field.*did you mean 'epochs'"):
        pretrain(_config(pool, tmp_path, train={"epoch": 3}), quiet=True)
    with pytest.raises(ConfigError, match="exactly one of data.manifest"):
        pretrain(_config(pool, tmp_path, data={"folder": str(pool["root"])}), quiet=True)
    with pytest.raises(ConfigError, match="method: 'byol' is not allowed"):
        pretrain(_config(pool, tmp_path, method="byol"), quiet=True)


def test_a_folder_is_indexed_like_medtl_index(pool: dict[str, Path]) -> None:
    from medtl.pretraining import load_pretrain_config
    from medtl.pretraining.data import read_pool

    folder = pool["xray"].parent
    cfg = load_pretrain_config({"data": {"folder": str(folder)}, "model": {"arch": "resnet18"}})
    found = read_pool(cfg)
    assert len(found.records) == 16 and found.n_patients == 16
    assert all(Path(r["image"]).parent == folder for r in found.records)
    index = found.index_csv.decode().splitlines()
    assert index[0] == "image,series" and len(index) == 17 and index[1].startswith("UNL-XR-")
    import hashlib

    assert found.manifest_sha256 == hashlib.sha256(found.index_csv).hexdigest()


def test_unknown_local_name_lists_the_registered_ones(home: Path) -> None:
    from medtl.errors import UnknownOptionError

    with pytest.raises(UnknownOptionError, match=r"no pretrained encoder local:nope .*registered: none"):
        local_weight_source("local:nope")
