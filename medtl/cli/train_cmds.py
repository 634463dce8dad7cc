"""``medtl train``, ``predict``, ``evaluate``, ``lr-find`` and ``config validate|show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medtl.cli.early import loading

__all__ = ["register", "train_cmd", "predict_cmd", "evaluate_cmd", "lr_find_cmd", "config_app"]

ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (YAML).")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Override train.epochs.")]
Weights = Annotated[str | None, typer.Option("--weights", help="Override model.weights (scratch, imagenet, ...).")]
Arch = Annotated[str | None, typer.Option("--arch", help="Override model.arch.")]
Devices = Annotated[int | None, typer.Option("--devices", help="Override train.devices (> 1: DDP).")]
Accelerator = Annotated[str | None, typer.Option("--accelerator", help="Override train.accelerator (cpu, gpu).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Override train.batch_size.")]
Lr = Annotated[float | None, typer.Option("--lr", help="Override train.lr.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Override train.seed.")]
Fraction = Annotated[float | None, typer.Option("--label-fraction", help="Override splits.label_fraction.")]
Output = Annotated[Path | None, typer.Option("--output", help="Override output.dir.")]
Name = Annotated[str | None, typer.Option("--name", help="Override output.name (the run folder).")]
Workers = Annotated[int | None, typer.Option("--num-workers", help="Override train.num_workers.")]
Set = Annotated[
    list[str] | None, typer.Option("--set", help="Any field: --set train.patience=3 (YAML value); repeatable.")
]


def _overrides(**kw: Any) -> dict[str, Any]:
    """CLI flags to dotted config keys; ``--set key=value`` pairs parsed as YAML values."""
    import yaml

    from medtl.errors import ConfigError

    mapping = {
        "epochs": "train.epochs",
        "weights": "model.weights",
        "arch": "model.arch",
        "devices": "train.devices",
        "accelerator": "train.accelerator",
        "batch_size": "train.batch_size",
        "lr": "train.lr",
        "seed": "train.seed",
        "label_fraction": "splits.label_fraction",
        "output": "output.dir",
        "name": "output.name",
        "num_workers": "train.num_workers",
    }
    out: dict[str, Any] = {}
    for key, value in kw.items():
        if key == "sets":
            for item in value or []:
                if "=" not in item:
                    raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.patience=3")
                k, v = item.split("=", 1)
                try:
                    out[k.strip()] = yaml.safe_load(v)
                except yaml.YAMLError as exc:
                    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
                    raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
        elif value is not None:
            out[mapping[key]] = str(value) if isinstance(value, Path) else value
    return out


def train_cmd(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment config (YAML); optional with --resume (the run's own).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the interrupted run in this folder.")
    ] = None,
    epochs: Epochs = None,
    weights: Weights = None,
    arch: Arch = None,
    devices: Devices = None,
    accelerator: Accelerator = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    seed: Seed = None,
    label_fraction: Fraction = None,
    output: Output = None,
    name: Name = None,
    num_workers: Workers = None,
    sets: Set = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a run already in the output folder (e.g. a failed one).")
    ] = False,
) -> None:
    """Fine-tune a backbone as CONFIG says; writes a run folder (metrics, checkpoints, model card)."""
    from medtl.errors import ConfigError

    if config is None and resume is None:
        raise ConfigError("give an experiment config, or --resume RUN to continue a run")
    ov = _overrides(
        epochs=epochs,
        weights=weights,
        arch=arch,
        devices=devices,
        accelerator=accelerator,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        label_fraction=label_fraction,
        output=output,
        name=name,
        num_workers=num_workers,
        sets=sets,
    )
    if resume is None:
        # the config is read and checked before torch, MONAI and Lightning are imported: a mistake costs a second
        from medtl.config import load_config

        load_config(config, ov)
    loading("train", resume or config)
    from medtl.train import fine_tune

    result = fine_tune(config, run_dir=resume, resume=resume is not None, overrides=ov, overwrite=overwrite)
    if result.status != "ok":  # a DDP worker process
        return
    typer.echo(f"run: {result.run_dir}")


def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    inputs: Annotated[list[Path], typer.Argument(help="Scan files, DICOM folders, NIfTI files or manifest CSVs.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Classification runs: the output CSV (image, patient_id, prob_<class>..., pred; default "
            "predictions.csv). Segmentation runs: a folder (default masks) that receives one NIfTI label map per "
            "input, <name>_mask.nii.gz, on the input's own grid and affine (plus <name>_seg.dcm with --dicom-seg).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Scans per batch (default: the run's train.batch_size).")
    ] = None,
    dicom_seg: Annotated[
        bool,
        typer.Option(
            "--dicom-seg",
            help="Segmentation runs with DICOM series inputs: also write each mask as a DICOM SEG (<name>_seg.dcm, "
            "one segment per foreground class) referencing the source series. The SEG is for the source's own "
            "archive: it carries the source's patient data (name, ID, birth date), as DICOM requires for it to file "
            "with its study (see --deidentify).",
        ),
    ] = False,
    deidentify: Annotated[
        bool,
        typer.Option(
            "--deidentify",
            help="With --dicom-seg: write each SEG pseudonymised, to leave the hospital: PatientID and PatientName "
            "become medtl's keyed pseudonym, birth date, sex, age, accession number and study date are empty, other "
            "patient and study data removed; the UIDs stay, so the SEG still references its source series.",
        ),
    ] = False,
    saliency: Annotated[
        str | None,
        typer.Option(
            "--saliency",
            metavar="gradcam|gradcampp|occlusion",
            help="Classification runs: also write where the model looks, into a folder saliency/ next to the CSV: "
            "<name>_saliency.nii.gz (a heat map from 0 to 1 on the scan's own grid and affine) and "
            "<name>_saliency.png (the scan with the map over it). gradcam: Grad-CAM at the architecture's last "
            "stage (the usual choice); gradcampp: Grad-CAM++; occlusion: the drop in probability when patches are "
            "hidden (model-agnostic, slower).",
        ),
    ] = None,
    saliency_class: Annotated[
        str | None,
        typer.Option(
            "--saliency-class",
            metavar="NAME",
            help="With --saliency: the class every map explains (default: each scan's predicted class).",
        ),
    ] = None,
) -> None:
    """Per-scan class probabilities (classification runs) or one mask per scan (segmentation runs), with the run's
    own preprocessing."""
    from medtl.rundir import RunDir

    RunDir(run_dir).checkpoint_for_inference()  # a folder that is not a finished run: one line, before the imports
    loading("predict", run_dir)
    from medtl.train import predict
    from medtl.train.predict import default_output

    out = out or default_output(run_dir)
    rows = predict(
        run_dir,
        list(inputs),
        out=out,
        batch_size=batch_size,
        dicom_seg=dicom_seg,
        deidentify=deidentify,
        saliency=saliency,
        saliency_class=saliency_class,
    )
    if rows and "mask_file" in rows[0]:
        extra = " and DICOM SEG" if dicom_seg else ""
        typer.echo(f"{len(rows)} scan(s) -> NIfTI masks{extra} in {out}")
    else:
        typer.echo(f"{len(rows)} scan(s) -> {out}")
    if rows and "saliency_png" in rows[0]:
        typer.echo(f"saliency maps ({saliency}) -> {Path(rows[0]['saliency_png']).parent}")


def evaluate_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A finished run folder, or a comparison folder (every finished run is evaluated and the comparison's "
            "verdict repeated on the manifest's patients)."
        ),
    ],
    manifest: Annotated[
        Path,
        typer.Argument(
            help="A labelled manifest CSV; every row is evaluated. Segmentation runs: image, mask (NIfTI label map "
            "or DICOM SEG), patient_id."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the predictions CSV here (segmentation: per-scan metrics, and per-patient means in "
            "<stem>_patients.csv next to it). A comparison folder: the folder of its external report (default "
            "<compare dir>/external-<manifest name>/).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    allow_seen: Annotated[
        bool,
        typer.Option(
            "--allow-seen",
            help="Score rows of the run's own training/validation patients separately instead of refusing.",
        ),
    ] = False,
    grid: Annotated[
        str,
        typer.Option(
            "--grid",
            help="Segmentation: score on each scan's own grid ('native', the masks predict writes) or on the "
            "model's resampled grid ('preprocessed', as the run's validation metrics).",
        ),
    ] = "native",
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write a self-contained report.html (metrics with 95% patient-bootstrap intervals, a table per site "
            "when the manifest has a site column, ROC, reliability diagram and confusion matrix for classification), "
            "report.md, evaluation.json and plots/ into this folder.",
        ),
    ] = None,
) -> None:
    """Metrics of a run on a labelled manifest (patients the run has not seen), each with a 95% patient-bootstrap
    interval: accuracy, AUROC... for classification; Dice, HD95 and surface Dice per scan, per patient and overall
    for segmentation. Given a comparison folder, every finished run is evaluated and the verdict repeated
    (external_report.html, results_external.json/.csv)."""
    from medtl.comparison.external import is_comparison_dir
    from medtl.rundir import RunDir

    comparison = is_comparison_dir(run_dir)
    if not comparison:
        RunDir(run_dir).checkpoint_for_inference()  # not a finished run: one line, before the imports
    loading("evaluate", run_dir, quiet=as_json)
    from medtl.comparison.external import evaluate_run

    if comparison:
        _evaluate_comparison(run_dir, manifest, out or report, allow_seen=allow_seen, grid=grid, as_json=as_json)
        return
    m = evaluate_run(run_dir, manifest, out=out, allow_seen=allow_seen, grid=grid, report=report)
    if as_json:
        from medtl.rundir import json_clean

        typer.echo(json.dumps(json_clean(m)))
    else:
        from medtl.train.scoring import describe_evaluation

        for line in describe_evaluation(m):
            typer.echo(line)


def _evaluate_comparison(
    compare_dir: Path, manifest: Path, out: Path | None, *, allow_seen: bool, grid: str, as_json: bool
) -> None:
    """``medtl evaluate COMPARE_DIR manifest.csv``: every run of the comparison, and its verdict, on the manifest."""
    from medtl.comparison.external import evaluate_comparison

    ext = evaluate_comparison(
        compare_dir,
        manifest,
        out=out,
        allow_seen=allow_seen,
        grid=grid,
        on_event=None if as_json else (lambda msg: typer.echo(msg)),
    )
    if as_json:
        from medtl.rundir import json_clean

        typer.echo(json.dumps(json_clean(ext.summary.to_dict())))
        return
    typer.echo("verdict on the external patients:")
    for sentence in ext.sentences():
        typer.echo(f"- {sentence}")
    typer.echo(
        f"report: {ext.report_html}  (also {ext.report_md.name}, {ext.results_json.name}, {ext.results_csv.name})"
    )


def lr_find_cmd(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", help="PNG plot of loss against learning rate.")] = Path("lr_find.png"),
    min_lr: Annotated[float, typer.Option("--min-lr", help="Learning rate of the first step of the test.")] = 1e-6,
    max_lr: Annotated[
        float, typer.Option("--max-lr", help="Learning rate of the last step (the rate grows geometrically).")
    ] = 1.0,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps of the range test.")] = 60,
    weights: Weights = None,
    arch: Arch = None,
    batch_size: BatchSize = None,
    sets: Set = None,
) -> None:
    """Learning-rate range test: prints a suggested train.lr and writes a plot."""
    from medtl.config import load_config

    ov = _overrides(weights=weights, arch=arch, batch_size=batch_size, sets=sets)
    load_config(config, ov)  # a config mistake: one line, before the imports
    loading("lr-find", config)
    from medtl.train import lr_find

    res = lr_find(config, min_lr=min_lr, max_lr=max_lr, num_steps=steps, out=out, overrides=ov)
    typer.echo(f"suggested lr: {res.suggestion:.3g}  (plot: {res.plot})")


config_app = typer.Typer(help="Check or print an experiment, comparison or pretraining config.", no_args_is_help=True)


#: top-level keys only a pretraining config has
_PRETRAIN_KEYS = ("method", "views", "simclr", "genesis", "knn")


def _load_any(config: Path, sets: list[str] | None) -> Any:
    """An experiment, comparison (a ``compare`` section) or pretraining config (a ``method``, ``views``, ``simclr``,
    ``genesis`` or ``knn`` section, or ``data.folder``), validated by its own schema."""
    from medtl.comparison.compare_config import load_any_config
    from medtl.config import read_config_file

    overrides = _overrides(sets=sets)
    raw = read_config_file(Path(config).expanduser())
    data = raw.get("data")
    if (
        any(key in raw for key in _PRETRAIN_KEYS)
        or "method" in overrides
        or (isinstance(data, dict) and "folder" in data)  # unlabeled scans: only pretraining reads a folder
    ):
        from medtl.pretraining.config import load_pretrain_config

        return load_pretrain_config(config, overrides)
    return load_any_config(config, overrides)


@config_app.command("validate")
def config_validate(config: ConfigArg, sets: Set = None) -> None:
    """Check CONFIG (an experiment, a comparison with a compare section, or a pretraining config with a method):
    unknown fields and bad values are reported with their path and the allowed values; the manifest's header must
    hold the columns the config names (data.image_column...)."""
    from medtl.comparison.compare_config import CompareConfig, default_arms
    from medtl.config.loading import check_manifest_columns
    from medtl.pretraining.config import PretrainConfig

    cfg = _load_any(config, sets)
    if isinstance(cfg, PretrainConfig):
        start = cfg.model.weights
        typer.echo(f"{config}: ok (pretraining {cfg.method}, {cfg.model.arch} from {start}, {cfg.train.epochs} epochs)")
        return
    if isinstance(cfg, CompareConfig):
        exp, comp = cfg.experiment, cfg.compare
        check_manifest_columns(exp)
        arms = ", ".join(a.name for a in (comp.arms if comp.arms is not None else default_arms(exp)))
        typer.echo(
            f"{config}: ok (compare {arms}; {comp.seeds} seeds, fractions {comp.fractions}, "
            f"primary metric {comp.primary_metric}, checkpoint on {exp.train.monitor}; "
            f"{exp.model.arch}, {exp.train.epochs} epochs)"
        )
        return
    check_manifest_columns(cfg)
    typer.echo(f"{config}: ok ({cfg.model.arch}, weights {cfg.model.weights}, {cfg.train.epochs} epochs)")


@config_app.command("show")
def config_show(config: ConfigArg, sets: Set = None) -> None:
    """Print CONFIG (an experiment, a comparison or a pretraining config) with every default filled in."""
    import yaml

    from medtl.comparison.compare_config import CompareConfig, compare_config_to_yaml
    from medtl.config import config_to_yaml
    from medtl.pretraining.config import PretrainConfig

    cfg = _load_any(config, sets)
    if isinstance(cfg, PretrainConfig):
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    else:
        text = compare_config_to_yaml(cfg) if isinstance(cfg, CompareConfig) else config_to_yaml(cfg)
    typer.echo(text, nl=False)


def pretrain_cmd(
    config: Annotated[Path | None, typer.Argument(help="Pretraining config (YAML); optional with --resume.")] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the interrupted pretraining run in this folder (its own config)."),
    ] = None,
    epochs: Epochs = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Override model.weights (where pretraining starts).")
    ] = None,
    arch: Arch = None,
    devices: Devices = None,
    accelerator: Accelerator = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    seed: Seed = None,
    output: Output = None,
    name: Name = None,
    num_workers: Workers = None,
    sets: Set = None,
) -> None:
    """Pretrain an encoder on unlabeled scans (SimCLR or Models Genesis); registers it as weights local:<name>."""
    from medtl.errors import ConfigError

    ov = _overrides(
        epochs=epochs,
        weights=weights,
        arch=arch,
        devices=devices,
        accelerator=accelerator,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        output=output,
        name=name,
        num_workers=num_workers,
        sets=sets,
    )
    if config is None and resume is None:
        raise ConfigError("give a pretraining config, or --resume RUN to continue a run")
    if resume is None:
        from medtl.pretraining.config import load_pretrain_config

        load_pretrain_config(config, ov)  # a config mistake: one line, before the imports
    loading("pretrain", resume or config)
    from medtl.pretraining import pretrain

    result = pretrain(config, run_dir=resume, resume=resume is not None, overrides=ov)
    if result.status != "ok":  # a DDP worker process
        return
    typer.echo(f"run: {result.run_dir}\nuse it as model.weights: {result.weights}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("train")(train_cmd)
    app.command("pretrain")(pretrain_cmd)
    app.command("predict")(predict_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("lr-find")(lr_find_cmd)
    app.add_typer(config_app, name="config")
