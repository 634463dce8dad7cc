"""Calibration of a trained classifier's probabilities: temperature scaling (Guo et al. 2017).

One temperature ``T`` divides every logit before the softmax: the arg-max (the predicted class) never changes, only
how sure the probabilities are. ``T`` is fitted on the validation patients' logits after training by minimising their
negative log-likelihood with L-BFGS over ``log T`` (so ``T`` stays positive), in float64. When the validation scans
are perfectly separated the likelihood keeps rising as ``T`` falls, so ``T`` is kept within
:data:`TEMPERATURE_RANGE`.

:func:`collect_logits` gives the raw network outputs of a dataset (per sample: the slices of a 2.5D scan are
samples, each with its scan's label), :func:`fit_temperature` the temperature.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

__all__ = ["TEMPERATURE_RANGE", "collect_logits", "fit_temperature", "nll"]

#: The smallest and largest temperature :func:`fit_temperature` returns.
TEMPERATURE_RANGE = (0.05, 20.0)


@torch.no_grad()
def collect_logits(
    model: nn.Module,
    dataset: Any,
    target: Any,
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    precision: str = "32-true",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The raw outputs of ``model`` on every sample of ``dataset`` (no augmentation), in float32 on the CPU.

    Args:
        target: the task's ``target(batch)`` (:meth:`medtl.tasks.base.Task.target`).

    Returns:
        ``(logits (n, outputs), targets (n,), scan ids (n,))``.
    """
    from medtl.train.inference import make_loader

    device = torch.device(device)
    model = model.to(device).eval()
    loader = make_loader(dataset, batch_size=batch_size, train=False)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if device.type == "cuda" and precision.startswith("bf16")
        else contextlib.nullcontext()
    )
    logits, targets, scans = [], [], []
    with autocast:
        for batch in loader:
            logits.append(model(batch["image"].to(device)).float().cpu())
            targets.append(torch.as_tensor(target(batch)).cpu())
            scans.append(torch.as_tensor(batch["scan"]).reshape(-1).cpu())
    if not logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(targets), torch.cat(scans)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under ``softmax(logits / temperature)``."""
    x = logits.double() / temperature
    return float(nn.functional.cross_entropy(x, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 200) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Args:
        logits: ``(n, classes)`` raw outputs.
        labels: ``n`` class indices.
        max_iter: L-BFGS iterations.

    Returns:
        ``T`` within :data:`TEMPERATURE_RANGE` (1.0 for no cases).
    """
    if logits.numel() == 0:
        return 1.0
    x = logits.detach().double()
    y = labels.detach().long()
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        # clamped inside the loss too, so a separable set cannot drive log T to -inf
        loss = nn.functional.cross_entropy(x / log_t.clamp(lo, hi).exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    value = float(log_t.detach().clamp(lo, hi).exp())
    return value if math.isfinite(value) else 1.0
