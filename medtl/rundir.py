"""``RunDir``: the one reader and writer of a run folder's files.

A run folder holds::

    config.yaml            the resolved config (defaults filled in, absolute paths)
    splits.csv             patient_id, split, label, used (1: in the training subset of label_fraction)
    preprocessing.json     what the transforms were built from (modality, mode, size, channels, normalisation...)
    load_report.json       what the weights loader matched, adapted and left random
    metrics.csv            one row per epoch: epoch, time_s, train_loss, val_<metric>..., lr
    best.ckpt, last.ckpt   Lightning checkpoints (best: weights only, by ``train.monitor``; last: full state)
    predictions_val.csv    per scan: image, patient_id, label, prob_<class>..., pred
    predictions_test.csv   the same for the test split (absent without test patients)
    model_card.md          data, weights provenance, preprocessing, training, metrics
    result.json            status (running | ok | failed | interrupted), metrics, seconds, provenance...
    .lock                  the PID and host of the process writing the folder

Train, predict, evaluate and compare read and write these files only through this class. Every write is
atomic (a temporary file renamed into place), so a kill never leaves half a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import socket
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import MedtlError, RunDirError
from medtl.utils import atomic_write_bytes

__all__ = ["RunDir", "RunLockedError", "json_clean", "folder_lock", "lock_holder"]


class RunLockedError(RunDirError):
    """Another live process is writing the run folder."""


def json_clean(obj: Any) -> Any:
    """NaN/inf -> None, numpy and torch scalars -> Python, paths -> strings; so JSON files are strict."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # torch tensors, numpy arrays
        return json_clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return json_clean(obj.to_dict())
    return obj


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunDir:
    """A run folder: typed access to each of its files.

    Args:
        path: the folder (it need not exist yet).
    """

    CONFIG = "config.yaml"
    SPLITS = "splits.csv"
    PREPROCESSING = "preprocessing.json"
    LOAD_REPORT = "load_report.json"
    METRICS = "metrics.csv"
    RESULT = "result.json"
    CARD = "model_card.md"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- paths ----------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.ckpt"

    def predictions_file(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"

    @property
    def overlay_dir(self) -> Path:
        """``overlays/``: PNGs of predicted masks over their scans (segmentation runs)."""
        return self.path / "overlays"

    def overlays(self) -> list[Path]:
        """The overlay PNGs of the run, sorted by name (empty when there are none)."""
        return sorted(self.overlay_dir.glob("*.png")) if self.overlay_dir.is_dir() else []

    def holds_run(self) -> bool:
        """Whether a run has started here (a checkpoint or a result exists)."""
        return self.last_checkpoint.exists() or self.file(self.RESULT).exists()

    def checkpoint_for_inference(self) -> tuple[Path, str | None]:
        """best.ckpt, else last.ckpt with a note saying so.

        Raises:
            RunDirError: neither exists, or config.yaml / preprocessing.json is missing.
        """
        missing = [n for n in (self.CONFIG, self.PREPROCESSING) if not self.file(n).is_file()]
        ckpt, note = self.best_checkpoint, None
        if not ckpt.is_file():
            ckpt = self.last_checkpoint
            note = f"{self.path}: best.ckpt is missing; using last.ckpt (the weights of the last epoch)"
        if not ckpt.is_file():
            missing.append("best.ckpt")
        if missing:
            raise RunDirError(
                f"{self.path} is not a finished medtl run (missing {', '.join(missing)})",
                path=str(self.path),
                fix="pass the folder `medtl train` wrote",
            )
        return ckpt, note

    # -- generic --------------------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write a file of the folder atomically (e.g. an encoder's safetensors)."""
        path = self.file(name)
        atomic_write_bytes(path, data)
        return path

    def _write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode())

    def _write_json(self, name: str, obj: Any) -> Path:
        return self._write_text(name, json.dumps(json_clean(obj), indent=2, allow_nan=False) + "\n")

    def _read_json(self, name: str, *, required: bool = True) -> dict[str, Any]:
        path = self.file(name)
        if not path.is_file():
            if required:
                raise RunDirError(f"{path} is missing", path=str(path), fix="pass the folder `medtl train` wrote")
            return {}
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunDirError(
                f"{path} is not valid JSON ({exc})", path=str(path), fix="restore the file or train the run again"
            ) from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path} does not hold a JSON object", path=str(path))
        return data

    # -- config ---------------------------------------------------------------------------------------
    def write_config(self, config: Any) -> Path:
        from medtl.config import config_to_yaml

        return self._write_text(self.CONFIG, config_to_yaml(config))

    def read_config(self) -> Any:
        """The run's :class:`~medtl.config.ExperimentConfig`."""
        from medtl.config import load_config

        return load_config(self.file(self.CONFIG))

    # -- splits ---------------------------------------------------------------------------------------
    def write_splits(self, assignment: dict[str, str], labels: dict[str, str], used: Sequence[str] | None) -> Path:
        from medtl.data.splits import write_splits_csv

        write_splits_csv(self.file(self.SPLITS), assignment, labels, used=used)
        return self.file(self.SPLITS)

    def read_splits(self) -> dict[str, str]:
        """patient_id -> split."""
        from medtl.data.splits import read_splits_csv

        return read_splits_csv(self.file(self.SPLITS))

    def train_patient_counts(self) -> tuple[int, int]:
        """``(used, total)``: training patients the run used (the label-fraction subset), and all of them."""
        path = self.file(self.SPLITS)
        if not path.is_file():
            return 0, 0
        with open(path, newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if row.get("split") == "train"]
        return sum(row.get("used", "1") in ("1", "") for row in rows), len(rows)

    # -- preprocessing and load report ----------------------------------------------------------------
    def write_preprocessing(self, info: dict[str, Any]) -> Path:
        return self._write_json(self.PREPROCESSING, info)

    def read_preprocessing(self) -> dict[str, Any]:
        info = self._read_json(self.PREPROCESSING)
        needed = ("modality", "mode", "scan_dims", "in_channels", "model_spatial_dims", "normalization", "classes")
        missing = [k for k in needed if k not in info]
        if missing:
            path = self.file(self.PREPROCESSING)
            raise RunDirError(
                f"{path} lacks {', '.join(missing)}", path=str(path), fix="restore the file or train the run again"
            )
        return info

    def write_load_report(self, report: dict[str, Any]) -> Path:
        return self._write_json(self.LOAD_REPORT, report)

    def read_load_report(self) -> dict[str, Any]:
        return self._read_json(self.LOAD_REPORT, required=False)

    # -- metrics --------------------------------------------------------------------------------------
    def write_metrics(self, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in columns})
        return self._write_text(self.METRICS, buf.getvalue())

    def read_metrics(self) -> list[dict[str, float]]:
        """Rows of metrics.csv as floats (empty cells: NaN), one per epoch, in epoch order."""
        path = self.file(self.METRICS)
        if not path.is_file():
            return []
        by_epoch: dict[int, dict[str, float]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                merged = by_epoch.setdefault(epoch, {"epoch": float(epoch)})
                for k, v in row.items():
                    if k is None or k == "epoch":
                        continue
                    try:
                        merged[k] = float(v) if v not in (None, "") else math.nan
                    except ValueError:
                        continue
        return [by_epoch[e] for e in sorted(by_epoch)]

    # -- predictions ----------------------------------------------------------------------------------
    def write_predictions(self, split: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
        path = self.predictions_file(split)
        write_prediction_csv(path, columns, rows)
        return path

    def read_predictions(self, split: str, classes: Sequence[str]) -> tuple[list[str], list[int], np.ndarray]:
        """``(patient_ids, labels, probs (n, C))`` per scan from predictions_<split>.csv.

        Raises:
            RunDirError: the file is missing or lacks a ``prob_<class>`` column.
        """
        path = self.predictions_file(split)
        if not path.is_file():
            raise RunDirError(f"{path} is missing: the run did not write {split} predictions", path=str(path))
        pids, labels, probs = [], [], []
        cols = [f"prob_{c}" for c in classes]
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in cols if c not in (reader.fieldnames or [])]
            if missing:
                raise RunDirError(f"{path}: columns {missing} missing (found {reader.fieldnames})", path=str(path))
            for row in reader:
                lab = row["label"]
                labels.append(list(classes).index(lab) if lab in classes else int(float(lab)))
                pids.append(row.get("patient_id") or row.get("image") or "")
                probs.append([float(row[c]) for c in cols])
        return pids, labels, np.asarray(probs, dtype=float).reshape(len(labels), len(cols))

    def read_prediction_rows(self, split: str) -> list[dict[str, str]]:
        """The rows of predictions_<split>.csv as written (segmentation: one row of metrics per scan).

        Raises:
            RunDirError: the file is missing.
        """
        path = self.predictions_file(split)
        if not path.is_file():
            raise RunDirError(f"{path} is missing: the run did not write {split} predictions", path=str(path))
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    # -- resume ---------------------------------------------------------------------------------------
    def resume_changes(self, saved: dict[str, Any], asked: dict[str, Any] | None) -> dict[str, list[Any]]:
        """What resuming this run with the config ``asked`` changes in its ``saved`` config (both as dicts).

        Only a longer ``train.epochs`` (and where the run is written) may differ: a resumed run continues the
        run that was started, or it is a new run.

        Returns:
            ``{}``, or ``{"train.epochs": [saved, asked]}`` (recorded in result.json).

        Raises:
            TrainingError: other fields differ (they are listed), or fewer epochs are asked.
        """
        from medtl.errors import TrainingError

        if asked is None:
            return {}
        a, s = _flatten(asked), _flatten(saved)
        differ = sorted(k for k in set(a) | set(s) if a.get(k) != s.get(k) and not k.startswith(RESUMABLE))
        if differ:
            shown = "; ".join(f"{k}: run {s.get(k)!r}, asked {a.get(k)!r}" for k in differ[:8])
            raise TrainingError(
                f"cannot resume {self.path} with another config ({len(differ)} field(s) differ: {shown})",
                path=str(self.path),
                fix="resume with the run's own config.yaml (only train.epochs, --epochs, may extend it), "
                "or start a new run",
            )
        old, new = s.get("train.epochs"), a.get("train.epochs")
        if old == new:
            return {}
        if new < old:
            raise TrainingError(f"cannot resume {self.path} with fewer epochs ({new} < {old})", path=str(self.path))
        return {"train.epochs": [old, new]}

    # -- result and card ------------------------------------------------------------------------------
    def write_result(self, result: dict[str, Any]) -> Path:
        return self._write_json(self.RESULT, {"run_dir": str(self.path), **result})

    def write_stopped(self, exc: BaseException, *, seconds: float, command: str, **extra: Any) -> None:
        """result.json of a run that stopped unfinished: ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` with the
        reason, and ``<command> --resume RUN`` when a checkpoint exists. Call it from the ``except`` block (the
        traceback of an unexpected error is kept). An unwritable folder is ignored: the original error is the one
        the user needs to see."""
        interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
        expected = isinstance(exc, MedtlError | KeyboardInterrupt)
        with contextlib.suppress(MedtlError):
            self.write_result(
                {
                    "status": "interrupted" if interrupted else "failed",
                    **extra,
                    "error": "interrupted" if interrupted else f"{type(exc).__name__}: {exc}",
                    "error_type": type(exc).__name__,
                    "traceback": None if expected else traceback.format_exc(limit=20),
                    "seconds": seconds,
                    "resume": f"{command} --resume {self.path}" if self.last_checkpoint.is_file() else None,
                }
            )

    def read_result(self) -> dict[str, Any]:
        """result.json, or ``{}`` when the run has not started."""
        return self._read_json(self.RESULT, required=False)

    @property
    def status(self) -> str:
        """``pending`` (nothing yet), ``running``, ``ok``, ``failed`` or ``interrupted``."""
        return str(self.read_result().get("status", "pending"))

    def write_card(self, text: str) -> Path:
        return self._write_text(self.CARD, text)

    def read_text(self, name: str) -> str | None:
        """A small text file of the folder (e.g. a key written by ``compare``), or None."""
        path = self.file(name)
        return path.read_text() if path.is_file() else None

    def write_text(self, name: str, text: str) -> Path:
        return self._write_text(name, text)

    # -- lock -----------------------------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the folder's lock: a second writer of the same run is refused while this one lives.

        A lock left by a process that no longer exists (a crash, kill -9) on this host is taken over.

        Raises:
            RunLockedError: another live process holds the lock.
        """
        return folder_lock(
            self.path, what="run folder", fix="wait for that process to end, or choose another output.name"
        )

    @staticmethod
    def _lock_holder(path: Path) -> str | None:
        """``"PID on HOST"`` of a live holder, or None when the lock is stale."""
        return lock_holder(path)


def lock_holder(lock_file: str | os.PathLike[str]) -> str | None:
    """``"PID"`` (this host) or ``"PID on HOST"`` of the live process holding a lock file, or None when there is no
    lock or it is stale (its process on this host is gone). A holder on another host cannot be checked: it is
    assumed alive."""
    try:
        pid_s, _, host = Path(lock_file).read_text().strip().partition(" ")
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    if host and host != socket.gethostname():
        return f"{pid} on {host}"
    return f"{pid}" if _pid_alive(pid) else None


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike[str], *, what: str = "folder", fix: str = "wait for that process to end"
) -> Iterator[None]:
    """Hold ``<folder>/.lock`` (the PID and host of this process) while the block runs.

    A second holder is refused while the first lives; a lock left by a process that no longer exists on this
    host (a crash, kill -9) is taken over. The folder is created if needed. Not re-entrant: a process holding
    the lock is refused like any other.

    Args:
        folder: the folder to lock.
        what: how the error names the folder (``run folder``, ``comparison folder``).
        fix: what the error tells the user to do.

    Raises:
        RunLockedError: another live process holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RunDir.LOCK
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(path)
            if holder is None:  # stale: its process is gone
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise RunLockedError(f"{what} {folder} is in use by process {holder}", path=str(folder), fix=fix) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:  # pragma: no cover - two processes racing for a stale lock
        raise RunLockedError(f"cannot take the lock of {folder}", path=str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == me:
                path.unlink()


#: what a resumed run may change: where it is written, and a longer run
RESUMABLE = ("train.epochs", "output.dir", "output.name")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_prediction_csv(path: str | os.PathLike[str], columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """A predictions CSV (probabilities with 6 decimals), written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([f"{row[c]:.6f}" if isinstance(row[c], float) else row[c] for c in columns])
    atomic_write_bytes(path, buf.getvalue().encode())
