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

Folds instead of (or with) seeds: ``compare.repeat: folds`` trains each arm once per cross-validation fold of
``splits.folds`` (seed 0), ``both`` once per seed and fold. A stratified test set is held out first and the other
patients are dealt into the folds (:func:`medtl.data.splits.make_splits`); ``splits_fold<k>.csv`` holds fold ``k``'s
split, so every fold's model is tested on the same test patients and the per-fold differences pair up as the
per-seed ones do. Their intervals are Nadeau and Bengio's corrected resampled t
(:func:`medtl.comparison.stats.paired_difference`).

How it stays whole: every finished run is kept. Running ``compare`` again reuses each finished run whose reuse
record (:mod:`medtl.comparison.launch`: config, manifest, splits, pseudonym secret, weights file) is unchanged, and
retrains unfinished ones. A comparison whose finished runs or splits would change (another ``train.lr``, edited
labels, another ``splits.test_fraction``, another pseudonym secret...) is refused before anything is written, with
the fields that changed; ``replace=True`` (``--replace``) moves the old runs, splits and report to
``<compare dir>/superseded/<UTC time>/`` and trains the changed runs again. ``splits.json`` records what the shared
splits.csv was made from. The folder's ``.lock`` refuses a second ``compare`` on it while the first lives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from medtl.comparison.compare_config import (
    ArmConfig,
    ArmModel,
    CompareConfig,
    CompareSection,
    arm_spec,
    compare_overrides,
    default_arms,
    load_compare_config,
)
from medtl.comparison.launch import (
    Job,
    RunInputs,
    execute,
    file_sha256,
    is_finished,
    key_changes,
    key_record,
    read_key_record,
    show_value,
    slurm_executor,
    train_run,
    weights_sha256,
)
from medtl.comparison.report import ReportFiles, write_report
from medtl.comparison.results import Arm, CompareResults, RunRecord, record_from_run_dir
from medtl.comparison.summary import Summary, schedule_warnings, summarize
from medtl.errors import ConfigError, MedtlError, TrainingError
from medtl.metric_specs import check_metric_for_task, default_metric, metric_spec
from medtl.rundir import RunDir, RunLockedError, folder_lock, lock_holder
from medtl.tasks import task_class
from medtl.train.experiment import pseudonym_check
from medtl.utils import atomic_write_bytes

__all__ = [
    "ArmModel",
    "ArmConfig",
    "CompareSection",
    "CompareConfig",
    "ComparisonReport",
    "ComparisonChangedError",
    "load_compare_config",
    "default_arms",
    "compare",
    "run_dir_for",
    "slurm_executor",
    "train_run",
    "check_not_held",
    "fold_splits",
]


SPLITS_FILE = "splits.csv"
#: the split of fold ``k`` with ``compare.repeat: folds`` or ``both`` (in place of splits.csv)
FOLD_SPLITS_FILE = "splits_fold{fold}.csv"
#: what the shared splits.csv was made from, beside it
SPLITS_RECORD = "splits.json"
#: where ``replace=True`` moves an old comparison, under a folder named by the UTC time
SUPERSEDED = "superseded"
#: the comparison's own files, moved aside with the runs they describe
_REPORT_FILES = ("compare_config.yaml", "results.json", "results.csv", "report.md", "report.html", "plots", "overlays")
#: changes a refusal lists before "and N more"
_SHOWN_CHANGES = 8


class ComparisonChangedError(ConfigError):
    """The comparison folder holds finished runs or splits made from other settings."""


def _render_splits(experiment: Any, manifest: Any, fold: int | None = None) -> bytes:
    """The shared splits.csv's bytes: a copy of ``splits.file``, else the split by patient of the manifest (with the
    strata of the experiment's task); with ``fold``, that fold's split of ``splits.folds``."""
    from medtl.data.splits import read_splits_csv, write_splits_csv

    if experiment.splits.file is not None:
        src = Path(experiment.splits.file)
        read_splits_csv(src)  # validate before using it
        return src.read_bytes()
    task = task_class(experiment.task)
    records = task.records(experiment, manifest)
    splits = experiment.splits if fold is None else experiment.splits.model_copy(update={"fold": fold})
    assignment = task.make_splits(records, splits)
    with tempfile.TemporaryDirectory(prefix="medtl-splits-") as tmp:  # nothing is written in the comparison yet
        path = Path(tmp) / SPLITS_FILE
        write_splits_csv(path, assignment, task.split_label_text(records))
        return path.read_bytes()


def fold_splits(experiment: Any, manifest: Any) -> list[bytes]:
    """The splits.csv of each cross-validation fold of ``splits.folds`` (fold ``k`` validates on the ``k``-th part):
    one stratified test set held out for every fold, the other patients dealt into the folds.

    Raises:
        ConfigError: ``splits.folds`` is not set, ``splits.file`` is, or the manifest has a ``split`` column (each
            would fix one split for every fold).
    """
    s = experiment.splits
    if s.folds is None:
        raise ConfigError("cross-validation needs splits.folds (the number of folds)", fix="set splits.folds: 5")
    if s.file is not None:
        raise ConfigError(
            f"splits.file {s.file} fixes one split for every fold; cross-validation deals the patients into folds "
            "itself",
            fix="remove splits.file",
        )
    task = task_class(experiment.task)
    records = task.records(experiment, manifest)
    given = [r for r in records if str(r.get("split") or "").strip()]
    if given:
        raise ConfigError(
            f"manifest {experiment.data.manifest} has a split column (row {given[0].get('row', '?')}), which fixes "
            "one split for every fold",
            path=str(experiment.data.manifest),
            fix="remove the split column (or empty it) to cross-validate",
        )
    return [_render_splits(experiment, manifest, fold) for fold in range(s.folds)]


def _splits_record(experiment: Any, manifest_sha256: str, check: str, repeat: str = "seeds") -> dict[str, Any]:
    """What the shared splits.csv is made from (recorded in splits.json, without its own hash); with folds
    (``repeat``), what the ``splits_fold<k>.csv`` are made from."""
    s = experiment.splits
    record: dict[str, Any] = {"manifest_sha256": manifest_sha256, "pseudonym_check": check}
    if s.file is not None:
        src = Path(s.file)
        record |= {"file": str(src.resolve()), "file_sha256": file_sha256(src) if src.is_file() else None}
    else:
        record |= {"seed": s.seed, "val_fraction": s.val_fraction, "test_fraction": s.test_fraction}
        record |= {"folds": s.folds, "fold": s.fold}
    if repeat != "seeds":  # (absent for seeds, so the records of earlier comparisons still match)
        record |= {"repeat": repeat, "fold": None}
    return record


def _split_files(compare_dir: Path, folds: list[int | None]) -> dict[int | None, Path]:
    """The shared split of each fold (``None``: the one splits.csv of a comparison over seeds)."""
    return {k: compare_dir / (SPLITS_FILE if k is None else FOLD_SPLITS_FILE.format(fold=k)) for k in folds}


def _splits_changes(
    compare_dir: Path, wanted: dict[str, Any], files: dict[int | None, Path] | None = None
) -> list[str]:
    """How the comparison's splits.csv (or fold splits) differs from the one these settings make, in words."""
    files = files or {None: compare_dir / SPLITS_FILE}
    csv_path, json_path = next(iter(files.values())), compare_dir / SPLITS_RECORD
    if not csv_path.is_file():
        folds_made = any(compare_dir.glob(FOLD_SPLITS_FILE.format(fold="*")))
        if (compare_dir / SPLITS_FILE).is_file() or folds_made:  # made for the other kind of repetition
            before = "folds or both" if folds_made else "seeds"
            return [f"compare.repeat: {before} -> {wanted.get('repeat') or 'seeds'}"]
        return []
    try:
        old = json.loads(json_path.read_text())
    except FileNotFoundError:
        return ["made by an older medtl"]
    except (OSError, ValueError):
        return [f"{SPLITS_RECORD} unreadable"]
    if not isinstance(old, dict):
        return [f"{SPLITS_RECORD} unreadable"]
    changes = []
    if old.get("pseudonym_check") != wanted["pseudonym_check"]:
        changes.append("pseudonym secret")
    if old.get("manifest_sha256") != wanted["manifest_sha256"]:
        changes.append("manifest content")
    for k in ("file", "seed", "val_fraction", "test_fraction", "folds", "fold", "repeat"):
        if old.get(k) != wanted.get(k):
            name = "compare.repeat" if k == "repeat" else f"splits.{k}"
            changes.append(f"{name}: {show_value(old.get(k))} -> {show_value(wanted.get(k))}")
    if old.get("file") == wanted.get("file") and old.get("file_sha256") != wanted.get("file_sha256"):
        changes.append("splits.file content")
    if None in files:
        if old.get("splits_sha256") != file_sha256(csv_path):
            changes.append(f"{SPLITS_FILE} edited since it was made")
        return changes
    made = old.get("fold_sha256") or {}
    for path in files.values():
        if not path.is_file() or made.get(path.name) != file_sha256(path):
            changes.append(f"{path.name} {'edited since it was made' if path.is_file() else 'missing'}")
    return changes


def _manifest_sha256(experiment: Any) -> str:
    path = Path(experiment.data.manifest)
    return file_sha256(path) if path.is_file() else str(path)


def _superseded_dir(compare_dir: Path) -> Path:
    """``<compare dir>/superseded/<UTC time>``, a new folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest, n = compare_dir / SUPERSEDED / stamp, 1
    while dest.exists():
        n += 1
        dest = compare_dir / SUPERSEDED / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    return dest


def _supersede(compare_dir: Path, runs: list[Path], *, splits: bool) -> Path:
    """Move the old comparison aside, never deleting it: the given run folders (every run when ``splits``, as they
    all used the old splits), the report and results, and the splits (moved when ``splits``, else copied)."""
    dest = _superseded_dir(compare_dir)
    moving = [compare_dir / "runs"] if splits else runs
    for path in moving:
        if path.exists():
            target = dest / path.relative_to(compare_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))
    split_names = (
        SPLITS_FILE,
        SPLITS_RECORD,
        *sorted(p.name for p in compare_dir.glob(FOLD_SPLITS_FILE.format(fold="*"))),
    )
    for name in _REPORT_FILES + (split_names if splits else ()):
        if (compare_dir / name).exists():
            shutil.move(str(compare_dir / name), str(dest / name))
    if not splits:
        for name in split_names:
            if (compare_dir / name).is_file():
                shutil.copy2(compare_dir / name, dest / name)
    return dest


def _refusal(compare_dir: Path, changes: list[str]) -> ComparisonChangedError:
    shown = ", ".join(changes[:_SHOWN_CHANGES])
    if len(changes) > _SHOWN_CHANGES:
        shown += f" and {len(changes) - _SHOWN_CHANGES} more"
    return ComparisonChangedError(
        f"comparison {compare_dir} holds runs made with other settings ({shown}); nothing was changed",
        path=str(compare_dir),
        fix=f"pass --out NEW_DIR (out_dir=) for a new comparison beside it, or --replace (replace=True) to move the "
        f"old runs, splits and report to {compare_dir / SUPERSEDED}/<time>/ and train the changed runs again",
    )


def check_not_held(folders: list[Path]) -> None:
    """Refuse to touch a run folder another live process holds (e.g. ``medtl train --resume`` on it).

    Raises:
        RunLockedError: one of them is held.
    """
    for folder in folders:
        holder = lock_holder(folder / RunDir.LOCK)
        if holder is not None:
            raise RunLockedError(
                f"run folder {folder} is in use by process {holder}; compare changed nothing",
                path=str(folder),
                fix="wait for that process to end (a process on another machine that is gone: delete its .lock)",
            )


# --------------------------------------------------------------------------------------------- runs


def run_dir_for(compare_dir: Path, arm: str, seed: int, fraction: float, fold: int | None = None) -> Path:
    """``<compare dir>/runs/<arm>/frac<fraction>-seed<seed>`` (``...-seed<seed>-fold<fold>`` for a fold)."""
    tail = "" if fold is None else f"-fold{fold}"
    return Path(compare_dir) / "runs" / arm / f"frac{fraction:g}-seed{seed}{tail}"


def _run_config(
    experiment: Any, arm: Arm, seed: int, fraction: float, splits_file: Path, run_dir: Path, fold: int | None = None
) -> Any:
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
    if fold is not None:  # the split is the file's; the config says which fold it is
        overrides["splits.fold"] = fold
    if arm.mode and arm.mode != "auto":
        overrides["data.mode"] = arm.mode
    overrides.update(arm.overrides)
    return load_config(experiment.to_dict(), overrides)


def _merge_provenance(arm: Arm, run: RunDir) -> None:
    """Fill the arm's provenance and load report with what the run recorded about the weights it really loaded, and
    the parameter count of its network."""
    result = run.read_result()
    weights = result.get("weights") or {}
    for key in ("source", "license", "citation", "file", "sha256", "verified", "url", "normalization"):
        if weights.get(key) is not None and not arm.provenance.get(key):
            arm.provenance[key] = weights[key]
    if result.get("n_parameters") is not None and arm.provenance.get("n_parameters") is None:
        arm.provenance["n_parameters"] = int(result["n_parameters"])
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
    planned = len(results.seeds) * len(results.fractions) * len(results.arms) * max(1, len(results.folds))
    if results.runs and len(results.runs) == planned:
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
        """Every verdict: against the reference, then against each ``also_against`` arm."""
        return self.summary.sentences()


def default_compare_dir(experiment: Any) -> Path:
    """``<output.dir>/compare-<output.name or arch>``; an architecture such as ``timm/convnext_small[drop_rate=0.1]``
    is no folder name, so characters a run name cannot hold become ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.+=@,-]+", "_", experiment.output.name or experiment.model.arch)
    return Path(experiment.output.dir) / f"compare-{name}"


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
    replace: bool = False,
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
        replace: when the folder holds finished runs or splits made with other settings (config, manifest content,
            splits, pseudonym secret, weights file), move them, with the old report, to
            ``<compare dir>/superseded/<UTC time>/`` and train the changed runs again (default: refuse).

    Returns:
        A :class:`ComparisonReport`; ``results.json``, ``results.csv``, ``report.md``, ``report.html`` and
        the plots are in its ``compare_dir``. Finished runs are reused when called again with the same settings;
        unfinished ones (failed, interrupted) are trained again; a run that fails is recorded with its error and
        the others go on; after Ctrl-C, the runs finished so far are in ``results.json`` and the report.

    Raises:
        ComparisonChangedError: the folder holds finished runs or splits made with other settings (the message
            lists what changed) and ``replace`` is False; nothing was written.
        RunLockedError: another ``compare`` holds the folder, or another process holds a run folder that would be
            trained again or moved; nothing was written.
    """
    say = on_event or (lambda msg: None)
    over = compare_overrides(overrides, seeds, fractions)
    cfg = config if isinstance(config, CompareConfig) and not over else load_compare_config(config, over)
    experiment, section = cfg.experiment, cfg.compare
    task = experiment.task  # resolved by the config (medtl.tasks.task_name)
    if section.primary_metric is None:  # a CompareConfig built by hand; load_compare_config fills it in
        section.primary_metric = default_metric(task)
    check_metric_for_task(section.primary_metric, task)
    if section.arms is not None:
        arm_cfgs = section.arms
    else:  # every source that fits the data, plus scratch; said before anything runs
        from medtl.comparison.arm_offers import arm_offers, data_kind, default_arm_notes

        kind = data_kind(experiment)
        offers = arm_offers(experiment, kind)
        arm_cfgs = default_arms(experiment, offers)
        for note in default_arm_notes(offers, kind):
            say(note)
    names = [a.name for a in arm_cfgs]
    if len(set(names)) != len(names):
        raise ConfigError(f"arm names must be unique (got {names})")
    unknown_also = [a for a in section.also_against or [] if a not in names]
    if unknown_also:
        raise ConfigError(
            f"compare.also_against names {unknown_also}, which are not among the arms ({', '.join(names)})",
            fix="name arms of the comparison, or [] for none",
        )
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
        compare_dir = default_compare_dir(experiment)
    # absolute, so the splits.file written into each run's config.yaml still resolves from the run folder
    compare_dir = compare_dir.expanduser().resolve()
    with folder_lock(
        compare_dir,
        what="comparison folder",
        fix="wait for that compare to end, or pass --out NEW_DIR (a process on another machine that is gone: "
        "delete the folder's .lock)",
    ):
        return _compare(cfg, arm_cfgs, compare_dir, task, say, replace=replace, parallel=parallel, launcher=launcher)


def _compare(
    cfg: CompareConfig,
    arm_cfgs: list[ArmConfig],
    compare_dir: Path,
    task: str,
    say: Callable[[str], None],
    *,
    replace: bool,
    parallel: int,
    launcher: Any,
) -> ComparisonReport:
    """:func:`compare` in its folder, with the folder's lock held: check, then write, then train and report."""
    experiment, section = cfg.experiment, cfg.compare
    # -- checks: everything that can refuse runs before anything in the folder is written, moved or deleted
    task_cls = task_class(experiment.task)
    manifest = task_cls.read_manifest(experiment)
    check = pseudonym_check()
    wanted = _splits_record(experiment, _manifest_sha256(experiment), check, section.repeat)
    by_folds = section.repeat != "seeds"
    fold_list: list[int | None] = list(range(experiment.splits.folds or 0)) if by_folds else [None]
    if by_folds:
        rendered = fold_splits(experiment, manifest)  # refuses a config that fixes one split (before any write)
    split_files = _split_files(compare_dir, fold_list)
    splits_changes = _splits_changes(compare_dir, wanted, split_files)
    keep_splits = all(p.is_file() for p in split_files.values()) and not splits_changes
    if keep_splits:
        splits_bytes = {k: p.read_bytes() for k, p in split_files.items()}
    else:
        splits_bytes = (
            dict(zip(fold_list, rendered, strict=True)) if by_folds else {None: _render_splits(experiment, manifest)}
        )
    inputs = {
        k: RunInputs(wanted["manifest_sha256"], hashlib.sha256(b).hexdigest(), check) for k, b in splits_bytes.items()
    }
    specs = [arm_spec(a, experiment) for a in arm_cfgs]
    classes = task_cls.output_names(experiment, manifest)
    # folds alone: one run per fold with seed 0
    seed_list = [0] if section.repeat == "folds" else list(range(section.seeds))
    # fractions outermost: an interrupted comparison has all arms at the first fractions
    plan = [
        (arm, seed, f, fold) for f in section.fractions for seed in seed_list for fold in fold_list for arm in specs
    ]
    weight_hashes: dict[str, str | None] = {}
    jobs: list[Job] = []
    failed: dict[int, RunRecord] = {}
    notes: list[str] = []  # said once nothing can refuse any more
    # an arm that never unfreezes (compare --epochs 1 with train.freeze_epochs 1): said now, and in the report
    notes += [f"warning: {w}" for w in schedule_warnings(specs, experiment.train.model_dump(), section.reference)]
    from medtl.train.inference import cache_note  # where the runs keep their preprocessed scans (disk: shared)

    notes.append(cache_note(experiment, task_cls.records(experiment, manifest)))
    changed: list[Path] = []
    unfinished: list[Path] = []
    changes: list[str] = list(splits_changes)
    for i, (arm, seed, fraction, fold) in enumerate(plan):
        run_dir = run_dir_for(compare_dir, arm.name, seed, fraction, fold)
        tag = _tag(i, len(plan), arm.name, seed, fraction, fold)
        try:
            run_cfg = _run_config(experiment, arm, seed, fraction, split_files[fold], run_dir, fold)
        except ConfigError as exc:
            failed[i] = RunRecord(arm.name, seed, fraction, "failed", f"ConfigError: {exc}", str(run_dir), fold=fold)
            notes.append(f"{tag}: FAILED: {exc}")
            continue
        w_sha = weights_sha256(run_cfg.model.weights, weight_hashes)
        key_rec = key_record(run_cfg, dataclasses.replace(inputs[fold], weights_sha256=w_sha))
        run = RunDir(run_dir)
        if is_finished(run, key_rec["key"]):
            notes.append(f"{tag}: finished earlier, reusing {run_dir}")
            continue
        if _status(run) == "ok":  # finished from other inputs: never retrained silently
            changed.append(run_dir)
            changes += [c for c in key_changes(read_key_record(run), key_rec) if c not in changes]
        elif run_dir.exists():
            unfinished.append(run_dir)
        jobs.append(Job(i, tag, run_cfg.to_dict(), str(run_dir), key_rec))
    if changes and not replace:
        raise _refusal(compare_dir, changes)
    if changes and splits_changes:  # every run used the old splits: all of them are moved aside
        check_not_held(sorted(p.parent for p in (compare_dir / "runs").glob(f"*/*/{RunDir.LOCK}")))
    else:
        check_not_held(changed + unfinished)

    # -- writes
    if changes:
        dest = _supersede(compare_dir, changed, splits=bool(splits_changes))
        say(f"replacing ({', '.join(changes)}): the old runs, splits and report are in {dest}")
    (compare_dir / "compare_config.yaml").write_text(
        yaml.safe_dump(
            {**experiment.to_dict(), "compare": section.model_dump(mode="json")}, sort_keys=False, allow_unicode=True
        )
    )
    if not keep_splits:
        for k, data in splits_bytes.items():
            atomic_write_bytes(split_files[k], data)
        if by_folds:
            splits_rec = {**wanted, "fold_sha256": {split_files[k].name: inputs[k].splits_sha256 for k in fold_list}}
        else:
            splits_rec = {**wanted, "splits_sha256": inputs[None].splits_sha256}
        atomic_write_bytes(compare_dir / SPLITS_RECORD, (json.dumps(splits_rec, indent=2) + "\n").encode())
    for msg in notes:
        say(msg)
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
        folds=[k for k in fold_list if k is not None],
    )

    def record(i: int, seconds: float | None = None) -> None:
        arm, seed, fraction, fold = plan[i]
        run_dir = run_dir_for(compare_dir, arm.name, seed, fraction, fold)
        rec = record_from_run_dir(
            run_dir, arm=arm.name, seed=seed, fraction=fraction, classes=classes, task=task, fold=fold
        )
        if seconds is not None and rec.seconds is None:
            rec.seconds = seconds
        _merge_provenance(arm, RunDir(run_dir))
        results.runs.append(rec)
        tag = _tag(i, len(plan), arm.name, seed, fraction, fold)
        if rec.ok:
            spec = metric_spec(section.primary_metric)
            value = spec.amount(rec.test_metrics.get(section.primary_metric, float("nan")))
            say(f"{tag}: done, test {section.primary_metric} per patient {value}")
        else:
            say(f"{tag}: FAILED: {rec.error}")
        results.runs.sort(key=lambda r: _order[(r.arm, r.seed, r.fraction, r.fold)])
        results.write_json(compare_dir / "results.json")
        results.write_csv(compare_dir / "results.csv")

    _order = {(a.name, sd, f, fold): k for k, (a, sd, f, fold) in enumerate(plan)}
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


def _tag(i: int, n: int, arm: str, seed: int, fraction: float, fold: int | None) -> str:
    """``[3/12] scratch seed 1 50% labels`` (``... fold 2`` for a fold), as compare's progress lines name a run."""
    return f"[{i + 1}/{n}] {arm} seed {seed}{'' if fold is None else f' fold {fold}'} {fraction * 100:g}% labels"


def _status(run: RunDir) -> str:
    """The run's status; a corrupt result.json counts as unfinished."""
    try:
        return run.status
    except MedtlError:
        return "failed"
