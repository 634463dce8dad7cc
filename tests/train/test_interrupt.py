"""Ctrl-C and SIGTERM on ``medtl train``: exit 130, one line saying where the run is and how to continue it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers.cli import MEDTL
from helpers.tasks import base_config, make_xray_task

from medtl.cli import main

LIMIT = 240.0  # seconds a run may take to finish its first epoch on a busy 2-core machine


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_the_cli_says_what_an_interrupted_command_said(tmp_path: Path, monkeypatch, capsys) -> None:
    """typer turns a KeyboardInterrupt inside a command into a bare exit 130: its message must still be shown."""
    import medtl.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("run /x/run stopped during epoch 3; continue it with: medtl train --resume /x/run")

    monkeypatch.setattr(medtl.train, "fine_tune", interrupted)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {manifest: m.csv}\nmodel: {arch: resnet18}\n")
    assert main(["train", str(cfg)]) == 130
    err = _lines(capsys.readouterr().err)
    assert err == ["interrupted: run /x/run stopped during epoch 3; continue it with: medtl train --resume /x/run"]


def test_a_keyboard_interrupt_without_a_message_still_says_interrupted(tmp_path: Path, monkeypatch, capsys) -> None:
    import medtl.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(medtl.train, "fine_tune", interrupted)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {manifest: m.csv}\nmodel: {arch: resnet18}\n")
    assert main(["train", str(cfg)]) == 130
    assert _lines(capsys.readouterr().err) == ["interrupted"]


class _Signal:
    """Pickled inside a checkpoint: sends ``signum`` to this process while torch.save is writing the file."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __reduce__(self):
        os.kill(os.getpid(), self.signum)
        return (int, (0,))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_a_checkpoint_is_written_waits_for_the_file(tmp_path: Path, signum: int) -> None:
    """A cluster's SIGTERM (or Ctrl-C) landing inside torch.save used to cut the zip writer halfway: it raised its own
    RuntimeError in place of the stop, and the run ended in a traceback with exit 1. The stop now comes once the
    checkpoint is in place, whole; a second request while the first waits is not held back."""
    import torch

    from medtl.cli import _terminate
    from medtl.train.callbacks import AtomicCheckpointIO
    from medtl.utils import interrupt, interrupts_deferred

    before = {s: signal.signal(s, _terminate) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        path = tmp_path / "last.ckpt"
        state = {"weights": torch.arange(300_000, dtype=torch.float32), "stop": _Signal(signum)}
        with pytest.raises(KeyboardInterrupt) as stopped:
            AtomicCheckpointIO().save_checkpoint(state, path)
        assert str(stopped.value) == ("stopped by signal SIGTERM" if signum == signal.SIGTERM else "")
        saved = torch.load(path, weights_only=False)
        assert torch.equal(saved["weights"], state["weights"]) and saved["stop"] == 0
        assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
        with pytest.raises(KeyboardInterrupt, match="second"), interrupts_deferred():
            interrupt("first")
            interrupt("second")
        with pytest.raises(KeyboardInterrupt, match="outside"):
            interrupt("outside")  # no file being written: at once
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@pytest.mark.slow
def test_sigterm_and_ctrl_c_stop_a_run_with_one_line_naming_it_and_its_resume_command(tmp_path: Path) -> None:
    """Both signals, each on its own training process (run side by side to halve the wait; ~45 s on 2 cores).

    tests/hostile/test_train_hostile.py checks SIGTERM in the default run.
    """
    task = make_xray_task(tmp_path / "xray", n_patients=16, size=16)
    env = dict(os.environ, MEDTL_HOME=str(tmp_path / "medtl-home"), HF_HUB_OFFLINE="1", MEDTL_DEBUG="0")
    procs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    try:
        for sig in ("SIGTERM", "SIGINT"):
            cfg = base_config(
                task,
                tmp_path / "runs",
                preprocess={"size": [16, 16]},
                model={"arch": "resnet18", "weights": "scratch"},
                train={"epochs": 500, "threads": 1, "limit_train_batches": 1},
            )
            cfg["output"]["name"] = sig.lower()
            path = tmp_path / f"{sig}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            proc = subprocess.Popen(
                [MEDTL, "train", str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                errors="replace",
            )
            procs[sig] = (proc, tmp_path / "runs" / sig.lower())
        deadline = time.monotonic() + LIMIT
        waiting = dict(procs)
        while waiting and time.monotonic() < deadline:
            for sig, (proc, run) in list(waiting.items()):
                metrics = run / "metrics.csv"
                if proc.poll() is not None:
                    pytest.fail(f"{sig} run ended before the signal: {proc.communicate()}")
                if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # one epoch: last.ckpt exists
                    proc.send_signal(getattr(signal, sig))
                    del waiting[sig]
            time.sleep(0.2)
        assert not waiting, f"no epoch finished within {LIMIT:.0f} s: {sorted(waiting)}"
        for sig, (proc, run) in procs.items():
            start = time.monotonic()
            out, err = proc.communicate(timeout=60)  # a graceful stop takes seconds, not minutes
            assert time.monotonic() - start < 60
            assert proc.returncode == 130, (sig, out, err)
            assert "Traceback" not in err and "Received SIGTERM" not in err, err
            lines = _lines(err)
            assert len(lines) == 1, (sig, err)
            assert lines[0].startswith(f"interrupted: run {run} stopped during epoch "), lines[0]
            assert lines[0].endswith(f"continue it with: medtl train --resume {run}"), lines[0]
            result = json.loads((run / "result.json").read_text())
            assert result["status"] == "interrupted", (sig, result)
            assert result["resume"] == f"medtl train --resume {run}"
            assert (run / "last.ckpt").is_file() and not (run / ".lock").exists()
            assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()  # never leave a training process behind
                proc.communicate()


@pytest.mark.slow
def test_ctrl_c_on_compare_writes_the_report_of_the_finished_runs(tmp_path: Path) -> None:
    """Ctrl-C while the second run trains: exit 130, one line, results and report of the first run (~40 s)."""
    task = make_xray_task(tmp_path / "xray", n_patients=16, size=16)
    cfg = base_config(
        task,
        tmp_path / "runs",
        preprocess={"size": [16, 16]},
        train={"epochs": 12, "threads": 1, "limit_train_batches": 1},
    )
    cfg["compare"] = {
        "arms": [{"name": "first", "model": {"weights": "scratch"}}, {"name": "scratch"}],
        "seeds": 1,
        "fractions": [1.0],
        "n_resamples": 200,
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cmp"
    env = dict(os.environ, MEDTL_HOME=str(tmp_path / "medtl-home"), HF_HUB_OFFLINE="1", MEDTL_DEBUG="0")
    proc = subprocess.Popen(
        [MEDTL, "compare", str(path), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        errors="replace",
    )
    second = out / "runs" / "scratch" / "frac1-seed0" / "metrics.csv"
    try:
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline and proc.poll() is None and not second.is_file():
            time.sleep(0.2)  # metrics.csv of the second run: the first is recorded, the second is training
        assert proc.poll() is None, proc.communicate()
        assert second.is_file(), f"the second run did not start within {LIMIT:.0f} s"
        proc.send_signal(signal.SIGINT)
        out_text, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out_text, err)
    assert "Traceback" not in err, err
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith("interrupted: partial report of the finished runs: "), err
    assert f"{out / 'report.html'}; run the same command again to go on" in lines[0], err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["arm"], r["status"]) for r in runs] == [("first", "ok")], runs
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "first" in (out / "report.md").read_text()
    assert json.loads((second.parent / "result.json").read_text())["status"] == "interrupted"
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
