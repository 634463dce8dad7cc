"""Learning-rate range test (Smith 2015, as fastai's ``lr_find``): a suggested rate and a PNG plot.

The model is trained for a few steps with an exponentially growing rate, in the state its first
training phase uses (body frozen for ``fine_tune``); the smoothed loss is recorded and the suggestion is
the rate of the steepest descent of the loss, before it diverges.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.config import ExperimentConfig, load_config
from medtl.errors import TrainingError

__all__ = ["LRFindResult", "lr_find", "suggest_lr"]


@dataclass
class LRFindResult:
    """Rates tried, smoothed losses, the suggested rate and the plot's path."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    plot: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"suggestion": self.suggestion, "lrs": self.lrs, "losses": self.losses, "plot": str(self.plot)}


def suggest_lr(lrs: list[float], losses: list[float], skip_start: int = 3, skip_end: int = 2) -> float:
    """The rate where the smoothed loss falls fastest (most negative slope in log-rate)."""
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(losses, dtype=float)
    ok = np.isfinite(loss)
    lr, loss = lr[ok], loss[ok]
    if lr.size < skip_start + skip_end + 2:
        if lr.size == 0:
            raise TrainingError("the learning-rate range test produced no finite loss")
        return float(lr[int(np.argmin(loss))] / 10.0)
    sl = slice(skip_start, lr.size - skip_end)
    grads = np.gradient(loss[sl], np.log10(lr[sl]))
    return float(lr[sl][int(np.argmin(grads))])


def lr_find(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 60,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> LRFindResult:
    """Run the range test on the config's training data.

    Args:
        config: the experiment config.
        min_lr, max_lr: the range (log-spaced).
        num_steps: optimizer steps (the training loader is cycled).
        out: PNG path of the plot (a JSON with the curve is written next to it); None: no files.
        overrides: dotted-key config overrides.

    Returns:
        An :class:`LRFindResult`; its ``suggestion`` is a starting point for ``train.lr``.
    """
    import lightning.pytorch as pl

    from medtl.train.experiment import prepare_experiment
    from medtl.train.inference import make_loader
    from medtl.train.module import TaskModule

    cfg = load_config(config, overrides)
    pl.seed_everything(cfg.train.seed, verbose=False)
    exp = prepare_experiment(cfg)
    ds = exp.datasets["train"]
    module = TaskModule(exp.build_model(), exp.task, cfg.train, cfg.resolved_schedule())
    module.apply_phase(0)
    model = module.model
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.accelerator != "cpu" else "cpu")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=min_lr, weight_decay=cfg.train.weight_decay)
    loader = make_loader(ds, batch_size=cfg.train.batch_size, train=True, num_workers=cfg.train.num_workers)
    lrs, losses = [], []
    smooth, best, beta = 0.0, math.inf, 0.9
    factor = (max_lr / min_lr) ** (1.0 / max(num_steps - 1, 1))
    step = 0
    init_state = copy.deepcopy(model.state_dict())
    while step < num_steps:
        for batch in loader:
            lr = min_lr * factor**step
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = batch["image"].to(device), exp.task.target(batch).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = module.loss_fn.to(device)(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            v = float(loss.detach())
            smooth = beta * smooth + (1 - beta) * v
            s = smooth / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(s)
            best = min(best, s)
            step += 1
            if step >= num_steps or not math.isfinite(s) or s > 4 * best:
                break
        if step < num_steps and (not losses or not math.isfinite(losses[-1]) or losses[-1] > 4 * best):
            break
    model.load_state_dict(init_state)
    suggestion = suggest_lr(lrs, losses)
    result = LRFindResult(lrs, losses, suggestion, info={"steps": step, "schedule": cfg.resolved_schedule()})
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(lrs, losses)
        ax.set_xscale("log")
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2e}")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title(f"LR range test: {cfg.model.arch} ({cfg.model.weights})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        result.plot = out
        out.with_suffix(".json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
