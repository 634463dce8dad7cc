"""The GPU paths on the CPU: bf16 autocast end to end, and DDP over 2 gloo processes with the fine_tune schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.tasks import base_config

from medtl.rundir import RunDir
from medtl.train import fine_tune, load_run
from medtl.train.inference import predict_dataset


def test_bf16_mixed_trains_validates_with_precise_bn_and_writes_results(xray_task: Path, tmp_path: Path) -> None:
    cfg = base_config(
        xray_task,
        tmp_path,
        preprocess={"size": [16, 16]},
        train={"epochs": 2, "batch_size": 4, "precision": "bf16-mixed", "precise_bn_batches": 3, "accelerator": "cpu"},
        # augmentation runs in this process (num_workers 0): precise BN must draw its batches outside autocast
        augment={"enabled": True, "affine_prob": 1.0, "rotate_deg": 10.0, "zoom": 0.1},
        output={"name": "bf16"},
    )
    result = fine_tune(cfg, quiet=True)
    res = RunDir(result.run_dir).read_result()
    assert res["status"] == "ok" and res["precision"] == "bf16-mixed" and res["epochs_run"] == 2
    assert 0.0 <= result.metrics["val"]["auroc"] <= 1.0
    rows = RunDir(result.run_dir).read_metrics()
    assert len(rows) == 2 and all(0.0 <= r["val_auroc"] <= 1.0 for r in rows)


_DDP_SCRIPT = """
import torch, lightning.pytorch as pl
from medtl.train import fine_tune

class Dump(pl.Callback):
    def on_fit_end(self, trainer, module):
        state = {{k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()}}
        torch.save(state, {out!r} + f"/rank{{trainer.global_rank}}.pt")

fine_tune({cfg!r}, quiet=True, callbacks=[Dump()])
"""


def test_ddp_fine_tune_keeps_replicas_identical_and_the_logged_metric_reproducible(
    xray_task: Path, tmp_path: Path
) -> None:
    """2 processes (gloo) with the fine_tune schedule: the body frozen for one epoch, then unfrozen.

    Before the fix the body was frozen before DDP wrapped the model, so its gradients were never all-reduced
    and each rank trained its own body.
    """
    cfg = base_config(
        xray_task,
        tmp_path / "runs",
        preprocess={"size": [16, 16]},
        model={"arch": "resnet18", "weights": "scratch"},
        train={
            "epochs": 3,
            "batch_size": 4,
            "schedule": "fine_tune",
            "freeze_epochs": 1,
            "accelerator": "cpu",
            "devices": 2,
            "monitor": "val_auroc",
            "threads": 1,
        },
        output={"name": "ddp"},
    )
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT.format(out=str(tmp_path), cfg=json.loads(json.dumps(cfg)))))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("MEDTL_RUN_DIR", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    differ = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not differ, f"replicas differ in {differ[:5]}"

    run = RunDir(tmp_path / "runs" / "ddp")
    res = run.read_result()
    assert res["status"] == "ok" and res["devices"] == 2
    logged = {int(r["epoch"]): r["val_auroc"] for r in run.read_metrics()}
    # the best epoch's logged validation AUROC is the one best.ckpt gives on the same validation scans
    loaded = load_run(run.path, quiet=True)

    val = [r for r in _records(run) if r["split"] == "val"]
    scores, targets, _ = predict_dataset(
        loaded.model, loaded.task.eval_dataset(loaded.config, loaded.pipeline, val), loaded.task, batch_size=4
    )
    recomputed = loaded.task.metrics(scores, targets)["auroc"]
    assert res["best_epoch"] in logged
    assert recomputed == pytest.approx(logged[res["best_epoch"]], abs=1e-6)
    assert res["metrics"]["val"]["auroc"] == pytest.approx(recomputed, abs=1e-6)


def _records(run: RunDir) -> list[dict]:
    """The run's manifest rows with their split (from its config and splits.csv)."""
    from medtl.data import Manifest

    cfg = run.read_config()
    assignment = run.read_splits()
    records = Manifest.from_csv(cfg.data.manifest).to_dicts()
    return [dict(r, split=assignment[str(r["patient_id"])]) for r in records]
