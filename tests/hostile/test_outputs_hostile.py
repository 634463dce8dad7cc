"""Hostile outputs and names, through the ``medtl`` command: an output never writes over an input, and odd names,
damaged checkpoints and files that are no scans are one line each.

An output (``predict``/``evaluate --out``, the masks a segmentation predict writes, the per-patient file of a
segmentation evaluate, ``convert``'s output) is refused before the first scan is processed when it is an input (a
scan, a manifest, a file the manifest names; through a symlink or a hard link too), lies inside an input scan
folder, or lies inside the run folder being read. Each case checks what a user sees (exit != 0, one line on stderr
naming the files and the fix, no traceback) and that no file changed.

Two tiny runs serve the module (a 1-epoch 2D classification of 16 px radiographs, a 1-epoch 2D segmentation of
32 px discs); their commands run in this process (``medtl.cli.main``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from helpers.cli import assert_one_line_error, no_leftovers
from helpers.dicom import write_series
from helpers.seg_tasks import make_disc_task, seg_config
from helpers.tasks import base_config, make_xray_task

from medtl.cli import main
from medtl.train import fine_tune


class _Proc:
    """What a user sees of ``medtl ARGS`` run in this process."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def run_medtl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``medtl ARGS`` in this process (MEDTL_HOME stays the session's: the runs' pseudonyms must match)."""
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    monkeypatch.delenv("MEDTL_RUN_DIR", raising=False)

    def run(*args: str | Path) -> _Proc:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return _Proc(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the run folder, its task's manifest): 1 epoch on 16 px radiographs."""
    manifest = make_xray_task(tmp_path_factory.mktemp("xray"), size=16)
    out = tmp_path_factory.mktemp("runs")
    cfg = base_config(manifest, out, preprocess={"size": [16, 16]}, train={"epochs": 1}, output={"name": "cls"})
    fine_tune(cfg, quiet=True)
    return out / "cls", manifest


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the run folder, its task folder): 1 epoch on 6 one-slice 32 px NIfTI images of a disc."""
    task = tmp_path_factory.mktemp("discs")
    manifest = make_disc_task(task, n_patients=6)
    out = tmp_path_factory.mktemp("runs")
    cfg = seg_config(
        manifest,
        out,
        segmentation={"decoder_channels": [8, 8, 8, 8, 8]},
        splits={"val_fraction": 0.34, "test_fraction": 0.0},
        train={"epochs": 1, "batch_size": 2, "threads": 1},
        output={"name": "seg"},
    )
    fine_tune(cfg, quiet=True)
    return out / "seg", task


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> its SHA-256: what must not change."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _manifest(path: Path, rows: Sequence[Sequence[object]], header: str) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows([[str(c) for c in r] for r in rows])
    return path


def _seg_pair(task: Path, folder: Path, i: int = 0) -> tuple[Path, Path]:
    """Copies of the task's image ``i`` and its mask in ``folder``: a scan of a patient the run has not seen."""
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = folder / f"scan_{i}.nii.gz", folder / f"scan_{i}_ref.nii.gz"
    shutil.copyfile(task / f"img_{i:03d}.nii.gz", image)
    shutil.copyfile(task / f"mask_{i:03d}.nii.gz", mask)
    return image, mask


# ------------------------------------------------------------------------------------------ evaluate --out


def test_evaluate_out_is_never_an_input_of_the_manifest(seg_run, tmp_path: Path, run_medtl) -> None:
    """D1/D2: --out on a reference mask or an image of the manifest (as given, through a symlink, a hard link, or as
    the per-patient file written next to --out) used to be overwritten with the scores (exit 0)."""
    run, task = seg_run
    data = tmp_path / "data"
    image, mask = _seg_pair(task, data)
    (data / "scores_patients.csv").write_text("a note the manifest names in a column of its own\n")
    m = _manifest(
        tmp_path / "m.csv", [[image, mask, "NEW1", data / "scores_patients.csv"]], "image,mask,patient_id,doc"
    )
    (tmp_path / "link.nii.gz").symlink_to(mask)
    os.link(image, tmp_path / "hard.nii.gz")
    before = _digest(tmp_path)
    cases = [
        (mask, (mask.name, "is the input", "would overwrite it", "--out")),
        (image, (image.name, "is the input")),
        (tmp_path / "link.nii.gz", ("link.nii.gz", mask.name)),
        (tmp_path / "hard.nii.gz", ("hard.nii.gz", image.name, "the same file under another name")),
        (data / "scores.csv", ("scores_patients.csv", "per-patient file", "is the input")),  # any path column
    ]
    for out, words in cases:
        proc = run_medtl("evaluate", run, m, "--allow-seen", "--out", out)
        assert_one_line_error(proc, *words)
    assert _digest(tmp_path) == before and not (data / "scores.csv").exists() and no_leftovers(tmp_path) == []
    # the twin: an output beside the inputs that is none of them is written
    proc = run_medtl("evaluate", run, m, "--out", data / "other.csv")
    assert proc.returncode == 0, proc.stderr
    assert (data / "other.csv").is_file() and (data / "other_patients.csv").is_file()


def test_classification_evaluate_out_on_a_scan_of_its_manifest(cls_run, tmp_path: Path, run_medtl) -> None:
    run, manifest = cls_run
    scan = tmp_path / "new.dcm"
    shutil.copyfile(manifest.parent / "img_001.dcm", scan)
    m = _manifest(tmp_path / "m.csv", [[scan, "positive", "NEWX"]], "image,label,patient_id")
    before = scan.read_bytes()
    line = assert_one_line_error(run_medtl("evaluate", run, m, "--out", scan), "new.dcm", "is the input")
    assert "give another file name as --out" in line and scan.read_bytes() == before


def test_evaluate_out_inside_the_run_folder_is_refused(seg_run, tmp_path: Path, run_medtl) -> None:
    """D3: --out RUN/result.json (or config.yaml, or a new file in the run folder) replaced the run's own files."""
    _, task = seg_run
    run = tmp_path / "run"
    shutil.copytree(seg_run[0], run)
    image, mask = _seg_pair(task, tmp_path / "data")
    m = _manifest(tmp_path / "m.csv", [[image, mask, "NEW1"]], "image,mask,patient_id")
    before = _digest(run)
    for out in (run / "result.json", run / "config.yaml", run / "scores.csv", run / "sub" / "scores.csv"):
        line = assert_one_line_error(run_medtl("evaluate", run, m, "--out", out), out.name, "inside the run folder")
        assert str(run) in line
    assert _digest(run) == before


# ------------------------------------------------------------------------------------------ predict --out


def test_segmentation_predict_refuses_a_mask_name_that_is_an_input(seg_run, tmp_path: Path, run_medtl) -> None:
    """D4: ``predict RUN a.nii.gz a_mask.nii.gz --out DIR`` wrote a's mask over the input a_mask.nii.gz."""
    run, task = seg_run
    d = tmp_path / "d"
    d.mkdir()
    a, a_mask = d / "a.nii.gz", d / "a_mask.nii.gz"
    shutil.copyfile(task / "img_000.nii.gz", a)
    shutil.copyfile(task / "img_001.nii.gz", a_mask)  # an image that happens to be named like a mask
    before = _digest(d)
    line = assert_one_line_error(run_medtl("predict", run, a, a_mask, "--out", d), "a.nii.gz", "a_mask.nii.gz")
    assert "is the input" in line and "--out" in line
    assert _digest(d) == before  # nothing written, not even the mask of a_mask.nii.gz
    # the output folder inside the run folder is refused as well
    line = assert_one_line_error(run_medtl("predict", run, a, "--out", run / "masks"), "inside the run folder")
    assert not (run / "masks").exists()
    # the twin: another folder receives both masks
    proc = run_medtl("predict", run, a, a_mask, "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_mask.nii.gz", "a_mask_mask.nii.gz"]


def test_segmentation_predict_gives_inputs_of_one_stem_masks_of_their_own(seg_run, tmp_path: Path, run_medtl) -> None:
    """Two inputs of one stem from two folders each get a mask, also when their names differ only in case (one
    file on macOS and Windows)."""
    run, task = seg_run
    inputs = [tmp_path / "p1" / "x.nii.gz", tmp_path / "p2" / "x.nii.gz", tmp_path / "p3" / "X.nii.gz"]
    for i, path in enumerate(inputs):
        path.parent.mkdir()
        shutil.copyfile(task / f"img_{i:03d}.nii.gz", path)
    out = tmp_path / "masks"
    proc = run_medtl("predict", run, *inputs, "--out", out)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and len({n.lower() for n in names}) == 3, names


def test_classification_predict_refuses_inputs_and_the_run_folder(cls_run, tmp_path: Path, run_medtl) -> None:
    run, manifest = cls_run
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):
        shutil.copyfile(manifest.parent / f"img_{i:03d}.dcm", scans / f"s{i}.dcm")
    m = _manifest(tmp_path / "m.csv", [[scans / "s0.dcm", "negative", "N1"]], "image,label,patient_id")
    os.link(scans / "s1.dcm", tmp_path / "hard.dcm")
    series = tmp_path / "series"
    write_series(series, np.zeros((1, 16, 16), np.uint16), modality="CT")
    before, run_before = _digest(tmp_path), _digest(run)
    cases: list[tuple[list[Any], Path, tuple[str, ...]]] = [
        ([m], scans / "s0.dcm", ("s0.dcm", "is the input")),  # a scan the manifest names
        ([m], m, ("m.csv", "is the input")),  # the manifest
        ([scans / "s1.dcm"], tmp_path / "hard.dcm", ("hard.dcm", "s1.dcm", "the same file under another name")),
        ([scans / "s1.dcm"], run / "config.yaml", ("config.yaml", "inside the run folder")),
        ([scans / "s1.dcm"], run / "predictions.csv", ("predictions.csv", "inside the run folder")),
        ([series], series / "p.csv", ("p.csv", "inside the input scan folder")),
    ]
    for inputs, out, words in cases:
        assert_one_line_error(run_medtl("predict", run, *inputs, "--out", out), *words)
    assert _digest(tmp_path) == before and _digest(run) == run_before


# ------------------------------------------------------------------------------------------ convert


def test_convert_refuses_to_write_over_its_input(seg_run, tmp_path: Path, run_medtl) -> None:
    _, task = seg_run
    scan = tmp_path / "c.nii.gz"
    shutil.copyfile(task / "img_000.nii.gz", scan)
    before = scan.read_bytes()
    line = assert_one_line_error(run_medtl("convert", scan, scan), "c.nii.gz", "is the input")
    assert "choose another output path" in line and scan.read_bytes() == before


# ------------------------------------------------------------------------------------------ run names


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a" * 300, ("300 characters long", "at most 120")),
        ("two\nlines", ("'\\n' is not allowed",)),
        ("tab\there", ("'\\t' is not allowed",)),
        ("red\x1b[31m", ("'\\x1b' is not allowed",)),
    ],
)
def test_a_run_name_that_cannot_be_a_folder_is_one_line(cls_run, tmp_path: Path, run_medtl, name, words) -> None:
    """``--name`` of 300 characters was ``OSError: File name too long``; a newline, a tab or a terminal escape made a
    folder named with it."""
    _, manifest = cls_run
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(base_config(manifest, tmp_path / "runs", train={"epochs": 1})))
    line = assert_one_line_error(run_medtl("train", cfg, "--name", name), "output.name", *words)
    assert "letters" in line  # what is allowed
    as_yaml = json.dumps(name)  # a YAML double-quoted string: its escapes are the characters themselves
    assert_one_line_error(run_medtl("config", "validate", cfg, "--set", f"output.name={as_yaml}"), "output.name")
    assert not (tmp_path / "runs").exists()
    # the twin: a name of 120 characters with the allowed punctuation is a run folder
    assert (
        run_medtl("config", "validate", cfg, "--set", "output.name=" + "ok-1.2_+=@, x".ljust(120, "y")).returncode == 0
    )


def _pretrain_config(tmp_path: Path, **output: Any) -> Path:
    """A tiny Models Genesis pretraining on five 20 x 20 x 12 CT volumes."""
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        nib.save(
            nib.Nifti1Image((rng.normal(40, 20, (20, 20, 12))).astype(np.int16), np.diag([2.0, 2.0, 2.0, 1.0])),
            pool / f"ct{i}.nii.gz",
        )
    (pool / "manifest.csv").write_text("image\n" + "".join(f"ct{i}.nii.gz\n" for i in range(5)))
    cfg = {
        "data": {"manifest": str(pool / "manifest.csv"), "modality": "CT"},
        "preprocess": {"size": [16, 16, 16], "ct_window": [-1000, 400]},
        "model": {"arch": "resnet10_3d"},
        "method": "genesis",
        "genesis": {"decoder_width": 8},
        "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0, "cache": "memory"},
        "output": {"dir": str(tmp_path / "runs"), "name": "ct", "register_weights": False, **output},
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_pretraining_name_that_cannot_be_a_folder_is_one_line(tmp_path: Path, run_medtl) -> None:
    cfg = _pretrain_config(tmp_path)
    line = assert_one_line_error(run_medtl("pretrain", cfg, "--name", "p" * 300), "output.name", "300 characters")
    assert "at most 120" in line and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------ resume


class _Payload:
    """A pickle whose loading would run code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _damage(ckpt: Path, how: str, marker: Path) -> None:
    data = ckpt.read_bytes()
    if how == "truncated":
        ckpt.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        ckpt.write_bytes(bytes(range(256)) * 64)
    else:  # a checkpoint that runs code when unpickled
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state["callbacks"] = {"evil": _Payload(marker)}
        torch.save(state, ckpt)


@pytest.mark.parametrize("how", ["truncated", "garbage", "pickle"])
def test_train_resume_from_a_damaged_last_ckpt_is_one_line(cls_run, tmp_path: Path, run_medtl, how) -> None:
    run = tmp_path / "run"
    shutil.copytree(cls_run[0], run)
    marker = tmp_path / "code-ran"
    _damage(run / "last.ckpt", how, marker)
    before = _digest(run)
    proc = run_medtl("train", run / "config.yaml", "--resume", run, "--epochs", "2")
    line = assert_one_line_error(proc, "last.ckpt", "cannot resume")
    assert ("pickled Python objects" if how == "pickle" else "corrupt or truncated") in line
    assert "--overwrite" in line and not marker.exists()
    assert _digest(run) == before


def test_train_resume_without_a_config_continues_the_run(cls_run, tmp_path: Path, run_medtl) -> None:
    """The twin, as the interrupt message words it: ``medtl train --resume RUN`` (no config) with a longer
    ``--epochs`` reads the intact checkpoint and trains on."""
    run = tmp_path / "run"
    shutil.copytree(cls_run[0], run)
    proc = run_medtl("train", "--resume", run, "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs


@pytest.mark.slow  # a pretraining run; the damaged training checkpoint is tested by default
def test_pretrain_resume_from_a_damaged_last_ckpt_is_one_line(tmp_path: Path, run_medtl, monkeypatch) -> None:
    from medtl.pretraining.module import PretrainModule

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    cfg = _pretrain_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("epochs: 1", "epochs: 2"))
    real_step = PretrainModule.training_step

    def ctrl_c_in_epoch_2(self: PretrainModule, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", ctrl_c_in_epoch_2)
    assert run_medtl("pretrain", cfg).returncode == 130
    monkeypatch.setattr(PretrainModule, "training_step", real_step)
    run = tmp_path / "runs" / "ct"
    marker = tmp_path / "code-ran"
    for how in ("truncated", "pickle"):
        shutil.copyfile(run / "last.ckpt", tmp_path / "intact.ckpt")
        _damage(run / "last.ckpt", how, marker)
        line = assert_one_line_error(run_medtl("pretrain", "--resume", run), "last.ckpt", "cannot resume")
        assert "without --resume" in line and not marker.exists()
        shutil.copyfile(tmp_path / "intact.ckpt", run / "last.ckpt")
    # the twin: the intact checkpoint resumes and finishes
    proc = run_medtl("pretrain", "--resume", run)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------ inputs that are no scans


def test_segmentation_inputs_that_are_no_scans_say_why(seg_run, tmp_path: Path, run_medtl) -> None:
    """A segmentation predict or evaluate said "applying transform <medtl.io.load_transforms.LoadScand object at
    0x...>"; classification said what is wrong with the file. Both do now."""
    run, task = seg_run
    text = tmp_path / "notes.dcm"
    text.write_text("not a scan\n" * 20)
    data = (task / "img_000.nii.gz").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "masks"
    for path, words in ((text, ("is not a DICOM file",)), (cut, ("ends early",))):
        line = assert_one_line_error(run_medtl("predict", run, path, "--out", out), path.name, *words)
        assert "applying transform" not in line and "object at 0x" not in line
    _, mask = _seg_pair(task, tmp_path / "data")
    m = _manifest(tmp_path / "m.csv", [[text, mask, "NEW1"]], "image,mask,patient_id")
    line = assert_one_line_error(run_medtl("evaluate", run, m), "notes.dcm", "is not a DICOM file", "row 2")
    assert "object at 0x" not in line and not out.exists()
