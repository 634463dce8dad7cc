"""Training the runs of a comparison: one after another, in parallel worker processes, or as submitit jobs.

Each finished run holds ``compare_key.json``: the run's config (without where it is written) and the hashes of
what it was trained and tested on (the manifest file, the shared splits.csv, the pseudonym secret's check value,
the weights file). ``compare`` reuses a finished run only when that record equals the one it would write now.
"""

from __future__ import annotations

import contextlib
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
from medtl.rundir import RunDir, RunLockedError

__all__ = [
    "Job",
    "RunInputs",
    "train_run",
    "execute",
    "slurm_executor",
    "config_key",
    "key_record",
    "key_changes",
    "read_key_record",
    "is_finished",
    "file_sha256",
    "weights_sha256",
    "show_value",
]

KEY_FILE = "compare_key.json"
#: version of the reuse record; a run without one (or with another) was made by an older medtl
KEY_FORMAT = 2
#: where a run is written and the path of the shared splits.csv (its content is hashed), and where its preprocessed
#: scans are kept (train.cache: the same samples either way): not what it learns from, so a comparison folder that was
#: moved or copied, or run again with another cache, still reuses its runs
_LOCATION_KEYS = ("output.dir", "output.name", "splits.file", "train.cache")
#: words for the hashed inputs when they differ
_INPUT_WORDS = {
    "manifest_sha256": "manifest content",
    "splits_sha256": "splits.csv content",
    "pseudonym_check": "pseudonym secret",
    "weights_sha256": "weights file content",
}


@dataclass(frozen=True)
class RunInputs:
    """What a run of a comparison is trained and tested on besides its config.

    Attributes:
        manifest_sha256: SHA-256 of the manifest file's bytes (hashed once per comparison).
        splits_sha256: SHA-256 of the shared splits.csv.
        pseudonym_check: :func:`medtl.train.experiment.pseudonym_check` of the secret the patients were hashed with.
        weights_sha256: SHA-256 of the weights file (a file path or a ``local:`` source), else None.
    """

    manifest_sha256: str
    splits_sha256: str
    pseudonym_check: str
    weights_sha256: str | None = None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(weights: Any, cache: dict[str, str | None] | None = None) -> str | None:
    """SHA-256 of the weights a run loads when they are a file (its bytes) or a ``local:`` source (its record's).

    Registered sources (``imagenet``, ``medicalnet``...) pin their files by name and are not hashed; ``scratch`` loads
    nothing. A file or source that does not exist gives ``"missing"`` (the run itself then fails with the reason).

    Args:
        weights: the run's ``model.weights``.
        cache: remembered hashes by ``weights`` value, so each file is hashed once per comparison.
    """
    if weights is None:
        return None
    name = str(weights)
    if cache is not None and name in cache:
        return cache[name]
    value: str | None = None
    if name.startswith("local:"):
        from medtl.weights.local import resolve_local_source

        try:
            file, record = resolve_local_source(name)
            value = record.get("encoder_sha256") or file_sha256(file)
        except (MedtlError, OSError):
            value = "missing"
    else:
        from medtl.weights.sources import is_weight_file_path

        if name != "scratch" and is_weight_file_path(name):
            from medtl.weights.cache import sha256_file

            path = Path(name).expanduser()
            value = sha256_file(path) if path.is_file() else "missing"
    if cache is not None:
        cache[name] = value
    return value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def key_record(run_cfg: Any, inputs: RunInputs) -> dict[str, Any]:
    """The reuse record of a run: its config (flattened, without where it is written), the hashes of its inputs,
    and ``key``, the hash of all of them."""
    config = {k: v for k, v in _flatten(run_cfg.to_dict()).items() if k not in _LOCATION_KEYS}
    parts: dict[str, Any] = {
        "format": KEY_FORMAT,
        "config": json.loads(json.dumps(config, sort_keys=True, default=str)),
        "manifest_sha256": inputs.manifest_sha256,
        "splits_sha256": inputs.splits_sha256,
        "pseudonym_check": inputs.pseudonym_check,
        "weights_sha256": inputs.weights_sha256,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return {"key": key, **parts}


def config_key(run_cfg: Any, inputs: RunInputs) -> str:
    """Hash of a run's resolved config and of what it is trained and tested on (see :func:`key_record`): a finished
    run is reused only if it was made from the same config, manifest, splits, secret and weights file."""
    return key_record(run_cfg, inputs)["key"]


def read_key_record(run: RunDir) -> dict[str, Any] | None:
    """The run's reuse record, or None (none written: an unfinished run, or one made by an older medtl)."""
    try:
        text = run.read_text(KEY_FILE)
        record = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != KEY_FORMAT:
        return None
    return record


def is_finished(run: RunDir, key: str) -> bool:
    """Whether the run finished (status ok) from exactly these inputs (its reuse record's ``key``)."""
    try:
        if run.status != "ok":
            return False
    except MedtlError:  # a corrupt result.json: not finished
        return False
    record = read_key_record(run)
    return record is not None and record.get("key") == key


def show_value(value: Any) -> str:
    """A config value as a change list prints it: ``0.001``, ``scratch``, ``[16, 16]``, ``null``."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def key_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between a finished run's reuse record and the one asked for, in words
    (``train.lr: 0.001 -> 0.01``, ``manifest content``, ``pseudonym secret``); a run without a record was made by
    an older medtl."""
    if old is None:
        return ["made by an older medtl"]
    changes = []
    a, b = old.get("config") or {}, new.get("config") or {}
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            changes.append(f"{k}: {show_value(a.get(k))} -> {show_value(b.get(k))}")
    for field, words in _INPUT_WORDS.items():
        same_weights_name = a.get("model.weights") == b.get("model.weights")
        if old.get(field) != new.get(field) and (field != "weights_sha256" or same_weights_name):
            changes.append(words)
    return changes


@dataclass
class Job:
    """One run to train: its place in the plan, the resolved config, the folder and its reuse record."""

    index: int
    tag: str
    config: dict[str, Any]
    run_dir: str
    record: dict[str, Any]


def _clear(run: RunDir) -> None:
    """Empty an unfinished run's folder while holding its lock, then remove it.

    Raises:
        RunLockedError: another live process holds the run (it is left as it is).
    """
    with run.lock():
        for child in run.path.iterdir():
            if child.name == RunDir.LOCK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    with contextlib.suppress(OSError):  # empty now; a process that took it meanwhile keeps it
        run.path.rmdir()


def train_run(config: dict[str, Any], run_dir: str, record: dict[str, Any], parallel: int = 1) -> str:
    """Train one run of a comparison (in this process, a worker process, or a SLURM job) and mark it finished.

    An unfinished attempt in the folder (failed, interrupted) is cleared first, under the run's lock; a folder
    another live process holds, or a finished run, is never cleared.

    Args:
        config: the run's resolved config (a dict).
        run_dir: the run folder.
        record: the reuse record (:func:`key_record`) written to ``compare_key.json`` when the run finishes.
        parallel: runs trained at once on this machine (sets the run's CPU threads).

    Returns:
        The run's status: ``ok``, ``failed`` (recorded in its result.json, not raised), ``locked`` (another live
        process holds the folder: nothing was done) or ``kept`` (a finished run is there: nothing was done).
    """
    from medtl.config import load_config
    from medtl.train import fine_tune
    from medtl.train.run import PARALLEL_ENV

    if parallel > 1:  # a worker process of --parallel; one run at a time keeps the share its environment gives it
        os.environ[PARALLEL_ENV] = str(parallel)
    run = RunDir(run_dir)
    if run.path.exists():
        with contextlib.suppress(MedtlError):
            if run.status == "ok":  # finished meanwhile, by another process: compare decides about it, not this
                return "kept"
        try:
            _clear(run)
        except RunLockedError:
            return "locked"
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
    run.write_text(KEY_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return "ok"


def _untouched(status: Any, tag: str, say: Callable[[str], None]) -> None:
    if status == "locked":
        say(f"{tag}: not trained: another process holds its folder")
    elif status == "kept":
        say(f"{tag}: not trained: a finished run appeared in its folder meanwhile")


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
            submitted = [(j, launcher.submit(train_run, j.config, j.run_dir, j.record)) for j in jobs]
        for j, _ in submitted:
            say(f"{j.tag}: submitted")
        for j, job in submitted:
            t0 = time.perf_counter()
            try:
                _untouched(job.result(), j.tag, say)
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
            _untouched(train_run(j.config, j.run_dir, j.record), j.tag, say)
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
            futures[pool.submit(train_run, j.config, j.run_dir, j.record, parallel)] = j
            t0[j.index] = time.perf_counter()
            say(f"{j.tag}: queued")
        try:
            todo = set(futures)
            while todo:
                done, todo = wait(todo, return_when=FIRST_COMPLETED)
                for fut in done:
                    j = futures[fut]
                    try:
                        _untouched(fut.result(), j.tag, say)
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
