"""A full disk during training: one line naming the file, no temporary files, result.json "failed" with the
reason, and ``--resume`` afterwards reporting the true reason (or continuing once there is space again).

The disk fills up when the checkpoint of epoch 2 is written: medtl's atomic writer gets half of the file out,
then ``OSError(ENOSPC)``, as a real full disk behaves.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.tasks import base_config, make_xray_task

import medtl.utils
from medtl.cli import main

ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


class _FullDisk:
    """A file whose writes stop half-way with ENOSPC."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def _target(file: Any) -> str:
    """The file the atomic writer is making: ``.last.ckpt.tmp-123`` -> ``last.ckpt``."""
    return Path(file).name.split(".tmp-")[0].removeprefix(".")


class Disk:
    """Stands in for ``open`` in medtl's atomic writer: full from the ``full_from``-th write matching ``which``."""

    def __init__(self, which: str = "last.ckpt", full_from: int = 2) -> None:
        self.which, self.full_from, self.seen, self.refused = which, full_from, 0, []

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = builtins.open(file, mode, *args, **kwargs)
        if "w" in mode and _target(file) == self.which:
            self.seen += 1
            if self.seen >= self.full_from:
                self.refused.append(_target(file))
                return _FullDisk(fh)
        return fh


@pytest.fixture
def run_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    monkeypatch.delenv("MEDTL_RUN_DIR", raising=False)
    task = make_xray_task(tmp_path / "xray", n_patients=16, size=16)
    cfg = base_config(
        task,
        tmp_path / "runs",
        preprocess={"size": [16, 16]},
        train={"epochs": 3, "threads": 1, "limit_train_batches": 1, "loggers": ["csv"]},
    )
    cfg["output"]["name"] = "full"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "runs" / "full"


def _train(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _epochs(run: Path) -> list[str]:
    return [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]


def _leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob("*") if ".tmp-" in p.name)


@pytest.mark.slow  # a full run; the other full-disk cases run by default
def test_a_full_disk_during_an_epoch_fails_the_run_in_one_line_and_resume_says_why(
    run_cfg, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, run = run_cfg
    disk = Disk("last.ckpt", full_from=2)
    monkeypatch.setattr(medtl.utils, "open", disk, raising=False)
    code, err = _train(capsys, "train", cfg)
    assert disk.refused == ["last.ckpt"]  # the fault really happened where it was meant to
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"error: cannot write {run / 'last.ckpt'} ({ENOSPC_TEXT})"), err[0]
    assert f"free space on the disk holding {run}" in err[0]
    assert _leftovers(run) == []
    assert not (run / ".lock").exists()
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed"
    assert ENOSPC_TEXT in result["error"] and str(run / "last.ckpt") in result["error"]
    assert result["resume"] == f"medtl train --resume {run}"
    assert _epochs(run) == ["1"]  # epoch 2 is not logged: its checkpoint never reached the disk

    # resumed while the disk is still full: the same reason, not an error about what the first fault left
    code, err = _train(capsys, "train", "--resume", run, cfg)
    assert disk.refused == ["last.ckpt", "last.ckpt"]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot write {run / 'last.ckpt'} ({ENOSPC_TEXT})"), err[0]
    assert _leftovers(run) == []
    assert ENOSPC_TEXT in json.loads((run / "result.json").read_text())["error"]

    # space again: the run continues from epoch 1's checkpoint and finishes
    monkeypatch.setattr(medtl.utils, "open", builtins.open, raising=False)
    code, err = _train(capsys, "train", "--resume", run, cfg)
    assert code == 0, err
    assert json.loads((run / "result.json").read_text())["status"] == "ok"
    assert _epochs(run) == ["1", "2", "3"]
    assert _leftovers(run) == []


def test_when_not_even_result_json_fits_the_line_still_names_the_first_file_that_failed(
    run_cfg, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every write fails from the second checkpoint on: result.json cannot say "failed", the line tells the truth."""
    cfg, run = run_cfg
    disk = Disk("last.ckpt", full_from=2)

    def everything_full_after_the_first_checkpoint(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if disk.seen >= 1 and "w" in mode:
            disk.refused.append(_target(file))
            return _FullDisk(builtins.open(file, mode, *args, **kwargs))
        return disk(file, mode, *args, **kwargs)

    monkeypatch.setattr(medtl.utils, "open", everything_full_after_the_first_checkpoint, raising=False)
    code, err = _train(capsys, "train", cfg)
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert "result.json" in disk.refused[1:]  # medtl tried to record the failure, and could not
    first = disk.refused[0]
    assert err[0].startswith(f"error: cannot write {run / first} ({ENOSPC_TEXT})"), (disk.refused, err[0])
    assert first != "result.json"  # the failure to record the failure is not the reason shown
    assert _leftovers(run) == []
    assert not (run / ".lock").exists()
