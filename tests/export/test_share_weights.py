"""``medtl weights export local:NAME DIR`` writes a Hugging Face hub-ready folder; ``weights import DIR`` and ``weights
pull hf:ORG/NAME`` read it back as a ``local:`` source that loads the same tensors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import medtl
from medtl.errors import HashMismatchError, WeightsError, WeightsNotAvailableError
from medtl.weights.local import list_local_sources, local_weights_dir, register_local_source, resolve_local_source
from medtl.weights.share import COMMON_LICENSES, export_shared, import_shared, pull_shared

#: strings of a site that must never leave it: a path, a series description, patient identifiers and pseudonyms
SECRETS = ("/srv/site-data", "SMITH^JOHN", "SYN-CT-007", "0f3e9a1b2c4d5e6f", "CHEST PA STANDING")


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A random headless resnet18 registered as local:enc, with a record as medtl pretrain writes it plus fields a
    site could hold (paths, a series description, patient identifiers) that must not be shared."""
    from medtl.pretraining.run import encoder_state

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    state = encoder_state(medtl.create_model("resnet18", in_channels=1, num_classes=0))
    save_file(state, str(tmp_path / "enc.safetensors"))
    record = {
        "method": "simclr",
        "method_label": "SimCLR",
        "arch": "resnet18",
        "spatial_dims": 2,
        "in_channels": 1,
        "normalization": {"kind": "none", "mean": None, "std": None},
        "preprocessing": {
            "modality": "XR",
            "mode": "2d",
            "size": [32, 32],
            "intensity": "percentiles [0.5, 99.5] -> [0, 1]",
            "series_description": "CHEST PA STANDING",
            "source_folder": "/srv/site-data/xray",
        },
        "input_size": [32, 32],
        "epochs": 3,
        "started_from": "/srv/site-data/checkpoints/SYN-CT-007.pth",
        "data": {
            "manifest_sha256": "a" * 64,
            "n_scans": 16,
            "n_patients": 15,
            "modality": "XR",
            "manifest": "/srv/site-data/manifest.csv",
            "patients": ["SYN-CT-007", "0f3e9a1b2c4d5e6f"],
        },
        "patient_name": "SMITH^JOHN",
        "citation": "Chen et al., ICML 2020",
        "created": "2026-12-07T10:00:00Z",
        "medtl_version": medtl.__version__,
    }
    register_local_source("enc", tmp_path / "enc.safetensors", record)
    return state


def _text_of(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def test_export_writes_a_hub_ready_folder_without_identifiers(
    registered: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    out = tmp_path / "shared"
    shared = export_shared("local:enc", out, license="CC-BY-NC-4.0")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert shared.files == [out / "model.safetensors", out / "config.json", out / "README.md"]
    file, record = resolve_local_source("local:enc")
    assert (out / "model.safetensors").read_bytes() == file.read_bytes()
    saved = load_file(str(out / "model.safetensors"))
    assert set(saved) == set(registered) and all(torch.equal(saved[k], v) for k, v in registered.items())

    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "medtl-encoder" and config["library_name"] == "medtl" and config["name"] == "enc"
    assert config["architecture"] == "resnet18" and config["spatial_dims"] == 2 and config["in_channels"] == 1
    assert config["normalization"] == {"kind": "none", "mean": None, "std": None} and config["input_size"] == [32, 32]
    assert config["method"] == "simclr" and config["epochs"] == 3 and config["license"] == "cc-by-nc-4.0"
    assert config["data"] == {"n_scans": 16, "n_patients": 15, "modality": "XR", "manifest_sha256": "a" * 64}
    assert config["model_sha256"] == record["encoder_sha256"] == shared.sha256
    assert config["medtl_version"] == medtl.__version__ and config["started_from"] == "a checkpoint file"
    assert config["preprocessing"] == {
        "modality": "XR",
        "mode": "2d",
        "size": [32, 32],
        "intensity": "percentiles [0.5, 99.5] -> [0, 1]",
    }

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "cc-by-nc-4.0" and front["library_name"] == "medtl"
    assert {"medtl", "simclr", "2d", "xr"} <= set(front["tags"])
    assert "16 unlabeled scans of 15 patients, modality XR" in card and "a" * 64 in card
    assert "SimCLR, 3 epoch(s)" in card and "model.weights: local:enc" in card
    # no identifier, path or series description of the site, in any file
    text = _text_of(out)
    assert not [s for s in SECRETS if s in text]


def test_export_needs_a_licence_and_a_fresh_folder(registered: dict[str, torch.Tensor], tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="needs a licence") as err:
        export_shared("local:enc", tmp_path / "a", license=None)
    assert all(lic in (err.value.fix or "") for lic in COMMON_LICENSES)
    with pytest.raises(WeightsError, match="not a licence identifier"):
        export_shared("local:enc", tmp_path / "a", license="Apache 2.0; see file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(WeightsError, match="not empty"):
        export_shared("local:enc", tmp_path / "full", license="mit")
    with pytest.raises(WeightsError, match="not a weight name"):
        export_shared("local:enc", tmp_path / "b", license="mit", name="../up")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_import_on_a_clean_home_registers_the_same_encoder(
    registered: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shared"
    export_shared("local:enc", out, license="apache-2.0")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "clean"))
    assert list_local_sources() == []
    got = import_shared(out)
    assert got.source == "local:enc" and not got.already and list_local_sources() == ["local:enc"]
    file, record = resolve_local_source("local:enc", verify=True)
    assert file.parent == local_weights_dir() / "enc"
    assert record["arch"] == "resnet18" and record["spatial_dims"] == 2 and record["license"] == "apache-2.0"
    assert record["shared"] == {"from": "folder"} and record["encoder_sha256"] == got.sha256
    model = medtl.create_model("resnet18", weights="local:enc", num_classes=2)
    assert set(model.load_report.matched) == set(registered)
    assert model.load_report.sha256 == got.sha256
    state = model.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in registered.items())
    # the same folder again: nothing to do; under a name that holds other weights: refused
    assert import_shared(out).already
    other = tmp_path / "other"
    shutil.copytree(out, other)
    tensors = load_file(str(other / "model.safetensors"))
    tensors["fc.weight"] = torch.zeros(2, 2)  # a different file, its config updated to match
    save_file(tensors, str(other / "model.safetensors"))
    from medtl.weights.cache import sha256_file

    config = json.loads((other / "config.json").read_text())
    config["model_sha256"] = sha256_file(other / "model.safetensors", use_memo=False)
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="registered already .* hold another encoder"):
        import_shared(other)
    assert import_shared(other, name="enc-2").source == "local:enc-2"


def test_import_refuses_a_changed_file_and_a_bad_config(
    registered: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shared"
    export_shared("local:enc", out, license="mit")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "clean"))
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    data = bytearray((changed / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (changed / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match="records"):
        import_shared(changed)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    config = json.loads((bad / "config.json").read_text())
    config["spatial_dims"] = 4
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"config.json field 'spatial_dims' is 4, expected 2 or 3"):
        import_shared(bad)
    (bad / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(WeightsError, match="not a shared medtl encoder"):
        import_shared(bad)
    with pytest.raises(WeightsError, match="not a folder of shared weights"):
        import_shared(tmp_path / "missing")
    assert list_local_sources() == []


def _fake_hub(monkeypatch: pytest.MonkeyPatch, repos: dict[str, Path], tmp_path: Path) -> list[dict[str, Any]]:
    """``huggingface_hub.snapshot_download`` serving local folders as repositories (the hub is out of reach here):
    it copies the folder into a snapshot named by a commit hash, as the hub's cache does."""
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, revision: str | None = None, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, "revision": revision, **kwargs})
        if repo_id not in repos:
            raise huggingface_hub.errors.LocalEntryNotFoundError(f"{repo_id} is not cached and the hub is offline")
        snapshot = tmp_path / "hub-cache" / repo_id.replace("/", "--") / "snapshots" / ("c0ffee" * 7)[:40]
        if not snapshot.exists():
            shutil.copytree(repos[repo_id], snapshot)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_pull_reads_a_hub_repository_back(
    registered: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shared"
    export_shared("local:enc", out, license="mit", name="xray-simclr")
    calls = _fake_hub(monkeypatch, {"my-lab/xray-simclr": out}, tmp_path)
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "clean"))
    got = pull_shared("hf:my-lab/xray-simclr@v1")
    assert calls[0]["repo_id"] == "my-lab/xray-simclr" and calls[0]["revision"] == "v1"
    assert got.source == "local:xray-simclr" and list_local_sources() == ["local:xray-simclr"]
    _, record = resolve_local_source("local:xray-simclr", verify=True)
    assert record["shared"] == {"from": "hf:my-lab/xray-simclr", "revision": "v1", "commit": ("c0ffee" * 7)[:40]}
    model = medtl.create_model("resnet18", weights="local:xray-simclr", num_classes=2)
    assert set(model.load_report.matched) == set(registered)
    with pytest.raises(WeightsNotAvailableError, match="could not download hf:my-lab/nothing .LocalEntryNotFoundError"):
        pull_shared("hf:my-lab/nothing")
    with pytest.raises(WeightsError, match="not a hub repository reference"):
        pull_shared("hf:no-slash")


def test_the_weights_commands(
    registered: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from medtl.cli import main

    out = tmp_path / "shared"
    assert main(["weights", "export", "local:enc", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a licence" in err[0] and "cc-by-nc-4.0" in err[0]
    assert main(["weights", "export", "local:enc", str(out), "--license", "cc-by-4.0"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'model.safetensors'}" in printed and "hf upload ORG/enc" in printed
    _fake_hub(monkeypatch, {"lab/enc": out}, tmp_path)
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "clean"))
    assert main(["weights", "import", str(out), "--name", "from-folder"]) == 0
    assert "registered as local:from-folder" in capsys.readouterr().out
    assert main(["weights", "pull", "hf:lab/enc@main", "--name", "from-hub"]) == 0
    assert "registered as local:from-hub" in capsys.readouterr().out
    assert list_local_sources() == ["local:from-folder", "local:from-hub"]
    assert main(["weights", "import", str(tmp_path / "nowhere")]) == 2
    assert "not a folder of shared weights" in capsys.readouterr().err


@pytest.mark.slow  # ~1-2 min on 2 shared cores: a pretraining and two fine-tuning runs
def test_pretrain_export_import_fine_tune_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretrain a tiny SimCLR encoder, export it, import it on a clean MEDTL_HOME and fine-tune with it: the load
    report equals the one of fine-tuning with the original local: source (same tensors, same SHA-256)."""
    from helpers.export import ROOT, SAMPLE, sample_subset, tiny_config

    from medtl.pretraining import pretrain
    from medtl.train import fine_tune

    pool = tmp_path / "pool"
    script = ROOT / "sample_data" / "unlabeled.py"
    subprocess.run([sys.executable, str(script), str(pool), "--n2d", "16", "--n3d", "0"], check=True)
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home-a"))
    pre = pretrain(
        {
            "data": {"manifest": str(pool / "xray" / "manifest.csv")},
            "preprocess": {"size": [32, 32]},
            "model": {"arch": "resnet18"},
            "train": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0, "cache": "memory", "limit_train_batches": 1},
            "output": {"dir": str(tmp_path / "pretrain"), "name": "xr-tiny"},
        },
        quiet=True,
    )
    assert pre.weights == "local:xr-tiny"
    shared = export_shared("local:xr-tiny", tmp_path / "shared", license="cc-by-4.0", name="xr-shared")
    # the pool's patients, as written in its DICOM headers and as medtl's pseudonyms, and its paths: none shared
    import pydicom

    from medtl.utils import hash_patient_id

    ids = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in pool.rglob("*.dcm")}
    assert ids
    text = _text_of(tmp_path / "shared")
    assert not [s for s in ids | {hash_patient_id(i) for i in ids} | {str(tmp_path)} if s in text]

    manifest = sample_subset(SAMPLE / "xray" / "manifest.csv", tmp_path / "manifest.csv", 12)
    cfg = tiny_config(manifest, tmp_path / "runs", "original", preprocess={"size": [32, 32]})
    original = fine_tune(cfg | {"model": {"arch": "resnet18", "weights": "local:xr-tiny"}}, quiet=True)

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home-b"))  # a clean home: only the shared folder is there
    assert list_local_sources() == []
    assert import_shared(shared.folder).source == "local:xr-shared"
    cfg = tiny_config(manifest, tmp_path / "runs", "imported", preprocess={"size": [32, 32]})
    imported = fine_tune(cfg | {"model": {"arch": "resnet18", "weights": "local:xr-shared"}}, quiet=True)

    a = json.loads((original.run_dir / "load_report.json").read_text())
    b = json.loads((imported.run_dir / "load_report.json").read_text())
    assert (a["source"], b["source"]) == ("local:xr-tiny", "local:xr-shared")
    assert a["matched"] and a["sha256"] == shared.sha256
    assert a["file"] != b["file"]  # each home's own copy of the same bytes
    named = {"summary", "verification"}  # sentences naming the source
    same = {k: v for k, v in a.items() if k not in named | {"source", "file"}}
    assert same == {k: v for k, v in b.items() if k not in named | {"source", "file"}}
    assert len(same["matched"]) == len(load_file(str(shared.folder / "model.safetensors")))
    for key in named:  # the same sentences once the source's name and its file are left out
        assert a[key].replace(a["file"], "F").replace("local:xr-tiny", "X") == b[key].replace(b["file"], "F").replace(
            "local:xr-shared", "X"
        )
