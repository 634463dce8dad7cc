"""Traps a new user fell into (issue 19 §4-§5), each through real files and, where it is a command-line trap, the real
``medtl`` command (:func:`medtl.cli.main` in this process).

§4: labels of another task in a classification run; manifest columns mapped by the config, checked by
``config validate``. §5: predict on folders; a schedule that never unfreezes; a run used as weights; importing a
``local:`` encoder; ``config validate`` on a pretraining config; a failed run that blocks its rerun; the report and the
help texts.
"""

from __future__ import annotations

import csv
import json
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
    # method: simclr is the default; a folder of unlabeled scans says "pretraining" as well
    folder_cfg = {k: v for k, v in cfg.items() if k != "method"} | {"data": {"folder": str(data)}}
    proc = run_medtl("config", "validate", _write_yaml(tmp_path / "folder.yaml", folder_cfg))
    assert proc.returncode == 0 and "ok (pretraining simclr" in proc.stdout, proc.stderr
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


# ---------------------------------------------------------------------------------------- §5.5 a failed run's folder


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_corrected_rerun(
    xray_run, tmp_path: Path, run_medtl
) -> None:
    _, _, cfg = xray_run
    runs = tmp_path / "runs"
    cfg = dict(cfg, output={"dir": str(runs), "name": "fix"})
    wrong = _write_yaml(tmp_path / "wrong.yaml", dict(cfg, data=dict(cfg["data"], mode="3d")))
    assert run_medtl("train", wrong).returncode == 2  # radiographs are not volumes: fails once the first scan is read
    assert json.loads((runs / "fix" / "result.json").read_text())["status"] == "failed"
    right = _write_yaml(tmp_path / "right.yaml", cfg)
    proc = run_medtl("train", right)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stdout.splitlines() if line.startswith("replacing")]
    assert len(said) == 1 and str(runs / "fix") in said[0] and "before its first epoch" in said[0]
    assert json.loads((runs / "fix" / "result.json").read_text())["status"] == "ok"
    # a finished run still needs --resume or --overwrite
    line = assert_one_line_error(run_medtl("train", right), "fix", "status ok")
    assert "--overwrite" in line
    # what can be checked in milliseconds is checked before the folder exists
    for name, change in (("w", {"model": {"arch": "resnet18", "weights": "imagenett"}}), ("c", {"data": {
        **cfg["data"], "label_column": "Finding"}})):  # fmt: skip
        bad = _write_yaml(tmp_path / f"{name}.yaml", dict(cfg, output={"dir": str(runs), "name": name}, **change))
        assert run_medtl("train", bad).returncode == 2
        assert not (runs / name).exists()


# ---------------------------------------------------------------------------------------- §5.2 a body never unfrozen


def _compare_config(tmp_path: Path) -> Path:
    import helpers.compare as fake

    fake.write_manifest(tmp_path / "data")
    cfg = {
        "data": {"manifest": "data/manifest.csv", "mode": "2d"},
        "model": {"arch": "mobilenet_v2"},
        "train": {"epochs": 3, "freeze_epochs": 1},
        "compare": {
            "arms": [
                {"name": "imagenet", "label": "MobileNetV2 ImageNet", "model": {"weights": "imagenet"}},
                {"name": "scratch", "model": {"weights": "scratch"}},
            ],
            "seeds": 3,
            "n_resamples": 200,
        },
    }
    return _write_yaml(tmp_path / "compare.yaml", cfg)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch):
    """Training replaced by a stand-in that writes run folders as the engine does (helpers.compare.FakeEngine)."""
    import helpers.compare as fake

    import medtl.train

    stand_in = fake.FakeEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", stand_in)
    return stand_in


def test_compare_says_when_an_arm_never_unfreezes(tmp_path: Path, engine, run_medtl) -> None:
    cfg = _compare_config(tmp_path)
    proc = run_medtl("compare", cfg, "--epochs", "1", "--fractions", "1", "--out", tmp_path / "one")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # the summary's warnings are wrapped to the console's width
    warning = "warning: MobileNetV2 ImageNet: schedule fine_tune keeps the body (every layer but the head) frozen"
    # said before the runs start, and again under the summary
    assert text.count(warning) == 2 and text.index(warning) < text.index("[1/6]")
    assert text.count("frozen for all 1 epoch(s)") == 2  # not for scratch: one_cycle trains everything at once
    assert text.count("a linear probe with scratch trained in full") == 2
    report = (tmp_path / "one" / "report.md").read_text()
    assert "Warnings:" in report and "MobileNetV2 ImageNet: schedule fine\\_tune keeps the body" in report
    assert "compares a linear probe with scratch trained in full" in report
    # the twin: two epochs unfreeze the body in the second; nothing to say
    proc = run_medtl("compare", cfg, "--epochs", "2", "--fractions", "1", "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr
    assert "frozen for all" not in proc.stdout
    assert "frozen for all" not in (tmp_path / "two" / "report.md").read_text()


def test_train_warns_when_the_body_is_never_unfrozen(
    tmp_path: Path, run_medtl, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys
    import warnings

    manifest = make_xray_task(tmp_path / "data", n_patients=12, size=16)
    cfg = base_config(
        manifest,
        tmp_path / "runs",
        preprocess={"size": [16, 16]},
        train={"epochs": 1, "schedule": "fine_tune", "freeze_epochs": 1},
        output={"name": "probe"},
    )
    path = _write_yaml(tmp_path / "cfg.yaml", cfg)
    with warnings.catch_warnings():  # as the medtl command shows a warning: one line on stderr (not pytest's record)
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        proc = run_medtl("train", path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "frozen for all" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: run {tmp_path / 'runs' / 'probe'}: schedule fine_tune")
    assert "train.freeze_epochs 1 >= train.epochs 1" in lines[0] and "linear probe" in lines[0]


# ---------------------------------------------------------------------------------------- §5.6 the report and --help


def test_the_report_of_one_label_fraction(tmp_path: Path, engine, run_medtl, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    drawn: dict[str, dict] = {}
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):  # what each plot holds, read from the figure as it is saved
        ax = fig.axes[0]
        legend = ax.get_legend()
        drawn[Path(path).stem] = {
            "lines": [line.get_xydata().tolist() for line in ax.get_lines()],
            "bars": [seg.tolist() for c in ax.collections for seg in getattr(c, "get_segments", list)()],
            "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
            "title": ax.get_title(),
            "ticks": [t.get_text() for t in ax.get_xticklabels()],
        }
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    cfg = _compare_config(tmp_path)
    out = tmp_path / "cmp"
    proc = run_medtl("compare", cfg, "--fractions", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    data = json.loads((out / "results.json").read_text())
    # "1 label fraction", not "1 label fractions"
    assert "2 arms x 3 seeds x 1 label fraction: 6 runs finished" in md
    # the label-efficiency plot: a dot per arm with its interval, no line through single points
    eff = drawn["label_efficiency"]
    assert eff["ticks"] == ["MobileNetV2 ImageNet", "scratch"]
    assert all(len(points) == 1 for points in eff["lines"])

    def has_bar(x: float, low: float, high: float) -> bool:
        return any(
            a[0] == b[0] == x and min(a[1], b[1]) == pytest.approx(low) and max(a[1], b[1]) == pytest.approx(high)
            for a, b in eff["bars"]
        )

    for x, arm in enumerate(("imagenet", "scratch")):
        ci = next(r for r in data["summary"]["rows"] if r["arm"] == arm)["metrics"]["auroc"]
        assert has_bar(x, ci["low"], ci["high"]), (arm, ci, eff["bars"])
    # the ROC legend says whose AUROC it shows, and the title says why it differs from the table's
    roc = drawn["roc"]
    assert roc["legend"] and all("AUROC of the seed-averaged scores" in t for t in roc["legend"])
    assert "mean of each seed's AUROC" in roc["title"]
    # "Runs" lists every run: arm, seed, labels, status, test metric, folder
    runs_section = md[md.index("## Runs") :]
    for r in data["runs"]:
        assert f"| {r['seed']} | 100% | ok | {r['test_metrics']['auroc']:.3f} |" in runs_section
        assert r["run_dir"].replace("_", "\\_") in runs_section
    # long cells wrap in the HTML instead of widening the page (checked on the style rules: no browser here)
    html = (out / "report.html").read_text()
    style = html[html.index("<style>") : html.index("</style>")]
    cell_rule = style[style.index("th,td{") :].split("}")[0]
    assert "overflow-wrap:anywhere" in cell_rule
    assert "max-width:100%" in style[style.index("table{") :].split("}")[0]
    assert "white-space:pre-wrap" in style[style.index("pre{") :].split("}")[0]


def test_the_verdict_says_when_the_reference_arm_is_at_chance() -> None:
    from medtl.comparison.stats import MeanCI
    from medtl.comparison.summary import chance_note
    from medtl.metric_specs import metric_spec

    auroc = metric_spec("auroc")
    assert auroc.chance == 0.5 and metric_spec("auroc_Effusion").chance == 0.5
    note = chance_note(auroc, MeanCI(0.519, 0.47, 0.568, 3, 0.02))
    assert note == " (at chance: AUROC 0.519, 95% CI 0.470 to 0.568 over seeds holds 0.5)"
    assert chance_note(auroc, MeanCI(0.9, 0.85, 0.95, 3, 0.02)) == ""  # well above chance
    assert chance_note(auroc, MeanCI(0.52, float("nan"), float("nan"), 1, float("nan"))) == ""  # one seed: no interval
    assert metric_spec("dice").chance is None and chance_note(metric_spec("dice"), MeanCI(0.5, 0.4, 0.6, 3, 0.1)) == ""


def test_a_compare_whose_scratch_arm_is_at_chance_says_so(tmp_path: Path, engine, run_medtl) -> None:
    import helpers.compare as fake

    real = fake.FakeEngine.__call__

    def coin_flip_scratch(self, config, *, run_dir, quiet=False):
        out = real(self, config, run_dir=run_dir, quiet=quiet)
        if config.model.weights == "scratch":  # scores that know nothing of the labels
            path = Path(run_dir) / "predictions_test.csv"
            rows = _rows(path)
            rng = np.random.default_rng(config.train.seed)
            for r in rows:
                p = float(rng.uniform())
                r["prob_negative"], r["prob_positive"] = str(1 - p), str(p)
            with open(path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        return out

    engine.__class__ = type("ChanceEngine", (fake.FakeEngine,), {"__call__": coin_flip_scratch})
    cfg = _compare_config(tmp_path)
    proc = run_medtl("compare", cfg, "--fractions", "1", "--seeds", "5", "--out", tmp_path / "cmp")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "cmp" / "results.json").read_text())
    scratch = next(r for r in data["summary"]["rows"] if r["arm"] == "scratch")["metrics"]["auroc"]
    assert scratch["low"] <= 0.5 <= scratch["high"]
    sentence = next(r for r in data["summary"]["rows"] if r["arm"] == "imagenet")["sentence"]
    assert f"scratch (at chance: AUROC {scratch['mean']:.3f}, 95% CI {scratch['low']:.3f} to " in sentence
    assert "(at chance" in (tmp_path / "cmp" / "report.md").read_text()


def test_every_option_of_every_command_has_help_and_brackets_survive(run_medtl) -> None:
    import typer

    from medtl.cli import app

    def walk(command, path):
        if hasattr(command, "commands"):  # a group: its commands
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            for param in command.params:
                yield " ".join(path), param

    missing = [
        f"{where} {'/'.join(param.opts)}"
        for where, param in walk(typer.main.get_command(app), ["medtl"])
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []
    proc = run_medtl("compare", "--help")
    assert proc.returncode == 0 and "pip install 'medtl[slurm]'" in proc.stdout


# ---------------------------------------------------------------------------------------- §5.3 a run used as weights


def test_a_run_used_as_weights_keeps_its_input(xray_run, tmp_path: Path, run_medtl) -> None:
    from medtl.errors import UnknownOptionError
    from medtl.models import weight_source_for

    first, _, cfg = xray_run
    first_pre = json.loads((first / "preprocessing.json").read_text())
    assert first_pre["normalization"]["kind"] == "imagenet" and first_pre["in_channels"] == 3
    cfg = dict(
        cfg,
        model={"arch": "resnet18", "weights": str(first / "best.ckpt")},
        preprocess={"size": [16, 16]},  # normalization: auto, what the weights say
        train=dict(cfg["train"], epochs=2),
        output={"dir": str(tmp_path / "runs"), "name": "again"},
    )
    proc = run_medtl("train", _write_yaml(tmp_path / "again.yaml", cfg))
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "runs" / "again"
    pre = json.loads((again / "preprocessing.json").read_text())
    # the first run's input: ImageNet mean/std and 3 channels, not "none" as for an anonymous file
    assert pre["normalization"] == first_pre["normalization"] and pre["in_channels"] == first_pre["in_channels"]
    report = json.loads((again / "load_report.json").read_text())
    assert report["left_random"] == [] and report["adapted"] == {} and len(report["matched"]) > 100
    assert f"from run:{first}" in report["summary"] and report["file"] == str(first / "best.ckpt")
    # the run folder itself is the same source (its best.ckpt); another architecture is refused naming the run's
    source = weight_source_for("resnet18", str(first), spatial_dims=2)
    assert source.path == str(first / "best.ckpt") and source.normalization.kind == "imagenet"
    assert source.in_channels == 3
    with pytest.raises(UnknownOptionError, match=r"run:.*has no weights for 'resnet34' \(it fits: resnet18\)"):
        weight_source_for("resnet34", str(first / "last.ckpt"), spatial_dims=2)


def test_weights_import_restores_a_local_encoder_checked_against_its_record(tmp_path: Path, run_medtl) -> None:
    import torch
    from helpers.model_states import torchvision_state
    from safetensors.torch import save_file

    from medtl.weights.local import ENCODER_FILE, RECORD_FILE, register_local_source

    state = {k: v for k, v in torchvision_state("resnet18", 0).items() if not k.startswith("fc.")}
    encoder = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(encoder))
    record = {"arch": "resnet18", "spatial_dims": 2, "in_channels": 3, "normalization": {"kind": "none"}}
    folder = register_local_source("xr-ssl", encoder, record)
    (folder / ENCODER_FILE).unlink()  # the cache lost the file (a cleaned disk, a copied MEDTL_HOME)
    # another file is refused: its SHA-256 is not the one the pretraining recorded
    other = tmp_path / "other.safetensors"
    save_file({k: (v + 1).contiguous() if v.is_floating_point() else v for k, v in state.items()}, str(other))
    line = assert_one_line_error(run_medtl("weights", "import", "local:xr-ssl", other), "other.safetensors")
    assert "local:xr-ssl" in line and "SHA-256" in line
    assert not (folder / ENCODER_FILE).exists()
    # the pretraining's own file is restored, and loads again as local:xr-ssl
    proc = run_medtl("weights", "import", "local:xr-ssl", encoder)
    assert proc.returncode == 0, proc.stderr
    assert (folder / ENCODER_FILE).read_bytes() == encoder.read_bytes()
    from medtl.models import create_model

    model = create_model("resnet18", weights="local:xr-ssl", num_classes=2)
    assert model.load_report.left_random == ["fc.weight", "fc.bias"]
    assert torch.equal(model.state_dict()["net.conv1.weight"], state["conv1.weight"])
    # with the record gone there is nothing to check a file against: re-run the pretraining
    (folder / RECORD_FILE).unlink()
    line = assert_one_line_error(run_medtl("weights", "import", "local:xr-ssl", encoder), "local:xr-ssl")
    assert "re-run the pretraining" in line
