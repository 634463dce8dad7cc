"""Hostile ``local:`` encoders: bytes changed after registration, and records that are not what medtl pretrain wrote.

A changed encoder must be refused when it is loaded (as ``medtl weights verify`` calls it a mismatch), never trained
on as "unverified"; a broken ``source.json`` is one line naming the file and the field, and shows as one broken row
in ``medtl weights list`` / ``verify`` while every other source is still listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import medtl
from medtl.cli import main
from medtl.errors import HashMismatchError, WeightsError
from medtl.pretraining.run import encoder_state
from medtl.weights.local import ENCODER_FILE, RECORD_FILE, register_local_source

RECORD = {
    "method": "simclr",
    "method_label": "SimCLR",
    "arch": "resnet18",
    "spatial_dims": 2,
    "in_channels": 1,
    "normalization": {"kind": "none", "mean": None, "std": None},
    "input_size": [32, 32],
    "epochs": 2,
    "started_from": "scratch",
    "data": {"manifest_sha256": "0" * 64, "n_scans": 19, "n_patients": 19},
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "medtl-home"
    monkeypatch.setenv("MEDTL_HOME", str(path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return path


def _register(tmp_path: Path, name: str, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random headless resnet18 (1 channel) registered as ``local:<name>``; returns its folder and tensors."""
    torch.manual_seed(seed)
    state = encoder_state(medtl.create_model("resnet18", in_channels=1, num_classes=0))
    file = tmp_path / f"{name}.safetensors"
    save_file(state, str(file))
    return register_local_source(name, file, RECORD), state


def test_an_encoder_changed_after_registration_is_refused_when_loaded(home: Path, tmp_path: Path) -> None:
    folder, state = _register(tmp_path, "enc")
    model = medtl.create_model("resnet18", weights="local:enc", num_classes=2)
    report = model.load_report
    assert report.verified and "recorded when local:enc was registered" in report.verification
    assert "unverified" not in report.summary()

    # another valid safetensors file of the same shapes in its place: loadable, but not the pretrained encoder
    encoder = folder / ENCODER_FILE
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(encoder))
    with pytest.raises(HashMismatchError) as caught:
        medtl.create_model("resnet18", weights="local:enc", num_classes=2)
    text = str(caught.value)
    assert "\n" not in text
    assert str(encoder) in text and str(folder / RECORD_FILE) in text
    assert "re-run the pretraining" in text and "copy the registered file back" in text

    # weights verify agrees with the loader
    assert main(["weights", "verify"]) == 1


BROKEN = {
    "arch missing": ({k: v for k, v in RECORD.items() if k != "arch"}, "has no field 'arch'"),
    "input_size a number": (RECORD | {"input_size": 5}, "field 'input_size' is 5, expected a list of 2 positive"),
    "normalization a string": (RECORD | {"normalization": "imagenet"}, "field 'normalization' is 'imagenet'"),
    "a JSON list": ([RECORD], "holds a JSON list, not an object"),
    "imagenet without mean": (RECORD | {"normalization": {"kind": "imagenet"}}, "no field 'normalization.mean'"),
    "spatial_dims 4": (RECORD | {"spatial_dims": 4}, "field 'spatial_dims' is 4, expected 2 or 3"),
    "hash missing": (RECORD, "has no field 'encoder_sha256'"),
    "not JSON": ("{arch: resnet18", "is not readable JSON"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_record_is_one_line_and_one_broken_row(
    case: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(tmp_path, "good")
    bad_folder, _ = _register(tmp_path, "bad", seed=1)
    record_path = bad_folder / RECORD_FILE
    content, expected = BROKEN[case]
    if case != "hash missing":  # keep the hash register_local_source wrote, unless that is the case
        sha = json.loads(record_path.read_text())["encoder_sha256"]
        content = _with_hash(content, sha)
    record_path.write_text(content if isinstance(content, str) else json.dumps(content))

    with pytest.raises(WeightsError) as caught:
        medtl.create_model("resnet18", weights="local:bad", num_classes=2)
    text = str(caught.value)
    assert "\n" not in text and str(record_path) in text and expected in text, text
    assert "re-run the pretraining" in text
    assert medtl.create_model("resnet18", weights="local:good", num_classes=2).load_report.verified

    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "local:good" in {s["name"] for s in listing["sources"]} and "imagenet" in {
        s["name"] for s in listing["sources"]
    }
    assert [b["source"] for b in listing["broken"]] == ["local:bad"] and expected in listing["broken"][0]["error"]
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "local:bad" in out and "broken" in out and "local:good:resnet18" in out and "imagenet:resnet18" in out

    assert main(["weights", "verify", "--json"]) == 1
    rows = {r["source"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["local:good"]["status"] == "ok" and rows["local:bad"]["status"] == "broken"
    assert expected in rows["local:bad"]["detail"]
    assert main(["weights", "verify"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("broken") and "local:bad" in line for line in lines)
    assert any(line.startswith("ok") and "local:good:resnet18" in line for line in lines)


def _with_hash(content: Any, sha: str) -> Any:
    if isinstance(content, dict):
        return content | {"encoder_sha256": sha}
    if isinstance(content, list):
        return [_with_hash(c, sha) for c in content]
    return content


def test_a_broken_record_still_holds_its_name(home: Path, tmp_path: Path) -> None:
    """A new pretraining under the name of a broken record is refused before training, as for a valid one."""
    from medtl.errors import ConfigError
    from medtl.pretraining.config import load_pretrain_config
    from medtl.pretraining.run import _check_name_free

    folder, _ = _register(tmp_path, "taken")
    (folder / RECORD_FILE).write_text("[]")
    cfg = load_pretrain_config({"data": {"folder": str(tmp_path)}, "model": {"arch": "resnet18"}})
    with pytest.raises(ConfigError, match="local:taken already exist"):
        _check_name_free(cfg, "taken")
