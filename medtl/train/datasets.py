"""Class balance of an experiment's training data: inverse-frequency loss weights or a weighted sampler.

The datasets themselves are the task's (:meth:`medtl.tasks.base.Task.make_dataset`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from medtl.train.experiment import Experiment

__all__ = ["class_weights", "class_balance"]


def class_weights(labels: list[int], n_classes: int) -> list[float]:
    """Inverse-frequency loss weights: ``n / (n_classes * count)`` per class."""
    counts = Counter(labels)
    n = len(labels)
    return [n / (n_classes * max(counts.get(c, 0), 1)) for c in range(n_classes)]


def class_balance(exp: Experiment) -> torch.utils.data.Sampler | None:
    """The training sampler ``train.class_balance`` asks for (``sampler``: inverse-frequency draws).

    In segmentation the frequencies are those of the manifest's labels (the split's strata); a manifest without
    labels has one, so the draws are uniform.
    """
    if exp.config.train.class_balance != "sampler":
        return None
    labels = exp.datasets["train"].labels
    counts = Counter(labels)
    per_sample = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    gen = torch.Generator().manual_seed(exp.config.train.seed)
    return torch.utils.data.WeightedRandomSampler(per_sample, num_samples=len(labels), replacement=True, generator=gen)
