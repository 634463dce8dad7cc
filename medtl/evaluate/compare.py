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

How it stays fair: the train/val/test split by patient is made once and written to
``<compare dir>/splits.csv``; every run reuses it, so all arms are validated and tested on exactly the
same patients. For each seed and label fraction every arm trains on the same (stratified, nested)
subset of training patients, for the same number of epochs. Pretrained arms use the fine_tune schedule,
scratch the one-cycle schedule from the start (unless an arm says otherwise).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medtl.errors import ConfigError, MedtlError, TrainingError
from medtl.evaluate.report import ReportFiles, write_report
from medtl.evaluate.results import ArmSpec, CompareResults, RunRecord, Summary, record_from_run_dir, summarize
from medtl.train.rundir import RunDir

__all__ = [
    "ArmModel",
    "ArmConfig",
    "CompareSection",
    "CompareConfig",
    "CompareResult",
    "load_compare_config",
    "default_arms",
    "compare",
    "run_dir_for",
    "slurm_executor",
    "train_run",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArmModel(_Section):
    """The backbone of an arm; unset fields come from the experiment's ``model`` section."""

    arch: str | None = Field(None, description="Architecture (default: the experiment's model.arch).")
    weights: str = Field("scratch", description="scratch | imagenet | imagenet-inflated | medicalnet | ... | a path.")
    in_channels: int | None = Field(None, ge=1, description="Model input channels (default: the weights').")


class ArmConfig(_Section):
    """One arm: a name, a backbone with its starting weights, a schedule and a data mode."""

    name: str = Field(description="Short name, used for folders (letters, digits, _ . -).")
    label: str | None = Field(None, description="Name shown in the report (default: name).")
    model: ArmModel = ArmModel()
    schedule: Literal["auto", "fine_tune", "one_cycle"] = Field(
        "auto", description="auto: fine_tune for pretrained weights, one_cycle for scratch."
    )
    mode: Literal["2d", "3d", "2.5d"] | None = Field(None, description="Data mode (default: the experiment's).")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"arm name {v!r} may hold only letters, digits, '_', '.', '-'")
        return v


class CompareSection(_Section):
    """What to compare and how."""

    arms: list[ArmConfig] | None = Field(
        None, description="Arms; default: every weight source that fits model.arch, plus scratch."
    )
    seeds: int = Field(3, ge=1, description="Seeds per arm and fraction (seeds 0..n-1).")
    fractions: list[float] = Field([0.1, 0.25, 0.5, 1.0], description="Label fractions of the training patients.")
    primary_metric: Literal["auroc", "accuracy", "balanced_accuracy", "f1"] = "auroc"
    reference: str = Field("scratch", description="The arm every other arm is compared with.")
    n_resamples: int = Field(2000, ge=100, description="Bootstrap resamples over test patients.")
    dir: Path | None = Field(None, description="Comparison folder (default: <output.dir>/compare-<output.name>).")

    @field_validator("fractions")
    @classmethod
    def _fractions_ok(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 < f <= 1.0 for f in v):
            raise ValueError(f"fractions must be in (0, 1] (got {v})")
        return sorted(set(float(f) for f in v))


class CompareConfig(_Section):
    """An experiment config plus its ``compare`` section."""

    experiment: Any  # medtl.config.ExperimentConfig (validated by load_config)
    compare: CompareSection = CompareSection()


def _resolve(raw: dict[str, Any], base: Path) -> None:
    """Paths in a YAML file are relative to the file: the experiment's as medtl.config does, then the compare's."""
    from medtl.config import resolve_config_paths, resolve_relative_path

    resolve_config_paths(raw, base)
    comp = raw.get("compare")
    if isinstance(comp, dict):
        resolve_relative_path(comp, "dir", base)
        for arm in comp.get("arms") or []:
            if isinstance(arm, dict):
                resolve_relative_path(arm.get("model"), "weights", base, only_files=True)


def load_compare_config(
    path_or_dict: str | Path | dict[str, Any] | CompareConfig, overrides: dict[str, Any] | None = None
) -> CompareConfig:
    """Read a comparison config: the experiment sections plus an optional ``compare`` section.

    Args:
        path_or_dict: a YAML file, a dict, or a CompareConfig.
        overrides: dotted keys for the experiment (``{"train.epochs": 2}``) or ``compare.*``
            (``{"compare.seeds": 2}``).

    Raises:
        ConfigError: unknown or invalid fields, with their path and the allowed values.
    """
    from medtl.config import apply_overrides, load_config, read_config_file

    if isinstance(path_or_dict, CompareConfig):
        raw = {**path_or_dict.experiment.to_dict(), "compare": path_or_dict.compare.model_dump(mode="json")}
        source = "(object)"
    elif isinstance(path_or_dict, dict):
        raw = copy.deepcopy(path_or_dict)
        source = "(dict)"
    else:
        path = Path(path_or_dict).expanduser()
        source = str(path)
        raw = read_config_file(path)
        _resolve(raw, path.parent.resolve())
    raw = apply_overrides(raw, overrides)
    comp_raw = raw.pop("compare", None) or {}
    experiment = load_config(raw)
    try:
        section = CompareSection.model_validate(comp_raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "compare." + ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown field")
            else:
                problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        allowed = ", ".join(CompareSection.model_fields)
        arm_fields = ", ".join(ArmConfig.model_fields)
        raise ConfigError(
            f"invalid config {source}: "
            + "; ".join(problems)
            + f". compare fields: {allowed}; arm fields: {arm_fields}"
        ) from None
    return CompareConfig(experiment=experiment, compare=section)


# --------------------------------------------------------------------------------------------- arms


def _dims_of(experiment: Any) -> int:
    """Spatial dims of the experiment's models: from data.mode, else the weights, else the architecture."""
    from medtl.backbones import get_architecture
    from medtl.weights import get_weight_source

    mode = experiment.data.mode
    if mode != "auto":
        return 3 if mode == "3d" else 2
    src = get_weight_source(experiment.model.weights)
    return int(src.dims) if src.dims is not None else int(get_architecture(experiment.model.arch).dims)


def default_arms(experiment: Any) -> list[ArmConfig]:
    """Every registered weight source that fits the experiment's architecture and data dims, plus scratch."""
    from medtl.weights.sources import sources_for_arch

    arch = experiment.model.arch
    arms = [
        ArmConfig(name=n, model=ArmModel(arch=arch, weights=n))
        for n in sources_for_arch(arch, dims=_dims_of(experiment))
    ]
    return [*arms, ArmConfig(name="scratch", model=ArmModel(arch=arch, weights="scratch"))]


def _arm_spec(arm: ArmConfig, experiment: Any) -> ArmSpec:
    from medtl.weights import get_weight_source

    arch = arm.model.arch or experiment.model.arch
    weights = arm.model.weights
    schedule = arm.schedule if arm.schedule != "auto" else ("one_cycle" if weights == "scratch" else "fine_tune")
    try:  # what the source says; each run adds the file it really loaded and its hash (_merge_provenance)
        src = get_weight_source(weights)
        provenance: dict[str, Any] = {
            "source": src.name,
            "description": src.description,
            "license": src.license,
            "citation": src.citation,
        }
    except MedtlError as exc:  # an unknown source fails in its runs, with the error recorded there
        provenance = {"source": weights, "error": str(exc)}
    return ArmSpec(
        name=arm.name,
        arch=arch,
        weights=weights,
        schedule=schedule,
        mode=arm.mode or experiment.data.mode,
        in_channels=arm.model.in_channels if arm.model.in_channels is not None else experiment.model.in_channels,
        label=arm.label or _default_label(arm.name, arch, weights),
        provenance=provenance,
    )


def _default_label(name: str, arch: str, weights: str) -> str:
    if weights == "scratch":
        return "scratch" if name == "scratch" else name
    return f"{arch} {name}" if name == weights else name


# ------------------------------------------------------------------------------------------- splits


def _write_shared_splits(experiment: Any, compare_dir: Path) -> Path:
    """Make the train/val/test split by patient once, for every arm; reuse it when it already exists."""
    from medtl.data import Manifest
    from medtl.data.splits import make_splits, patient_labels, read_splits_csv, write_splits_csv

    target = compare_dir / "splits.csv"
    manifest = Manifest.from_csv(experiment.data.manifest, classes=experiment.data.classes)
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


def _run_config(experiment: Any, arm: ArmSpec, seed: int, fraction: float, splits_file: Path, run_dir: Path) -> Any:
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
    return load_config(experiment.to_dict(), overrides)


_KEY_FILE = "compare_key.txt"


def _config_key(run_cfg: Any) -> str:
    """Hash of a run's resolved config: a finished run is reused only if it was made with the same config."""
    import hashlib

    blob = json.dumps(run_cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_finished(run: RunDir, key: str) -> bool:
    try:
        return run.status == "ok" and (run.read_text(_KEY_FILE) or "").strip() == key
    except MedtlError:  # a corrupt result.json: not finished
        return False


def _merge_provenance(arm: ArmSpec, run: RunDir) -> None:
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
class _Job:
    """One run to train: its place in the plan, the resolved config and the folder."""

    index: int
    tag: str
    config: dict[str, Any]
    run_dir: str
    key: str


def train_run(config: dict[str, Any], run_dir: str, key: str, parallel: int = 1) -> str:
    """Train one run of a comparison (in this process, a worker process, or a SLURM job) and mark it finished.

    Returns:
        The run's status (``ok``, ``failed``); a failure is recorded in its result.json, not raised.
    """
    from medtl.config import load_config
    from medtl.train import fine_tune
    from medtl.train.run import PARALLEL_ENV

    os.environ[PARALLEL_ENV] = str(parallel)
    run = RunDir(run_dir)
    if run.path.exists():
        shutil.rmtree(run.path)  # an unfinished, failed or differently configured attempt: redo it
    try:
        with warnings.catch_warnings():
            # noise from Lightning that says nothing about this run
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            fine_tune(load_config(config), run_dir=run.path, quiet=True)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing run must not stop the comparison
        if run.status not in ("failed", "interrupted"):  # failed before fine_tune could record it
            run.write_result({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return "failed"
    run.write_text(_KEY_FILE, key + "\n")
    return "ok"


def _init_worker(devices: Any) -> None:
    """A parallel worker takes one GPU of its own when there are enough; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)


def _execute(
    jobs: list[_Job], *, parallel: int, launcher: Any, say: Callable[[str], None]
) -> Iterator[tuple[int, float]]:
    """Train the jobs; yield ``(plan index, seconds)`` as each finishes (in plan order when sequential)."""
    if not jobs:
        return
    if launcher != "local":  # a submitit executor: one job per run, the compare folder is the shared state
        with launcher.batch():
            submitted = [(j, launcher.submit(train_run, j.config, j.run_dir, j.key)) for j in jobs]
        for j, _ in submitted:
            say(f"{j.tag}: submitted")
        for j, job in submitted:
            t0 = time.perf_counter()
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - the job died (time limit, node failure): recorded, go on
                run = RunDir(j.run_dir)
                if run.status in ("pending", "running"):
                    run.write_result({"status": "failed", "error": f"job {job.job_id}: {type(exc).__name__}: {exc}"})
            yield j.index, time.perf_counter() - t0
        return
    if parallel <= 1:
        for j in jobs:
            say(f"{j.tag}: training")
            t0 = time.perf_counter()
            train_run(j.config, j.run_dir, j.key)
            yield j.index, time.perf_counter() - t0
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    ctx = mp.get_context("spawn")
    devices = ctx.Queue()
    gpus = torch.cuda.device_count()
    for k in range(parallel):
        devices.put(k if gpus >= parallel else None)
    t0 = {}
    with ProcessPoolExecutor(parallel, mp_context=ctx, initializer=_init_worker, initargs=(devices,)) as pool:
        futures = {}
        for j in jobs:
            futures[pool.submit(train_run, j.config, j.run_dir, j.key, parallel)] = j
            t0[j.index] = time.perf_counter()
            say(f"{j.tag}: queued")
        try:
            todo = set(futures)
            while todo:
                done, todo = wait(todo, return_when=FIRST_COMPLETED)
                for fut in done:
                    j = futures[fut]
                    try:
                        fut.result()
                    except Exception as exc:  # noqa: BLE001 - the worker died: recorded, go on
                        RunDir(j.run_dir).write_result({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                    yield j.index, time.perf_counter() - t0[j.index]
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def slurm_executor(folder: str | Path, **parameters: Any) -> Any:
    """A submitit executor for SLURM (``parameters``: ``slurm_partition``, ``timeout_min``, ``gpus_per_node``...).

    Raises:
        ConfigError: submitit is not installed (``pip install 'medtl[slurm]'``).
    """
    try:
        import submitit
    except ImportError:
        raise ConfigError("the SLURM launcher needs submitit", fix="pip install 'medtl[slurm]'") from None
    executor = submitit.AutoExecutor(folder=str(folder))
    executor.update_parameters(**parameters)
    return executor


@dataclass
class CompareResult:
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
) -> CompareResult:
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
        A :class:`CompareResult`; ``results.json``, ``results.csv``, ``report.md``, ``report.html`` and
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
    specs = [_arm_spec(a, experiment) for a in arm_cfgs]
    from medtl.data import Manifest

    classes = list(experiment.data.classes or Manifest.from_csv(experiment.data.manifest, check_files=False).classes)
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
    )
    # fractions outermost: an interrupted comparison has all arms at the first fractions
    plan = [(arm, seed, f) for f in section.fractions for seed in seed_list for arm in specs]
    jobs: list[_Job] = []
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
        key = _config_key(run_cfg)
        if _is_finished(RunDir(run_dir), key):
            say(f"{tag}: finished earlier, reusing {run_dir}")
        else:
            jobs.append(_Job(i, tag, run_cfg.to_dict(), str(run_dir), key))

    def record(i: int, seconds: float | None = None) -> None:
        arm, seed, fraction = plan[i]
        run_dir = run_dir_for(compare_dir, arm.name, seed, fraction)
        rec = record_from_run_dir(run_dir, arm=arm.name, seed=seed, fraction=fraction, classes=classes)
        if seconds is not None and rec.seconds is None:
            rec.seconds = seconds
        _merge_provenance(arm, RunDir(run_dir))
        results.runs.append(rec)
        tag = f"[{i + 1}/{len(plan)}] {arm.name} seed {seed} {fraction * 100:g}% labels"
        if rec.ok:
            value = rec.test_metrics.get(section.primary_metric, float("nan"))
            say(f"{tag}: done, test {section.primary_metric} per patient {value:.3f}")
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
        for i, seconds in _execute(jobs, parallel=parallel, launcher=launcher, say=say):
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
        say(f"partial report of the finished runs: {files.report_html}; run the same command again to go on")
        raise KeyboardInterrupt
    fatal = _fatal_error(None, results)
    if fatal:
        raise TrainingError(f"{fatal}; the report of what finished is {files.report_html}")
    return CompareResult(results, summary, compare_dir, files)
