"""``fine_tune(config)``: one training run from a config to a run folder (see :mod:`medtl.rundir`)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from medtl.config import ExperimentConfig, load_config
from medtl.data.loading import PARALLEL_ENV, cores_per_run, resolve_num_workers  # noqa: F401 - PARALLEL_ENV: compare sets it
from medtl.errors import ConfigError, TrainingError
from medtl.rundir import RunDir
from medtl.train.datasets import class_balance
from medtl.train.experiment import Experiment, check_pseudonyms, prepare_experiment
from medtl.train.inference import make_loader
from medtl.train.schedule import frozen_body_warning
from medtl.train.trainer import build_trainer, quiet_lightning, resolve_precision
from medtl.utils import is_rank_zero_env, is_weights_file

__all__ = [
    "Interrupted",
    "RunResult",
    "fine_tune",
    "check_resume_checkpoint",
    "resolve_precision",
    "default_threads",
    "weights_provenance",
]

log = logging.getLogger(__name__)

RUN_DIR_ENV = "MEDTL_RUN_DIR"


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        run_dir: the run folder.
        metrics: ``{"val": {...}, "test": {...}}`` per-scan metrics of the best checkpoint.
        best_checkpoint: path of best.ckpt.
        model: the trained backbone (best weights), on the CPU, in eval mode (None on non-zero DDP ranks).
        seconds: wall-clock seconds of training and evaluation.
        best_epoch: 1-based epoch of the best checkpoint.
        status: ``ok``, or ``worker`` on a non-zero DDP rank.
    """

    run_dir: Path
    metrics: dict[str, dict[str, Any]]
    best_checkpoint: Path
    model: Any
    seconds: float
    best_epoch: int | None = None
    status: str = "ok"


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; the message says where it is and how to continue it."""

    command = "medtl train"
    kind = "run"

    def __init__(self, run: RunDir, epoch: int) -> None:
        how = (
            f"continue it with: {self.command} --resume {run.path}"
            if run.last_checkpoint.is_file()
            else "it stopped before its first checkpoint; start it again"
        )
        super().__init__(f"{self.kind} {run.path} stopped during epoch {epoch + 1}; {how}")


def default_threads() -> int:
    """Torch threads of one run: the cores this process may use, shared among parallel compare runs
    (``MEDTL_PARALLEL_RUNS``); ``train.num_workers: auto`` shares them the same way."""
    return cores_per_run()


def weights_provenance(exp: Experiment, load_report: dict[str, Any]) -> dict[str, Any]:
    """Where the weights came from: the source record plus the file actually loaded and its hash."""
    src = exp.source
    arch = exp.config.model.arch
    urls = src.urls
    return {
        "weights": exp.config.model.weights,
        "arch": arch,
        "source": src.name,
        "description": src.description,
        "license": src.license,
        "citation": src.citation,
        "url": urls.get(arch),
        "normalization": src.normalization.kind,
        "file": load_report.get("file"),
        "sha256": load_report.get("sha256"),
        "verified": load_report.get("verified"),
    }


def _load_report(model: Any) -> dict[str, Any]:
    rep = model.load_report
    return rep.to_dict() | {"summary": rep.summary()}


def check_resume_checkpoint(run: RunDir, start_again: str) -> None:
    """Read a run's ``last.ckpt`` with medtl's safe reader (:func:`~medtl.weights.load.read_checkpoint`) before
    Lightning resumes from it: Lightning's own ``torch.load`` shows a truncated, garbage or unsafe file as a
    traceback.

    Args:
        run: the run folder to resume.
        start_again: the fix the error proposes (how to start the run afresh).

    Raises:
        TrainingError: the checkpoint is truncated or garbage, holds no state dict, or would need unpickling
            arbitrary Python objects (code chosen by whoever wrote the file).
    """
    from collections.abc import Mapping

    from medtl.errors import MedtlError, UnsafeCheckpointError
    from medtl.weights.load import read_checkpoint

    ckpt = run.last_checkpoint
    try:
        state = read_checkpoint(ckpt)
    except UnsafeCheckpointError:
        why = "holds pickled Python objects besides tensors (loading it would run code from the file)"
    except MedtlError:
        why = "is corrupt or truncated (not a readable PyTorch checkpoint)"
    else:
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            return
        why = "is not a training checkpoint (it holds no state_dict)"
    raise TrainingError(f"cannot resume {run.path}: its checkpoint {ckpt} {why}", path=str(ckpt), fix=start_again)


def _default_run_dir(cfg: ExperimentConfig) -> Path:
    if cfg.output.name:
        return Path(cfg.output.dir) / cfg.output.name
    w = Path(cfg.model.weights).stem if is_weights_file(cfg.model.weights) else cfg.model.weights
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.output.dir) / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cfg.model.arch}-{w}-{stamp}")
    out, i = base, 1
    while out.exists():
        out = base.with_name(f"{base.name}-{i}")
        i += 1
    return out


def _check_before_writing(cfg: ExperimentConfig) -> None:
    """What can be checked of a config in milliseconds, before its run folder is created: the architecture, the
    weight source (a run folder used as weights is read here) and the manifest's columns (its header line).

    Raises:
        UnknownOptionError, WeightsError, RunDirError, ManifestError: naming the field and the fix.
    """
    from medtl.backbones import get_architecture
    from medtl.config.loading import check_manifest_columns
    from medtl.weights import get_weight_source

    get_architecture(cfg.model.arch)
    get_weight_source(cfg.model.weights)
    check_manifest_columns(cfg)


def _stopped_before_first_epoch(run: RunDir) -> str | None:
    """The one line saying a rerun replaces ``run``, when it is an attempt that failed or was interrupted before its
    first epoch ended (no checkpoint: nothing to resume); None for any other run (finished, running, resumable)."""
    from medtl.errors import MedtlError

    try:
        result = run.read_result()
    except MedtlError:  # a torn result.json: not this function's to judge
        return None
    status = result.get("status")
    if status not in ("failed", "interrupted") or run.last_checkpoint.exists() or run.best_checkpoint.exists():
        return None
    why = " ".join(str(result.get("error") or status).split())
    if len(why) > 200:
        why = why[:197] + "..."
    return f"replacing {run.path}: its earlier attempt stopped before its first epoch ended ({why}); nothing to resume"


def _resume_config(run: RunDir, asked: ExperimentConfig | None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The saved config of a run to resume and the changes ``asked`` makes (see :meth:`RunDir.resume_changes`)."""
    saved = run.read_config()
    changes = run.resume_changes(saved.to_dict(), asked.to_dict() if asked is not None else None)
    if changes:
        saved = load_config(saved.to_dict(), {"train.epochs": changes["train.epochs"][1]})
    return saved, changes


def fine_tune(
    config: ExperimentConfig | dict[str, Any] | str | Path | None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train one model as the config says and write a run folder.

    Args:
        config: a config file, dict or :class:`~medtl.config.ExperimentConfig`; with ``resume`` it may be None
            (the run's own config.yaml is used) and otherwise must equal it except for a longer ``train.epochs``.
        run_dir: where to write (default ``output.dir/output.name`` or a timestamped folder).
        resume: continue the run in ``run_dir`` from its last.ckpt, with its config and splits.
        overrides: dotted-key overrides (``{"train.epochs": 3}``).
        callbacks: extra Lightning callbacks.
        trainer_kwargs: anything else ``lightning.pytorch.Trainer`` accepts; it wins over medtl's choices.
        quiet: no progress output.
        overwrite: replace a run already in the folder (a failed one, say) instead of refusing.

    Returns:
        A :class:`RunResult`.

    Raises:
        ConfigError, ManifestError, TrainingError, DataLoadError, WeightsError: see their messages.
    """

    t_start = time.perf_counter()
    rank0 = is_rank_zero_env()
    if run_dir is None and not rank0 and os.environ.get(RUN_DIR_ENV):
        run_dir = os.environ[RUN_DIR_ENV]
    if resume:
        if run_dir is None:
            raise TrainingError("resume needs the run folder to continue", fix="pass --resume RUN_DIR")
        run = RunDir(run_dir)
        if not run.last_checkpoint.is_file():
            raise TrainingError(
                f"cannot resume {run.path}: it has no last.ckpt (the run stopped before its first epoch ended)",
                path=str(run.path),
                fix="start a new run instead",
            )
        check_resume_checkpoint(run, "start the run again with medtl train CONFIG --overwrite (or another output.name)")
        asked = None
        if config is not None or overrides:  # --resume RUN --epochs N: the run's own config, longer
            asked = load_config(config if config is not None else run.read_config().to_dict(), overrides)
        cfg, changes = _resume_config(run, asked)
        if run.file(RunDir.PREPROCESSING).is_file():
            check_pseudonyms(run.path, run.read_preprocessing().get("pseudonym_check"))
    else:
        if config is None:
            raise ConfigError("fine_tune needs a config (or resume=True with a run folder)")
        cfg, changes = load_config(config, overrides), {}
        if (
            run_dir is None
            and cfg.output.name is None
            and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
            and not os.environ.get(RUN_DIR_ENV)
        ):
            # torchrun / SLURM start every process at once: a timestamped folder would differ between them
            raise ConfigError(
                "set output.name (or --name) when launching with torchrun or SLURM, so every process writes one run"
            )
        _check_before_writing(cfg)
        run = RunDir(run_dir if run_dir is not None else _default_run_dir(cfg))
        if rank0 and run.holds_run():
            stale = _stopped_before_first_epoch(run)
            if stale and not overwrite:
                # nothing of it can be resumed: the corrected rerun takes its place
                log.info(stale)
                if not quiet:
                    print(stale, flush=True)
                overwrite = True
            if not overwrite:
                raise TrainingError(
                    f"run folder {run.path} already holds a run (status {run.status})",
                    path=str(run.path),
                    fix="pass --resume to continue it, --overwrite to replace it, or choose another output.name",
                )
            with run.lock():  # refused while another process writes it
                for child in run.path.iterdir():
                    if child.name != RunDir.LOCK:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())
    torch.set_num_threads(cfg.train.threads or default_threads())
    frozen = frozen_body_warning(
        cfg.resolved_schedule(), epochs=cfg.train.epochs, freeze_epochs=cfg.train.freeze_epochs
    )
    if frozen and rank0 and not quiet:  # compare runs are quiet: compare says it once per arm, and in its report
        warnings.warn(f"run {run.path}: {frozen}", stacklevel=2)
    if rank0:
        with run.lock():
            return _fine_tune(cfg, run, resume, changes, callbacks, trainer_kwargs, quiet, t_start, rank0)
    return _fine_tune(cfg, run, resume, changes, callbacks, trainer_kwargs, quiet, t_start, rank0)


def _fine_tune(
    cfg: ExperimentConfig,
    run: RunDir,
    resume: bool,
    changes: dict[str, Any],
    callbacks: list[Any] | None,
    trainer_kwargs: dict[str, Any] | None,
    quiet: bool,
    t_start: float,
    rank0: bool,
) -> RunResult:
    import lightning.pytorch as pl

    from medtl.train.card import model_card
    from medtl.train.module import TaskModule
    from medtl.transforms.batch import batch_augmentation

    if not quiet and rank0:
        print(f"run folder: {run.path}", flush=True)
    if rank0:
        run.write_result({"status": "running"})
    try:
        pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
        # a resumed run and DDP workers use exactly the splits written by the first rank 0
        splits_file = run.file(RunDir.SPLITS) if (resume or not rank0) and run.file(RunDir.SPLITS).is_file() else None
        exp = prepare_experiment(cfg, splits_file=splits_file)
        if rank0:
            run.write_config(cfg)
            run.write_splits(exp.assignment, exp.task.split_label_text(exp.records), used=exp.train_patients)
            run.write_preprocessing(exp.preprocessing())
        model = exp.build_model()
        load_report = _load_report(model)
        provenance = weights_provenance(exp, load_report)
        if rank0:
            run.write_load_report(load_report)
        module = TaskModule(
            model, exp.task, cfg.train, cfg.resolved_schedule(), batch_augment=batch_augmentation(cfg, exp.pipeline)
        )
        quiet_lightning()
        trainer, metrics_cb, best_cb = build_trainer(
            cfg, exp, run, callbacks=list(callbacks or []), trainer_kwargs=trainer_kwargs, quiet=quiet
        )
        on_gpu = trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        # auto: the cores of this run (shared with parallel compare runs and this machine's DDP ranks) on a GPU
        workers = resolve_num_workers(cfg.train.num_workers, cuda=on_gpu, processes=cfg.train.devices)
        loaders = [
            make_loader(
                exp.datasets[split],
                batch_size=(split == "val" and exp.task.eval_batch_size) or cfg.train.batch_size,
                train=split == "train",
                num_workers=workers,
                sampler=class_balance(exp) if split == "train" else None,
                pin_memory=on_gpu,
                on_gpu=on_gpu,
            )
            for split in ("train", "val")
        ]
        sigint = signal.getsignal(signal.SIGINT)
        try:
            trainer.fit(module, *loaders, ckpt_path=str(run.last_checkpoint) if resume else None)
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning turns Ctrl-C into SystemExit(1) after a graceful stop, and ignores SIGINT from then on
            signal.signal(signal.SIGINT, sigint or signal.default_int_handler)
            raise Interrupted(run, trainer.current_epoch) from None
        if not trainer.is_global_zero:
            return RunResult(run.path, {}, run.best_checkpoint, None, time.perf_counter() - t_start, status="worker")

        best_path = Path(best_cb.best_model_path) if best_cb.best_model_path else run.best_checkpoint
        if not best_path.is_file():  # select: last writes best.ckpt at the final epoch; a run stopped sooner has none
            best_path = run.last_checkpoint
        state = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        model = module.model.cpu().eval()
        rows = metrics_cb.rows
        best_epoch = state.get("epoch")
        best_epoch = None if best_epoch is None else int(best_epoch) + 1
        device = "cuda" if on_gpu else "cpu"
        metrics: dict[str, dict[str, Any]] = {}
        precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
        # train.calibrate: fitted on the validation patients, used by the scoring below, predict and evaluate
        exp.task.calibrate(exp, model, device=device, precision=precision)
        run.write_preprocessing(exp.preprocessing())
        for split in ("val", "test"):
            recs = exp.splits[split]
            if not recs:
                metrics[split] = {}
                continue
            scores, targets, ids = exp.task.score_split(exp, model, split, device=device, precision=precision)
            if split == "val":
                exp.task.learn_from_validation(scores, targets)
            metrics[split] = exp.task.metrics(scores, targets)
            columns = exp.task.prediction_columns(with_labels=True)
            run.write_predictions(split, columns, exp.task.prediction_rows(recs, scores, ids, with_labels=True))
            if split == "test":
                exp.task.write_extras(run, model, exp.datasets[split], recs)
        run.write_preprocessing(exp.preprocessing())  # with what the task learnt from the validation scans
        model = model.cpu()
        seconds = time.perf_counter() - t_start
        result = {
            "status": "ok",
            "task": exp.task.name,
            "metrics": metrics,
            "seconds": seconds,
            "train_seconds": rows[-1]["time_s"] if rows else None,
            "best_epoch": best_epoch,
            "epochs_run": len(rows),
            "epochs_planned": cfg.train.epochs,
            "stopped_early": len(rows) < cfg.train.epochs,
            "resumed_with": changes or None,
            "monitor": cfg.train.monitor,
            "classes": exp.classes,
            "arch": cfg.model.arch,
            "weights": provenance,
            "schedule": cfg.resolved_schedule(),
            "seed": cfg.train.seed,
            "split_seed": cfg.splits.seed,
            "label_fraction": cfg.splits.label_fraction,
            "n_patients": exp.patient_counts(),
            "n_scans": {s: len(exp.splits[s]) for s in ("train", "val", "test")},
            "precision": precision,
            "devices": cfg.train.devices,
            "modality": exp.modality,
            "mode": exp.mode,
            "best_checkpoint": str(best_path),
            # the network as trained, head included: what compare reports next to each arm's result
            "n_parameters": sum(p.numel() for p in model.parameters()),
            **exp.task.result_extras(),
        }
        run.write_card(model_card(exp, {**result, "run_dir": str(run.path)}, load_report))
        run.write_result(result)
        if not quiet:
            v, te = metrics.get("val", {}), metrics.get("test", {})
            print(
                f"done in {seconds:.1f}s: val {exp.task.headline(v)}"
                + (f", test {exp.task.headline(te)}" if te else "")
                + f"; results in {run.path}",
                flush=True,
            )
        return RunResult(run.path, metrics, best_path, model, seconds, best_epoch)
    except BaseException as exc:
        if rank0:
            run.write_stopped(exc, seconds=time.perf_counter() - t_start, command="medtl train")
        raise
