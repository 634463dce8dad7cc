"""The Lightning side of pretraining: the module (encoder + method) and the per-epoch log with a k-NN probe."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from medtl.rundir import RunDir

__all__ = ["PretrainModule", "EpochLog", "KnnProbe", "METRICS_COLUMNS"]

METRICS_COLUMNS = ["epoch", "time_s", "train_loss", "lr", "knn_accuracy", "knn_balanced_accuracy"]


class PretrainModule(pl.LightningModule):
    """An encoder (a :class:`~medtl.backbones.model.MedtlModel`) trained by one self-supervised method.

    Args:
        encoder: a headless encoder (``num_classes=0``).
        method: ``simclr`` or ``genesis``.
        view_size: spatial size of the views (genesis: of the restored image).
        lr, weight_decay, warmup_epochs: AdamW with linear warm-up, then cosine decay, stepped per batch.
        simclr: the SimCLR section of the config. genesis: the Genesis section.
    """

    def __init__(
        self,
        encoder: Any,
        *,
        method: str,
        view_size: Sequence[int],
        lr: float,
        weight_decay: float,
        warmup_epochs: float,
        simclr: Any,
        genesis: Any,
    ) -> None:
        super().__init__()
        from medtl.pretraining.methods import GenesisDecoder, simclr_parts

        self.encoder = encoder  # headless (num_classes=0): forward gives pooled features
        self.method = method
        self.view_size = list(view_size)
        self.lr, self.weight_decay, self.warmup_epochs = lr, weight_decay, warmup_epochs
        if method == "simclr":
            self.head, self.criterion = simclr_parts(
                encoder.num_features, simclr.hidden_dim, simclr.output_dim, simclr.temperature
            )
        else:
            # every scale but the stem's: the decoder restores the input from the encoder's own stages
            info = encoder.feature_info
            self.scales = [f.index for f in info[1:]] if len(info) > 1 else [info[0].index]
            channels = [info[i].channels for i in self.scales]
            self.decoder = GenesisDecoder(channels, encoder.in_channels, encoder.spatial_dims, genesis.decoder_width)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.method == "simclr":
            v1, v2 = batch["view1"], batch["view2"]
            # one forward pass over both views: batch-norm statistics over the whole batch, as in SimCLR
            z = self.head(self.encoder.forward_features(torch.cat([v1, v2])))
            z1, z2 = z.float().chunk(2)
            loss = self.criterion(z1, z2)
        else:
            x, target = batch["image"], batch["target"]
            restored = self.decoder(self.encoder.forward_features(x, out_indices=self.scales), x.shape[2:])
            loss = F.mse_loss(restored.float(), target.float())
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = min(total - 1, int(round(self.warmup_epochs * per_epoch)))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class KnnProbe:
    """k-NN classification of a small labelled manifest from the encoder's pooled features.

    Scores are cross-validated by patient (scikit-learn ``GroupKFold``, cosine distance), so a scan's
    neighbours never include scans of its own patient.

    Args:
        dataset: a sequence of ``(image tensor, label)`` pairs, already preprocessed and normalised.
        patients: the patient of each sample.
        k: neighbours.
        batch_size: forward batch size.
    """

    def __init__(self, dataset: Any, patients: Sequence[str], *, k: int, batch_size: int) -> None:
        self.dataset = dataset
        self.patients = list(patients)
        self.k = k
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, encoder: Any) -> dict[str, float]:
        """``knn_accuracy`` and ``knn_balanced_accuracy`` (per scan)."""
        import numpy as np
        from sklearn.metrics import accuracy_score, balanced_accuracy_score
        from sklearn.model_selection import GroupKFold, cross_val_predict
        from sklearn.neighbors import KNeighborsClassifier

        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        feats, labels = [], []
        try:
            for start in range(0, len(self.dataset), self.batch_size):
                items = [self.dataset[i] for i in range(start, min(len(self.dataset), start + self.batch_size))]
                x = torch.stack([img for img, _ in items]).to(device)
                with torch.autocast(device.type, enabled=False):
                    feats.append(encoder.forward_features(x.float()).float().cpu())
                labels += [int(y) for _, y in items]
        finally:
            encoder.train(was_training)
        X = torch.cat(feats).numpy()
        y = np.asarray(labels)
        n_groups = len(set(self.patients))
        cv = GroupKFold(n_splits=min(5, n_groups))
        k = max(1, min(self.k, len(y) - len(y) // cv.get_n_splits() - 1))
        pred = cross_val_predict(
            KNeighborsClassifier(n_neighbors=k, metric="cosine"), X, y, groups=self.patients, cv=cv
        )
        return {
            "knn_accuracy": float(accuracy_score(y, pred)),
            "knn_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        }


class EpochLog(pl.Callback):
    """Mean training loss per epoch (over every rank), learning rate, k-NN probe; one row per epoch in metrics.csv.

    With a probe, ``baseline`` holds its score of the starting weights, taken before the first step.

    Also averages the encoder's batch-norm running statistics over the DDP ranks when training ends, so every
    rank holds one identical encoder (parameters are kept equal by DDP already).

    Args:
        run: the run folder (its metrics.csv is written, through :class:`~medtl.rundir.RunDir`).
        probe: an optional :class:`KnnProbe`.
        every: run the probe every this many epochs (and after the last).
        on_row: called with each row on rank 0 (progress lines).
    """

    def __init__(self, run: RunDir, probe: KnnProbe | None = None, every: int = 5, on_row: Any = None) -> None:
        self.run = run
        self.probe = probe
        self.every = every
        self.on_row = on_row
        self.rows: list[dict[str, Any]] = []
        self.baseline: dict[str, float] | None = None
        self.elapsed_before = 0.0
        self._sum = 0.0
        self._n = 0
        self._t0 = time.perf_counter()

    @property
    def state_key(self) -> str:
        return "EpochLog"

    def state_dict(self) -> dict[str, Any]:
        """The rows so far and the baseline travel in last.ckpt, so a resumed run logs every epoch once."""
        return {"rows": [dict(r) for r in self.rows], "baseline": self.baseline, "elapsed": self._elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
        self.baseline = state_dict.get("baseline")
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.probe is not None and self.baseline is None:
            # the starting weights' score: what pretraining has to beat
            self.baseline = self.probe.score(pl_module.encoder)
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # a resumed run: metrics.csv says what its checkpoint holds
            self.write()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sum, self._n = 0.0, 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        n = len(next(iter(batch.values())))
        self._sum += float(loss.detach()) * n
        self._n += n

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        totals = torch.tensor([self._sum, float(self._n)], dtype=torch.float64, device=pl_module.device)
        totals = trainer.strategy.reduce(totals, reduce_op="sum")  # every rank takes part
        epoch = trainer.current_epoch + 1
        row: dict[str, Any] = {
            "epoch": epoch,
            "time_s": self._elapsed(),
            "train_loss": float(totals[0] / max(totals[1], 1.0)),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            "knn_accuracy": float("nan"),
            "knn_balanced_accuracy": float("nan"),
        }
        last = epoch == trainer.max_epochs
        if trainer.is_global_zero:
            if self.probe is not None and (epoch % self.every == 0 or last):
                row.update(self.probe.score(pl_module.encoder))
            self.rows = [r for r in self.rows if r["epoch"] != epoch] + [row]
            if self.on_row is not None:
                self.on_row(row)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            for buf in pl_module.encoder.buffers():
                if buf.is_floating_point():
                    buf.copy_(trainer.strategy.reduce(buf.detach().clone(), reduce_op="mean"))

    def write(self) -> None:
        """Rewrite metrics.csv (called once the epoch's checkpoint is on disk, and when a run starts)."""
        self.run.write_metrics(self.rows, METRICS_COLUMNS)
