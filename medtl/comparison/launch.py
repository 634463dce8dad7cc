"""Training the runs of a comparison: one after another, in parallel worker processes, or as submitit jobs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl.errors import ConfigError, MedtlError
from medtl.train.rundir import RunDir

__all__ = ["Job", "train_run", "execute", "slurm_executor", "config_key", "is_finished"]

_KEY_FILE = "compare_key.txt"


def config_key(run_cfg: Any) -> str:
    """Hash of a run's resolved config: a finished run is reused only if it was made with the same config."""
    blob = json.dumps(run_cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_finished(run: RunDir, key: str) -> bool:
    try:
        return run.status == "ok" and (run.read_text(_KEY_FILE) or "").strip() == key
    except MedtlError:  # a corrupt result.json: not finished
        return False


@dataclass
class Job:
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


def execute(
    jobs: list[Job], *, parallel: int, launcher: Any, say: Callable[[str], None]
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
