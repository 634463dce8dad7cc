"""Lightning callbacks and plugins of a medtl run: metrics.csv, plain progress lines, atomic checkpoints."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from medtl.utils import atomic_write_bytes

__all__ = ["METRICS_COLUMNS", "MetricsCSV", "PlainProgress", "AtomicCheckpointIO"]

METRICS_COLUMNS = [
    "epoch",
    "time_s",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auroc",
    "val_f1",
    "lr",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


class MetricsCSV(pl.Callback):
    """One row per epoch in ``metrics.csv`` (rank 0), written after validation and before checkpoints.

    ``time_s`` is wall-clock seconds since the run started, summed over resumed sessions. The rows live in
    the checkpoint too, so a resumed run rewrites the file from its checkpoint: rows of epochs that were
    not checkpointed (the epoch that was killed) are dropped and then redone.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self._t0 = time.perf_counter()

    @property
    def state_key(self) -> str:
        return "MetricsCSV"

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))
        self._t0 = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        if trainer.is_global_zero:
            self._write()

    def _write(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in METRICS_COLUMNS})
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = getattr(pl_module, "val_metrics", {}) or {}
        lrs = [g["lr"] for g in trainer.optimizers[0].param_groups] if trainer.optimizers else [math.nan]
        row = {
            "epoch": trainer.current_epoch + 1,
            "time_s": round(self.elapsed(), 3),
            "train_loss": float(getattr(pl_module, "train_loss_epoch", math.nan)),
            "val_loss": float(m.get("loss", math.nan)),
            "val_accuracy": float(m.get("accuracy", math.nan)),
            "val_balanced_accuracy": float(m.get("balanced_accuracy", math.nan)),
            "val_auroc": float(m.get("auroc", math.nan)),
            "val_f1": float(m.get("f1", math.nan)),
            "lr": float(max(lrs)),
        }
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            self._write()


class PlainProgress(pl.Callback):
    """One plain line per epoch, for logs and pipes where a live progress bar would be noise."""

    def __init__(self, metrics: MetricsCSV, stream: Any = None) -> None:
        self.metrics = metrics
        self.stream = stream

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.metrics.rows:
            return
        r = self.metrics.rows[-1]
        parts = [f"epoch {r['epoch']}/{trainer.max_epochs}"]
        for k in ("train_loss", "val_loss", "val_accuracy", "val_auroc"):
            v = r.get(k)
            if isinstance(v, float) and not math.isnan(v):
                parts.append(f"{k} {v:.4f}")
        parts.append(f"{r['time_s']:.1f}s")
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
