"""Traps a new user fell into (issue 19 §4-§5), each through real files and, where it is a command-line trap, the real
``medtl`` command (:func:`medtl.cli.main` in this process).

§4: labels of another task in a classification run; manifest columns mapped by the config, checked by
``config validate``. §5: predict on folders; a schedule that never unfreezes; a run used as weights; importing a
``local:`` encoder; ``config validate`` on a pretraining config; a failed run that blocks its rerun; the report and the
help texts.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers.cli import assert_one_line_error
from helpers.dicom import write_series
from helpers.tasks import base_config, make_volume_task, make_xray_task

from medtl.cli import main
from medtl.errors import ManifestError
from medtl.tasks.classification import NUMERIC_CLASSES_LIMIT, check_label_kind
from medtl.train import fine_tune


class _Proc:
    """What a user sees of ``medtl ARGS``: exit code, stdout, stderr."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def run_medtl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.setenv("COLUMNS", "200")  # help texts on one line each, as a wide terminal shows them
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    monkeypatch.delenv("MEDTL_RUN_DIR", raising=False)

    def run(*args: str | Path) -> _Proc:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return _Proc(code, captured.out, captured.err)

    return run


def _write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def xray_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A 1-epoch 2D run on 16 px radiographs with ImageNet normalisation (random weights): (run, data folder, cfg)."""
    data = tmp_path_factory.mktemp("xray")
    manifest = make_xray_task(data, n_patients=16, size=16)
    out = tmp_path_factory.mktemp("runs")
    cfg = base_config(
        manifest,
        out,
        preprocess={"size": [16, 16], "normalization": "imagenet"},
        train={"epochs": 1},
        output={"name": "xr"},
    )
    fine_tune(cfg, quiet=True)
    return out / "xr", data, cfg


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1-epoch 3D CT run on 8^3 NIfTI volumes: (run, data folder of 12 NIfTI files and a manifest)."""
    data = tmp_path_factory.mktemp("ct")
    manifest = make_volume_task(data, n_patients=12, size=8)
    out = tmp_path_factory.mktemp("runs3d")
    cfg = base_config(
        manifest,
        out,
        data={"modality": "CT"},
        preprocess={"size": [8, 8, 8], "ct_window": [-200, 800]},
        model={"arch": "resnet10_3d"},
        train={"epochs": 1},
        output={"name": "ct"},
    )
    fine_tune(cfg, quiet=True)
    return out / "ct", data


# ---------------------------------------------------------------------------------------- §4 labels and columns


def test_multi_finding_labels_in_a_classification_run_name_the_rows_and_the_task() -> None:
    labels = [(2, "Nodule"), (3, "Nodule|Effusion"), (4, "Effusion"), (5, "Effusion;Mass")]
    with pytest.raises(ManifestError) as err:
        check_label_kind(labels, "m.csv")
    text = str(err.value)
    assert "2 label(s) list several findings" in text and "row 3 'Nodule|Effusion'" in text and "row 5" in text
    assert "task: multilabel" in text and "m.csv" in text
    check_label_kind(labels, "m.csv", classes_given=True)  # the user listed them: single class names after all
    check_label_kind([(2, "a"), (3, "b")], "m.csv")  # plain class names pass


def test_many_distinct_numeric_labels_point_at_regression() -> None:
    ages = [(n + 2, str(40 + n)) for n in range(NUMERIC_CLASSES_LIMIT + 1)]
    with pytest.raises(ManifestError) as err:
        check_label_kind(ages, "ages.csv")
    text = str(err.value)
    assert f"{NUMERIC_CLASSES_LIMIT + 1} distinct numbers" in text and "rows 2, 3, 4" in text
    assert "task: regression" in text
    check_label_kind(ages[:NUMERIC_CLASSES_LIMIT], "ages.csv")  # a few numeric grades are classes
    check_label_kind(ages, "ages.csv", classes_given=True)


def test_mapped_columns_train_and_a_wrong_one_is_refused_by_config_validate(tmp_path: Path, run_medtl) -> None:
    manifest = make_xray_task(tmp_path / "data", n_patients=12, size=16)
    rows = _rows(manifest)
    renamed = tmp_path / "data" / "renamed.csv"
    with open(renamed, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Scan", "Diagnosis", "Subject"])
        w.writerows([r["image"], r["label"], r["patient_id"]] for r in rows)
    cfg = base_config(
        renamed,
        tmp_path / "runs",
        data={"image_column": "Scan", "label_column": "Diagnosis", "patient_column": "Subject"},
        preprocess={"size": [16, 16]},
        train={"epochs": 1},
        output={"name": "mapped"},
    )
    path = _write_yaml(tmp_path / "cfg.yaml", cfg)
    assert run_medtl("config", "validate", path).returncode == 0
    proc = run_medtl("train", path)
    assert proc.returncode == 0, proc.stderr
    split = {r["patient_id"]: r["split"] for r in _rows(tmp_path / "runs" / "mapped" / "splits.csv")}
    assert len(split) == 12  # the patient column was read: 12 patients, not one per row by chance
    # a column the manifest does not have: refused by validate, from the header alone, naming all three
    bad = _write_yaml(tmp_path / "bad.yaml", dict(cfg, data=dict(cfg["data"], label_column="Finding")))
    line = assert_one_line_error(run_medtl("config", "validate", bad), "renamed.csv", "Finding", "Scan,Diagnosis")
    assert "data.label_column" in line
    bad = _write_yaml(tmp_path / "bad2.yaml", dict(cfg, data={"manifest": str(renamed)}))  # default 'image' column
    assert_one_line_error(run_medtl("config", "validate", bad), "renamed.csv", "'image'", "data.image_column")
    assert not (tmp_path / "runs" / "bad").exists()


# ---------------------------------------------------------------------------------------- §5.1 predict on folders


def test_predict_on_a_folder_of_radiographs_scores_every_file(xray_run, tmp_path: Path, run_medtl) -> None:
    run, data, _ = xray_run
    folder = tmp_path / "patients"
    for n, dcm in enumerate(sorted(data.glob("*.dcm"))):
        (folder / f"patient{n:02d}").mkdir(parents=True)
        shutil.copy(dcm, folder / f"patient{n:02d}" / dcm.name)
    (folder / "notes.txt").write_text("not a scan")
    out = tmp_path / "p.csv"
    proc = run_medtl("predict", run, folder, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == 16 and "16 scan(s)" in proc.stdout
    assert sorted(Path(r["image"]).parent.name for r in rows) == [f"patient{n:02d}" for n in range(16)]


def test_predict_on_a_folder_of_nifti_files_and_dicom_series(volume_run, tmp_path: Path, run_medtl) -> None:
    run, data = volume_run
    out = tmp_path / "nifti.csv"
    proc = run_medtl("predict", run, data, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(Path(r["image"]).name for r in _rows(out)) == sorted(p.name for p in data.glob("*.nii.gz"))
    assert len(_rows(out)) == 12
    # a folder that is one DICOM series is one scan; a folder of three patients' series is three
    rng = np.random.default_rng(0)
    patients = tmp_path / "dicom"
    for n in range(3):
        write_series(patients / f"P{n}", rng.integers(900, 1100, (8, 8, 8)).astype(np.int16), patient_id=f"P{n}")
    out = tmp_path / "one.csv"
    proc = run_medtl("predict", run, patients / "P1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert [r["image"] for r in _rows(out)] == [str((patients / "P1").resolve())]
    out = tmp_path / "three.csv"
    proc = run_medtl("predict", run, patients, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(Path(r["image"]).name for r in _rows(out)) == ["P0", "P1", "P2"]


def test_a_broken_scan_of_a_folder_is_named_without_a_manifest_row(volume_run, tmp_path: Path, run_medtl) -> None:
    run, _ = volume_run
    folder = tmp_path / "scans"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(folder / "good.nii"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(folder / "cut.nii"))
    data = (folder / "cut.nii").read_bytes()
    (folder / "cut.nii").write_bytes(data[: len(data) - 1000])  # the header reads; the voxels do not
    line = assert_one_line_error(run_medtl("predict", run, folder, "--out", tmp_path / "p.csv"), "cut.nii")
    assert "manifest" not in line and "leave it out of the inputs" in line


# ---------------------------------------------------------------------------------------- §5.4 pretraining configs

ROOT = Path(__file__).resolve().parents[2]


def test_config_validate_reads_a_pretraining_config_and_train_threads_is_used(
    xray_run, tmp_path: Path, run_medtl
) -> None:
    import torch

    proc = run_medtl("config", "validate", ROOT / "configs" / "pretrain_xray_simclr.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "ok (pretraining simclr, mobilenet_v2 from imagenet, 20 epochs)" in proc.stdout
    _, data, _ = xray_run
    cfg = {
        "data": {"manifest": str(data / "manifest.csv")},
        "preprocess": {"size": [16, 16]},
        "model": {"arch": "resnet18"},
        "method": "simclr",
        "train": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0, "cache": "none", "threads": 1},
        "output": {"dir": str(tmp_path / "runs"), "name": "pre"},
    }
    path = _write_yaml(tmp_path / "pretrain.yaml", cfg)
    assert run_medtl("config", "validate", path).returncode == 0
    shown = yaml.safe_load(run_medtl("config", "show", path).stdout)
    assert shown["method"] == "simclr" and shown["train"]["threads"] == 1
    # a typo is still refused, by the pretraining schema (its own fields listed)
    bad = _write_yaml(tmp_path / "bad.yaml", dict(cfg, train=dict(cfg["train"], epoch=2)))
    line = assert_one_line_error(run_medtl("config", "validate", bad), "train.epoch")
    assert "invalid pretraining config" in line and "threads" in line
    threads = torch.get_num_threads()
    try:
        proc = run_medtl("pretrain", path)
        assert proc.returncode == 0, proc.stderr
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
