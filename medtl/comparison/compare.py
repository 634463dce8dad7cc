"""``medtl compare``: pretrained vs scratch, over arms, seeds and label fractions, on the same patients.

A comparison is a normal experiment config plus a ``compare`` section::

    data: {manifest: ../sample_data/xray/manifest.csv}
    model: {arch: mobilenet_v2}
    train: {epochs: 6}
    compare:
      arms:
        - {name: imagenet, model: {weights: imagenet}}
        - {name: scratch, model: {weights: scratch}}
      seeds: 3
      fractions: [0.1, 0.25, 0.5, 1.0]
      primary_metric: auroc

A config with a ``segmentation`` section compares segmentation runs: ``primary_metric`` is then ``dice``
(default), ``hd95`` (mm, lower is better) or ``surface_dice``, each computed per scan over the foreground
classes, averaged per patient and then over patients (:mod:`medtl.comparison.patient_values`); the report
adds each arm's example overlays.

How it stays fair: the train/val/test split by patient is made once and written to
``<compare dir>/splits.csv``; every run reuses it, so all arms are validated and tested on exactly the
same patients. For each seed and label fraction every arm trains on the same (stratified, nested)
subset of training patients, for the same number of epochs. Pretrained arms use the fine_tune schedule,
scratch the one-cycle schedule from the start (unless an arm says otherwise).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medtl.comparison.compare_config import (
    ArmConfig,
    ArmModel,
    CompareConfig,
    CompareSection,
    arm_spec,
    default_arms,
    load_compare_config,
)
from medtl.comparison.launch import Job, config_key, execute, is_finished, slurm_executor, train_run
from medtl.comparison.metric_specs import check_metric_for_task, default_metric, metric_spec
from medtl.comparison.report import ReportFiles, write_report
from medtl.comparison.results import Arm, CompareResults, RunRecord, record_from_run_dir
from medtl.comparison.summary import Summary, summarize
from medtl.errors import ConfigError, TrainingError
from medtl.train.experiment import read_manifest
from medtl.train.rundir import RunDir

__all__ = [
    "ArmModel",
    "ArmConfig",
    "CompareSection",
    "CompareConfig",
    "ComparisonReport",
    "load_compare_config",
    "default_arms",
    "compare",
    "run_dir_for",
    "slurm_executor",
    "train_run",
]


def _write_shared_splits(experiment: Any, compare_dir: Path) -> Path:
    """Make the train/val/test split by patient once, for every arm; reuse it when it already exists."""
    from medtl.data.splits import make_splits, patient_labels, read_splits_csv, write_splits_csv

    target = compare_dir / "splits.csv"
    manifest = read_manifest(experiment)
    if experiment.splits.file is not None:
        src = Path(experiment.splits.file)
        if src.resolve() != target.resolve():
            read_splits_csv(src)  # validate before copying
            shutil.copyfile(src, target)
        return target
    if target.is_file():
        return target
    s = experiment.splits
    assignment = make_splits(
        manifest, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction, folds=s.folds, fold=s.fold
    )
    labels = {p: manifest.classes[i] for p, i in patient_labels(manifest).items()}
    write_splits_csv(target, assignment, labels)
    return target


# --------------------------------------------------------------------------------------------- runs


def run_dir_for(compare_dir: Path, arm: str, seed: int, fraction: float) -> Path:
    """``<compare dir>/runs/<arm>/frac<fraction>-seed<seed>``."""
    return Path(compare_dir) / "runs" / arm / f"frac{fraction:g}-seed{seed}"


def _run_config(experiment: Any, arm: Arm, seed: int, fraction: float, splits_file: Path, run_dir: Path) -> Any:
    from medtl.config import load_config

    overrides: dict[str, Any] = {
        "model.arch": arm.arch,
        "model.weights": arm.weights,
        "model.in_channels": arm.in_channels,
        "train.schedule": arm.schedule,
        "train.seed": seed,
        "splits.seed": seed,
        "splits.label_fraction": fraction,
        "splits.file": str(splits_file),
        "output.dir": str(run_dir.parent),
        "output.name": run_dir.name,
    }
    if arm.mode and arm.mode != "auto":
        overrides["data.mode"] = arm.mode
    overrides.update(arm.overrides)
    return load_config(experiment.to_dict(), overrides)


def _merge_provenance(arm: Arm, run: RunDir) -> None:
    """Fill the arm's provenance and load report with what the run recorded about the weights it really loaded."""
    weights = run.read_result().get("weights") or {}
    for key in ("source", "license", "citation", "file", "sha256", "verified", "url", "normalization"):
        if weights.get(key) is not None and not arm.provenance.get(key):
            arm.provenance[key] = weights[key]
    if not arm.load_report:
        arm.load_report = str(run.read_load_report().get("summary", ""))


# errors that every run of an arm would repeat: stop at the first instead of failing each run the same way
_SETUP_ERRORS = (
    "WeightsNotAvailableError",
    "HashMismatchError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "UnknownOptionError",
    "ConfigError",
)


def _fatal_error(_: Any, results: CompareResults) -> str | None:
    """Why the comparison cannot go on or be read: an arm failing on its setup, or no run finishing at all."""
    for rec in results.runs:
        if not rec.ok and rec.status == "failed" and str(rec.error or "").startswith(_SETUP_ERRORS):
            return f"arm {rec.arm!r} cannot train: {rec.error}"
    if results.runs and len(results.runs) == len(results.seeds) * len(results.fractions) * len(results.arms):
        if not any(r.ok for r in results.runs):
            return f"every run failed; the first: {results.runs[0].error}"
    return None


@dataclass
class ComparisonReport:
    """What :func:`compare` returns: the results, their summary and the files written."""

    results: CompareResults
    summary: Summary
    compare_dir: Path
    files: ReportFiles

    @property
    def report(self) -> Path:
        return self.files.report_html

    def sentences(self) -> list[str]:
        return [r.sentence for r in self.summary.rows if r.sentence]


def compare(
    config: str | Path | dict[str, Any] | CompareConfig,
    *,
    out_dir: str | Path | None = None,
    seeds: int | None = None,
    fractions: list[float] | None = None,
    arms: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    on_event: Callable[[str], None] | None = None,
    parallel: int = 1,
    launcher: Any = "local",
) -> ComparisonReport:
    """Train every (arm, seed, label fraction) and write the comparison report.

    Args:
        config: a comparison config (YAML path, dict or :class:`CompareConfig`).
        out_dir: comparison folder (default: ``compare.dir``, else ``<output.dir>/compare-<name>``).
        seeds: number of seeds (overrides ``compare.seeds``).
        fractions: label fractions (override ``compare.fractions``).
        arms: names of the arms to run (default: all).
        overrides: experiment overrides by dotted key (``{"train.epochs": 2}``).
        on_event: called with a one-line message as runs start, finish, fail or are skipped.
        parallel: runs trained at once on this machine, each in its own process with ``cores / parallel``
            threads and, on a machine with as many GPUs, its own GPU (``launcher="local"``).
        launcher: ``"local"``, or a ``submitit`` executor (``submitit.AutoExecutor(folder=...)`` configured for
            SLURM, or ``submitit.LocalExecutor``): each run becomes one job; see :func:`slurm_executor`.

    Returns:
        A :class:`ComparisonReport`; ``results.json``, ``results.csv``, ``report.md``, ``report.html`` and
        the plots are in its ``compare_dir``. Finished runs are skipped when called again; a run that
        fails is recorded with its error and the others go on; after Ctrl-C, the runs finished so far
        are in ``results.json`` and the report.
    """
    say = on_event or (lambda msg: None)
    comp_over = {k: v for k, v in (overrides or {}).items() if k.startswith("compare.")}
    exp_over = {k: v for k, v in (overrides or {}).items() if not k.startswith("compare.")}
    if seeds is not None:
        comp_over["compare.seeds"] = seeds
    if fractions is not None:
        comp_over["compare.fractions"] = list(fractions)
    if isinstance(config, CompareConfig) and not (comp_over or exp_over):
        cfg = config
    else:
        cfg = load_compare_config(config, {**exp_over, **comp_over})
    experiment, section = cfg.experiment, cfg.compare
    task = "segmentation" if experiment.segmentation is not None else "classification"
    if section.primary_metric is None:  # a CompareConfig built by hand; load_compare_config fills it in
        section.primary_metric = default_metric(task)
    check_metric_for_task(section.primary_metric, task)
    arm_cfgs = section.arms if section.arms is not None else default_arms(experiment)
    names = [a.name for a in arm_cfgs]
    if len(set(names)) != len(names):
        raise ConfigError(f"arm names must be unique (got {names})")
    if arms:
        unknown = [a for a in arms if a not in names]
        if unknown:
            raise ConfigError(f"unknown arm(s) {unknown}; the config's arms are: {', '.join(names)}")
        arm_cfgs = [a for a in arm_cfgs if a.name in arms]
    if section.reference not in [a.name for a in arm_cfgs]:
        raise ConfigError(
            f"the reference arm {section.reference!r} is not among the arms ({', '.join(a.name for a in arm_cfgs)});"
            " add a scratch arm or set compare.reference"
        )
    if out_dir is not None:
        compare_dir = Path(out_dir)
    elif section.dir is not None:
        compare_dir = Path(section.dir)
    else:
        compare_dir = Path(experiment.output.dir) / f"compare-{experiment.output.name or experiment.model.arch}"
    # absolute, so the splits.file written into each run's config.yaml still resolves from the run folder
    compare_dir = compare_dir.expanduser().resolve()
    compare_dir.mkdir(parents=True, exist_ok=True)
    (compare_dir / "compare_config.yaml").write_text(
        yaml.safe_dump(
            {**experiment.to_dict(), "compare": section.model_dump(mode="json")}, sort_keys=False, allow_unicode=True
        )
    )
    splits_file = _write_shared_splits(experiment, compare_dir)
    specs = [arm_spec(a, experiment) for a in arm_cfgs]
    if experiment.segmentation is not None:
        classes = list(experiment.segmentation.classes)
    else:
        classes = list(experiment.data.classes or read_manifest(experiment, check_files=False).classes)
    seed_list = list(range(section.seeds))
    results = CompareResults(
        arms=specs,
        runs=[],
        classes=classes,
        seeds=seed_list,
        fractions=list(section.fractions),
        primary_metric=section.primary_metric,
        reference=section.reference,
        config={**experiment.to_dict(), "compare": section.model_dump(mode="json")},
        compare_dir=str(compare_dir),
        task=task,
    )
    # fractions outermost: an interrupted comparison has all arms at the first fractions
    plan = [(arm, seed, f) for f in section.fractions for seed in seed_list for arm in specs]
    jobs: list[Job] = []
    failed: dict[int, RunRecord] = {}
    for i, (arm, seed, fraction) in enumerate(plan):
        run_dir = run_dir_for(compare_dir, arm.name, seed, fraction)
        tag = f"[{i + 1}/{len(plan)}] {arm.name} seed {seed} {fraction * 100:g}% labels"
        try:
            run_cfg = _run_config(experiment, arm, seed, fraction, splits_file, run_dir)
        except ConfigError as exc:
            failed[i] = RunRecord(arm.name, seed, fraction, "failed", f"ConfigError: {exc}", str(run_dir))
            say(f"{tag}: FAILED: {exc}")
            continue
        key = config_key(run_cfg)
        if is_finished(RunDir(run_dir), key):
            say(f"{tag}: finished earlier, reusing {run_dir}")
        else:
            jobs.append(Job(i, tag, run_cfg.to_dict(), str(run_dir), key))

    def record(i: int, seconds: float | None = None) -> None:
        arm, seed, fraction = plan[i]
        run_dir = run_dir_for(compare_dir, arm.name, seed, fraction)
        rec = record_from_run_dir(run_dir, arm=arm.name, seed=seed, fraction=fraction, classes=classes, task=task)
        if seconds is not None and rec.seconds is None:
            rec.seconds = seconds
        _merge_provenance(arm, RunDir(run_dir))
        results.runs.append(rec)
        tag = f"[{i + 1}/{len(plan)}] {arm.name} seed {seed} {fraction * 100:g}% labels"
        if rec.ok:
            spec = metric_spec(section.primary_metric)
            value = spec.amount(rec.test_metrics.get(section.primary_metric, float("nan")))
            say(f"{tag}: done, test {section.primary_metric} per patient {value}")
        else:
            say(f"{tag}: FAILED: {rec.error}")
        results.runs.sort(key=lambda r: _order[(r.arm, r.seed, r.fraction)])
        results.write_json(compare_dir / "results.json")
        results.write_csv(compare_dir / "results.csv")

    _order = {(a.name, sd, f): k for k, (a, sd, f) in enumerate(plan)}
    results.runs.extend(failed.values())
    pending = {j.index for j in jobs}
    for i in range(len(plan)):
        if i not in pending and i not in failed:
            record(i)
    interrupted = False
    try:
        for i, seconds in execute(jobs, parallel=parallel, launcher=launcher, say=say):
            record(i, seconds)
            fatal = _fatal_error(results.runs[-1] if results.runs else None, results)
            if fatal:
                break
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: writing the report of the runs finished so far")
    summary = summarize(results, n_resamples=section.n_resamples)
    files = write_report(results, compare_dir, summary=summary)
    if interrupted:
        raise KeyboardInterrupt(
            f"partial report of the finished runs: {files.report_html}; run the same command again to go on"
        )
    fatal = _fatal_error(None, results)
    if fatal:
        raise TrainingError(f"{fatal}; the report of what finished is {files.report_html}")
    return ComparisonReport(results, summary, compare_dir, files)
