"""Lightning callbacks and plugins of a medtl run: metrics.csv, plain progress lines, atomic checkpoints."""

from __future__ import annotations

import ast
import math
import random
import sys
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from medtl.rundir import RunDir
from medtl.utils import atomic_write

__all__ = ["MetricsCSV", "LastCheckpoint", "RngState", "PlainProgress", "AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))


class MetricsCSV(pl.Callback):
    """One row per epoch in ``metrics.csv`` (rank 0), written once the epoch's checkpoints are on disk.

    ``time_s`` is wall-clock seconds since the run started, summed over resumed sessions. The rows live in
    the checkpoint too, so a resumed run rewrites the file from its checkpoint: a kill between checkpoint and
    CSV never leaves a logged epoch that resume cannot continue, and the epoch that was killed is redone.

    Args:
        run: the run folder.
        columns: the CSV's columns (``epoch``, ``time_s``, ``train_loss``, ``val_<metric>``..., ``lr``).
    """

    def __init__(self, run: RunDir, columns: list[str]) -> None:
        self.run = run
        self.columns = columns
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
            self.run.write_metrics(self.rows, self.columns)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = pl_module.val_metrics
        lrs = [g["lr"] for g in trainer.optimizers[0].param_groups] if trainer.optimizers else [math.nan]
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch + 1,
            "time_s": round(self.elapsed(), 3),
            "train_loss": float(pl_module.train_loss_epoch),
            "lr": float(max(lrs)),
        }
        for col in self.columns:
            if col.startswith("val_"):
                row[col] = float(m.get(col[4:], math.nan))
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def write(self) -> None:
        self.run.write_metrics(self.rows, self.columns)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write()


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt (no monitor, the latest epoch); metrics.csv is rewritten only once it is safely on disk."""

    def __init__(self, metrics: MetricsCSV, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            self.metrics.write()


class RngState(pl.Callback):
    """Random state in last.ckpt, so a resumed run draws the same batches and augmentations as an uninterrupted one.

    Saved: torch's, numpy's and Python's global generators (shuffling, worker seeds), the training
    augmentation's own generators.
    """

    def __init__(self, train_dataset: Any) -> None:
        self.dataset = train_dataset

    @property
    def state_key(self) -> str:
        return "RngState"

    def _randomizables(self) -> list[Any]:
        """Every random generator of the training transforms, nested ones included (RandFlipd's RandFlip...)."""
        from medtl.data.dataset import random_transforms

        return random_transforms(self.dataset.post)

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": repr(random.getstate()),
            "transforms": [
                torch.from_numpy(t.R.get_state()[1].astype(np.int64)).tolist() + [int(t.R.get_state()[2])]
                for t in self._randomizables()
            ],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored at once: Lightning creates the first resumed epoch's data iterator (which draws the shuffle)
        # right after restoring callbacks, before any epoch hook runs.
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
        random.setstate(ast.literal_eval(state_dict["python"]))
        for t, saved in zip(self._randomizables(), state_dict["transforms"], strict=False):
            t.R.set_state(("MT19937", np.asarray(saved[:-1], dtype=np.uint32), int(saved[-1])))


class PlainProgress(pl.Callback):
    """One plain line per epoch, for logs and pipes where a live progress bar would be noise."""

    def __init__(self, metrics: MetricsCSV, stream: Any = None) -> None:
        self.metrics = metrics
        self.stream = stream

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.metrics.rows:
            return
        from medtl.metric_specs import LOSS, METRIC_SPECS, default_metric

        r = self.metrics.rows[-1]
        parts = [f"epoch {r['epoch']}/{trainer.max_epochs}"]
        # the losses, the task's primary metric and the checkpoint's monitor (when it is another)
        shown = ["train_loss", LOSS.monitor, METRIC_SPECS[default_metric(pl_module.task.name)].monitor]
        monitor = getattr(getattr(pl_module, "cfg", None), "monitor", None)
        for k in dict.fromkeys([*shown, *([monitor] if monitor else [])]):
            v = r.get(k)
            if isinstance(v, float) and not math.isnan(v):
                parts.append(f"{k} {v:.4f}")
        parts.append(f"{r['time_s']:.1f}s")
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
