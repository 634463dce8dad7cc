"""``pretrain(config)``: unlabeled scans in, a pretrained encoder registered as weights ``local:<name>`` out.

Run folder::

    config.yaml           the resolved config
    index.csv             the scans found, for a data.folder (image relative to the folder, series)
    pool.json             the pool the run started on (manifest SHA-256, scans, patients); a resume on another
                          pool is refused
    metrics.csv           one row per epoch: epoch, time_s, train_loss, lr, knn_accuracy, knn_balanced_accuracy
    last.ckpt             the full state of the last epoch (encoder, method head, optimizer, log) for ``resume``;
                          removed once the run has finished
    encoder.safetensors   the encoder's tensors without the classifier (torchvision / MONAI names)
    source.json           the weight-source record (method, arch, epochs, normalisation, data SHA-256, counts)
    result.json           status (running | ok | failed | interrupted), seconds, final loss, k-NN scores, weights
    .lock                 the PID and host of the process writing the folder

The files are written through :class:`~medtl.rundir.RunDir`, as a training run's are: atomically, under the
folder's lock (a second pretraining into a folder in use is refused), with the same statuses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from medtl.errors import ConfigError, TrainingError
from medtl.pretraining.config import PretrainConfig, load_pretrain_config
from medtl.rundir import RunDir, json_clean
from medtl.train.run import Interrupted, check_resume_checkpoint, default_threads
from medtl.train.trainer import resolve_precision
from medtl.utils import is_rank_zero_env, medtl_home
from medtl.weights.local import LOCAL_PREFIX, RECORD_FILE, local_weights_dir, register_local_source

__all__ = ["PretrainResult", "PretrainInterrupted", "pretrain", "encoder_state", "METHOD_LABELS"]

RUN_DIR_ENV = "MEDTL_PRETRAIN_RUN_DIR"
METHOD_LABELS = {"simclr": "SimCLR", "genesis": "Models Genesis restoration"}
_CITATIONS = {
    "simclr": "Chen T., Kornblith S., Norouzi M., Hinton G. A Simple Framework for Contrastive Learning of Visual "
    "Representations. ICML 2020 (SimCLR; head and loss from lightly, Susmelj et al.).",
    "genesis": "Zhou Z., Sodha V., Rahman Siddiquee M. M. et al. Models Genesis: Generic Autodidactic Models for 3D "
    "Medical Image Analysis. MICCAI 2019.",
}


@dataclass
class PretrainResult:
    """What a pretraining run produced.

    Attributes:
        run_dir: the run folder.
        encoder_file: ``encoder.safetensors`` in the run folder (None on non-zero DDP ranks).
        weights: ``local:<name>`` when registered, else the encoder file's path, usable as ``model.weights``.
        record: the weight-source record.
        metrics: one dict per epoch (as in metrics.csv).
        seconds: wall-clock seconds.
        encoder: the trained encoder (a MedtlModel on the CPU, eval mode), on every rank.
        status: ``ok``, or ``worker`` on non-zero DDP ranks.
    """

    run_dir: Path
    encoder_file: Path | None
    weights: str | None
    record: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    encoder: Any = None
    status: str = "ok"

    @property
    def final_loss(self) -> float | None:
        return self.metrics[-1]["train_loss"] if self.metrics else None


class PretrainInterrupted(Interrupted):
    """A pretraining run stopped by Ctrl-C or SIGTERM; the message says where it is and how to continue it."""

    command = "medtl pretrain"
    kind = "pretraining run"


def _write_json(run: RunDir, name: str, obj: Any) -> None:
    run.write_text(name, json.dumps(json_clean(obj), indent=2, allow_nan=False) + "\n")


POOL_FILE = "pool.json"


def _check_pool(run: RunDir, pool: Any, *, resume: bool, rank0: bool) -> None:
    """Record the pool a run starts on; on resume, refuse a pool that is not that one.

    Raises:
        TrainingError: (resume) the manifest's SHA-256 or the number of scans differs from the recorded ones.
    """
    now = {
        "manifest_sha256": pool.manifest_sha256,
        "n_scans": len(pool.records),
        "n_patients": pool.n_patients,
        "source": str(pool.source),
    }
    text = run.read_text(POOL_FILE) if resume else None
    if text is None:
        if resume:  # a run started before pools were recorded: from here on, this pool is the run's
            logging.getLogger(__name__).warning("%s records no pool; resuming on %s", run.path, pool.source)
        if rank0:
            _write_json(run, POOL_FILE, now)
        return
    try:
        then = json.loads(text)
        old_sha, old_n = str(then["manifest_sha256"]), int(then["n_scans"])
    except (ValueError, TypeError, KeyError):
        raise TrainingError(
            f"cannot resume {run.path}: {run.file(POOL_FILE)} is unreadable, so the pool it started on is unknown",
            path=str(run.file(POOL_FILE)),
            fix="start a new pretraining run (another output.name)",
        ) from None
    if old_sha != now["manifest_sha256"] or old_n != now["n_scans"]:
        same = " (the same count, but other rows)" if old_n == now["n_scans"] else ""
        raise TrainingError(
            f"cannot resume {run.path} on a changed pool: it started on {old_n} scans (manifest SHA-256 "
            f"{old_sha[:12]}...) and {pool.source} now holds {now['n_scans']}{same} (SHA-256 "
            f"{now['manifest_sha256'][:12]}...); its encoder and record would mix the two",
            path=str(pool.source),
            fix="start a new pretraining run (another output.name) on the new pool, or restore the pool the run "
            "started on and resume again",
        )


def _resume_config(run: RunDir, asked: PretrainConfig | None) -> tuple[PretrainConfig, dict[str, Any]]:
    """The saved config of a run to resume and the changes ``asked`` makes (see :meth:`RunDir.resume_changes`)."""
    saved = load_pretrain_config(run.file(RunDir.CONFIG))
    changes = run.resume_changes(saved.to_dict(), asked.to_dict() if asked is not None else None)
    if changes:
        saved = load_pretrain_config(saved.to_dict(), {"train.epochs": changes["train.epochs"][1]})
    return saved, changes


def encoder_state(model: Any) -> dict[str, torch.Tensor]:
    """The encoder's tensors without the classifier, under the network's own names, contiguous on the CPU."""
    head = model.spec.head_prefixes
    return {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items() if not k.startswith(head)}


def _default_name(cfg: PretrainConfig) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cfg.model.arch}-{cfg.method}-{stamp}")


def _check_name_free(cfg: PretrainConfig, name: str) -> None:
    # the folder, not list_local_sources(): a registered encoder whose record is broken still holds the name
    if (
        cfg.output.register_weights
        and not cfg.output.overwrite
        and (local_weights_dir() / name / RECORD_FILE).is_file()
    ):
        raise ConfigError(
            f"weights local:{name} already exist in {local_weights_dir()}",
            fix="choose another output.name, or set output.overwrite: true to replace them",
        )


def _knn_config(cfg: PretrainConfig) -> Any:
    """The k-NN manifest as a classification experiment's data section (labels read and checked as training does)."""
    from medtl.config import DataConfig, ExperimentConfig, ModelConfig

    return ExperimentConfig(data=DataConfig(manifest=cfg.knn.manifest), model=ModelConfig(arch=cfg.model.arch))


def _knn_probe(cfg: PretrainConfig, pipeline: Any) -> Any:
    from medtl.pretraining.data import LabelledDataset
    from medtl.pretraining.module import KnnProbe
    from medtl.tasks import task_class

    manifest = task_class("classification").read_manifest(_knn_config(cfg))
    records = manifest.to_dicts()
    if len(manifest.classes) < 2 or len({str(r["patient_id"]) for r in records}) < 2:
        raise ConfigError(
            f"knn.manifest {cfg.knn.manifest} needs two classes and two patients or more for a k-NN score "
            f"(it has classes {list(manifest.classes)})",
            fix="point knn.manifest at a labelled manifest, or remove it",
        )
    dataset = LabelledDataset(records, pipeline, cache_dir=medtl_home() / "cache" / f"pretrain-{cfg.cache_key()}")
    return KnnProbe(dataset, [str(r["patient_id"]) for r in records], k=cfg.knn.k, batch_size=cfg.train.batch_size)


def pretrain(
    config: PretrainConfig | dict[str, Any] | str | Path | None,
    *,
    run_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> PretrainResult:
    """Pretrain an encoder on unlabeled scans and register it as weights ``local:<output.name>``.

    Args:
        config: a YAML file, dict or :class:`~medtl.pretraining.config.PretrainConfig`; with ``resume`` it may be
            None (the run's own config.yaml is used) and otherwise must equal it except for a longer
            ``train.epochs``.
        run_dir: the run folder (default ``output.dir/output.name``).
        overrides: dotted-key overrides (``{"train.epochs": 3}``).
        quiet: no progress lines.
        resume: continue the interrupted or failed run in ``run_dir`` from its last.ckpt, with its own config.

    Returns:
        A :class:`PretrainResult`; ``result.weights`` goes into ``model.weights`` of a training or compare config.

    Raises:
        ConfigError, ManifestError, TrainingError, DataLoadError, WeightsError: see their messages.
        RunLockedError: another live process writes the run folder.
        PretrainInterrupted: Ctrl-C or SIGTERM (result.json says ``interrupted`` and how to resume).
    """
    t0 = time.perf_counter()
    rank0 = is_rank_zero_env()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if run_dir is None and os.environ.get(RUN_DIR_ENV) and not rank0:
        run_dir = os.environ[RUN_DIR_ENV]  # processes started by Lightning's DDP launcher write rank 0's folder
    changes: dict[str, Any] = {}
    if resume:
        if run_dir is None:
            raise TrainingError("resume needs the run folder to continue", fix="pass --resume RUN_DIR")
        run = RunDir(run_dir)
        if rank0 and run.status == "ok":
            raise TrainingError(
                f"pretraining run {run.path} has finished already; its encoder is {run.file('encoder.safetensors')}",
                path=str(run.path),
                fix="start a new run (another output.name) to pretrain longer",
            )
        if not run.last_checkpoint.is_file() or not run.file(RunDir.CONFIG).is_file():
            raise TrainingError(
                f"cannot resume {run.path}: it holds no pretraining run with a last.ckpt (a run stopped before its "
                "first epoch ended, or another folder)",
                path=str(run.path),
                fix="start a new pretraining run instead",
            )
        check_resume_checkpoint(run, "start it again without --resume (it starts afresh) or use another output.name")
        asked = None
        if config is not None or overrides:
            asked = load_pretrain_config(config if config is not None else run.file(RunDir.CONFIG), overrides)
        cfg, changes = _resume_config(run, asked)
        name = cfg.output.name or run.path.name
    else:
        if config is None:
            raise ConfigError("pretrain needs a config (or resume=True with a run folder)")
        cfg = load_pretrain_config(config, overrides)
        if run_dir is None and cfg.output.name is None and world > 1:
            raise ConfigError("set output.name when launching with torchrun or SLURM, so every process writes one run")
        name = cfg.output.name or (Path(run_dir).name if run_dir is not None else _default_name(cfg))
        run = RunDir(Path(run_dir) if run_dir is not None else Path(cfg.output.dir) / name)
        if rank0 and run.status == "ok":
            raise TrainingError(
                f"run directory {run.path} already holds a pretraining run",
                path=str(run.path),
                fix="choose another output.name, or delete the folder",
            )
    if rank0:
        _check_name_free(cfg, name)
    run.path.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())
    torch.set_num_threads(cfg.train.threads or default_threads())  # as a training run does
    if not rank0:
        return _pretrain(cfg, run, name, resume, changes, quiet, t0, rank0)
    with run.lock():  # a second pretraining into this folder is refused while this one lives
        if not resume:  # a failed or interrupted attempt left here: start afresh, not from its checkpoint
            for stale in (run.last_checkpoint, run.file(RunDir.METRICS), run.file("encoder.safetensors")):
                stale.unlink(missing_ok=True)
        return _pretrain(cfg, run, name, resume, changes, quiet, t0, rank0)


def _pretrain(
    cfg: PretrainConfig,
    run: RunDir,
    name: str,
    resume: bool,
    changes: dict[str, Any],
    quiet: bool,
    t0: float,
    rank0: bool,
) -> PretrainResult:
    import lightning.pytorch as pl
    from monai.data import DataLoader

    import medtl
    from medtl.pretraining.data import PoolDataset, build_preprocessing, check_volumes, read_pool
    from medtl.pretraining.module import EpochLog, PretrainModule
    from medtl.pretraining.views import ContrastiveViews, RestorationViews
    from medtl.train.callbacks import AtomicCheckpointIO, LastCheckpoint

    run_dir = run.path
    say = (lambda msg: None) if quiet or not rank0 else (lambda msg: print(msg, flush=True))
    if rank0:
        run.write_result({"status": "running", "kind": "pretrain"})
        run.write_config(cfg)
    try:
        pool = read_pool(cfg)
        _check_pool(run, pool, resume=resume, rank0=rank0)
        if rank0 and pool.index_csv is not None:
            run.write_text("index.csv", pool.index_csv.decode())
        prep = build_preprocessing(cfg, pool.records[0]["image"], pool.records[0].get("series"))
        pipe = prep.pipeline
        dims = pipe.model_spatial_dims
        if dims == 3:
            check_volumes(pool)
        size = list(cfg.views.size or pipe.size)
        if len(size) == 1:
            size = size * dims
        if len(size) != dims:
            raise ConfigError(f"views.size {size} must have {dims} values for {dims}D scans")
        say(
            f"{'resuming' if resume else 'pretraining'} {cfg.model.arch} ({cfg.method}, from {cfg.model.weights}) on "
            f"{len(pool.records)} scans ({pool.n_patients} patients, {prep.modality} {prep.mode}); "
            f"run directory: {run_dir}"
        )
        pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
        if cfg.method == "simclr":
            views: Any = ContrastiveViews(cfg.views, size, pipe.post_eval)
        else:
            views = RestorationViews(cfg.views, cfg.genesis, size, pipe.post_eval)
        views.set_random_state(seed=cfg.train.seed + int(os.environ.get("RANK", "0") or 0))
        cache_dir = medtl_home() / "cache" / f"pretrain-{cfg.cache_key()}"
        dataset = PoolDataset(
            pool.records,
            pipe.pre,
            views,
            cache=cfg.train.cache,
            cache_dir=cache_dir,
            num_workers=cfg.train.num_workers,
        )
        encoder = medtl.create_model(
            cfg.model.arch, weights=prep.source, in_channels=pipe.in_channels, num_classes=0, spatial_dims=dims
        )
        module = PretrainModule(
            encoder,
            method=cfg.method,
            view_size=size,
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            warmup_epochs=cfg.train.warmup_epochs,
            simclr=cfg.simclr,
            genesis=cfg.genesis,
        )
        accelerator = {"cuda": "gpu"}.get(cfg.train.accelerator, cfg.train.accelerator)
        precision = resolve_precision(cfg.train.precision, accelerator)
        on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
        n_dev = cfg.train.devices * cfg.train.num_nodes
        per_device = -(-len(dataset) // n_dev)
        loader = DataLoader(
            dataset,
            batch_size=cfg.train.batch_size,
            shuffle=True,
            num_workers=cfg.train.num_workers,
            drop_last=per_device > cfg.train.batch_size,  # a last batch of one scan would have no negatives
            persistent_workers=cfg.train.num_workers > 0,
            pin_memory=on_gpu,
        )
        probe = _knn_probe(cfg, pipe) if cfg.knn.manifest is not None and rank0 else None

        def progress(row: dict[str, Any]) -> None:
            if row["epoch"] == 1 and log.baseline is not None:
                say(f"k-NN accuracy of the starting weights ({cfg.model.weights}): {log.baseline['knn_accuracy']:.3f}")
            knn = f", k-NN accuracy {row['knn_accuracy']:.3f}" if row["knn_accuracy"] == row["knn_accuracy"] else ""
            say(f"epoch {row['epoch']}/{cfg.train.epochs}: loss {row['train_loss']:.4f}{knn} ({row['time_s']:.0f}s)")

        log = EpochLog(run, probe=probe, every=cfg.knn.every, on_row=progress)
        # last.ckpt: the full state of the latest epoch, for resume; metrics.csv is rewritten once it is on disk
        last = LastCheckpoint(
            log,
            dirpath=run_dir,
            filename="last",
            save_top_k=1,
            save_on_train_epoch_end=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        strategy: Any = "auto"
        if n_dev > 1:
            from lightning.pytorch.strategies import DDPStrategy

            # restoration uses the stage outputs only: layers after the last stage (ConvNeXt's final norm) get no
            # gradient, and DDP must not wait for them
            strategy = DDPStrategy(find_unused_parameters=cfg.method == "genesis")
        # noise from Lightning that says nothing about this run
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        for logger_name in (
            "lightning.pytorch.utilities.rank_zero",
            "lightning.fabric.utilities.rank_zero",
            "lightning.pytorch.trainer.connectors.signal_connector",  # "Received SIGTERM": the interrupt line says it
        ):
            logging.getLogger(logger_name).setLevel(logging.WARNING)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
            strategy=strategy,
            precision=precision,
            max_epochs=cfg.train.epochs,
            callbacks=[log, last],
            plugins=[AtomicCheckpointIO()],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            sync_batchnorm=cfg.train.sync_batchnorm and n_dev > 1,
            limit_train_batches=cfg.train.limit_train_batches,
            deterministic=cfg.train.deterministic,
            default_root_dir=str(run_dir),
        )
        sigint = signal.getsignal(signal.SIGINT)
        try:
            trainer.fit(module, loader, ckpt_path=str(run.last_checkpoint) if resume else None)
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning turns Ctrl-C into SystemExit(1) after a graceful stop, and ignores SIGINT from then on
            signal.signal(signal.SIGINT, sigint or signal.default_int_handler)
            raise PretrainInterrupted(run, trainer.current_epoch) from None
        encoder = module.encoder.cpu().eval()
        if not trainer.is_global_zero:
            return PretrainResult(run_dir, None, None, {}, [], time.perf_counter() - t0, encoder, status="worker")

        from safetensors.torch import save

        encoder_file = run.write_bytes("encoder.safetensors", save(encoder_state(encoder)))
        norm = pipe.normalization
        record = {
            "method": cfg.method,
            "method_label": METHOD_LABELS[cfg.method],
            "arch": cfg.model.arch,
            "spatial_dims": dims,
            "in_channels": pipe.in_channels,
            "normalization": norm.to_dict(),
            "preprocessing": {
                "modality": prep.modality,
                "mode": prep.mode,
                "size": list(pipe.size),
                **{k: v for k, v in pipe.description.items() if k not in ("augment", "size")},
            },
            "input_size": size,
            "epochs": len(log.rows),
            "started_from": cfg.model.weights,
            "data": {
                "manifest_sha256": pool.manifest_sha256,
                "n_scans": len(pool.records),
                "n_patients": pool.n_patients,
                "modality": prep.modality,
            },
            "final_loss": log.rows[-1]["train_loss"] if log.rows else None,
            "license": "as the owner of the pretraining data states",
            "citation": _CITATIONS[cfg.method],
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "medtl_version": medtl.__version__,
        }
        weights: str | None = str(encoder_file.resolve())
        if cfg.output.register_weights:
            register_local_source(name, encoder_file, record, overwrite=cfg.output.overwrite)
            weights = LOCAL_PREFIX + name
            record = json.loads((local_weights_dir() / name / "source.json").read_text())
        _write_json(run, "source.json", record)
        seconds = time.perf_counter() - t0
        last_row = log.rows[-1] if log.rows else {}
        run.write_result(
            {
                "status": "ok",
                "kind": "pretrain",
                "weights": weights,
                "encoder_file": str(encoder_file),
                "method": cfg.method,
                "arch": cfg.model.arch,
                "epochs_run": len(log.rows),
                "epochs_planned": cfg.train.epochs,
                "resumed_with": changes or None,
                "final_loss": last_row.get("train_loss"),
                "first_loss": log.rows[0]["train_loss"] if log.rows else None,
                "knn_accuracy": _finite(last_row.get("knn_accuracy")),
                "knn_balanced_accuracy": _finite(last_row.get("knn_balanced_accuracy")),
                "knn_before": log.baseline,
                "seconds": seconds,
                "precision": precision,
                "devices": cfg.train.devices,
                "n_scans": len(pool.records),
                "n_patients": pool.n_patients,
            }
        )
        # the encoder is in encoder.safetensors; the full state (optimizer included, ~3x its size) served resume only
        run.last_checkpoint.unlink(missing_ok=True)
        say(f"done in {seconds:.0f}s: encoder {encoder_file}; use it as model.weights: {weights}")
        return PretrainResult(run_dir, encoder_file, weights, record, list(log.rows), seconds, encoder)
    except BaseException as exc:
        if rank0:
            run.write_stopped(exc, seconds=time.perf_counter() - t0, command="medtl pretrain", kind="pretrain")
        raise


def _finite(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and v != v) else float(v)
