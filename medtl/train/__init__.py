"""The fine-tuning engine on Lightning: ``fine_tune(config)``, ``predict``, ``evaluate``, ``lr_find``.

Layers, from the config down: :mod:`~medtl.train.experiment` resolves a config once (weights, splits,
pipeline, and the task of :mod:`medtl.tasks`); :mod:`~medtl.train.run` wires the Lightning Trainer;
:mod:`~medtl.train.module` trains the task; :mod:`~medtl.train.inference` scores datasets; :mod:`~medtl.rundir`
owns the run folder's files.
"""

from __future__ import annotations

from medtl.rundir import RunDir
from medtl.tasks.base import Task
from medtl.train.experiment import Experiment, prepare_experiment
from medtl.train.lr_find import LRFindResult, lr_find
from medtl.train.predict import LoadedRun, load_run, predict
from medtl.train.run import RunResult, fine_tune
from medtl.train.scoring import evaluate

__all__ = [
    "Experiment",
    "LRFindResult",
    "LoadedRun",
    "RunDir",
    "RunResult",
    "Task",
    "evaluate",
    "fine_tune",
    "load_run",
    "lr_find",
    "predict",
    "prepare_experiment",
]
