"""The fine-tuning engine on Lightning: ``fine_tune(config)``, ``predict``, ``evaluate``, ``lr_find``."""

from __future__ import annotations

from medtl.train.lr_find import LRFindResult, lr_find
from medtl.train.predict import evaluate, load_run, predict
from medtl.train.run import Experiment, RunResult, fine_tune, prepare_experiment

__all__ = [
    "Experiment",
    "LRFindResult",
    "RunResult",
    "evaluate",
    "fine_tune",
    "load_run",
    "lr_find",
    "predict",
    "prepare_experiment",
]
