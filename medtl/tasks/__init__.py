"""The task registry: which tasks exist, and the one function that says which task a config is.

A task is one module holding one :class:`~medtl.tasks.base.Task` class: what the network outputs, its loss and
metrics, how a manifest's labels become targets and strata for the split, how predictions are written, and what
``compare`` and its report add for it. The engine (training, prediction, evaluation, ``compare``, pretraining's
k-NN check) reaches a task only through :func:`task_for` and the protocol; nothing outside a task's module asks
which task it is.

To add a task: write ``medtl/tasks/<name>.py`` with a :class:`~medtl.tasks.base.Task` subclass and add one line to
:data:`TASKS` (and its metrics to :data:`medtl.metric_specs.METRICS`).

This module is light (no torch): configs import it to validate ``task:``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medtl.errors import ConfigError
from medtl.utils import look_up_option

if TYPE_CHECKING:
    from medtl.tasks.base import Task

__all__ = ["TASKS", "TASK_NAMES", "task_name", "task_class", "task_for"]

#: task name -> "module:class" of its implementation (imported when first used)
TASKS: dict[str, str] = {
    "classification": "medtl.tasks.classification:ClassificationTask",
    "multilabel": "medtl.tasks.multilabel:MultiLabelTask",
    "regression": "medtl.tasks.regression:RegressionTask",
    "segmentation": "medtl.tasks.segmentation:SegmentationTask",
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def task_name(config: Any) -> str:
    """The task of a config: the one place it is decided.

    ``task:`` when it is set; with ``task: auto`` (the default) a config with a task's own section (a
    ``segmentation:`` section, say) is that task, and any other config is ``classification``. Multi-label and
    regression are never guessed from the labels: a manifest whose labels look like them is an error in a
    classification run that points at ``task:``.

    Args:
        config: an :class:`~medtl.config.ExperimentConfig`, or a raw config mapping (as read from YAML).

    Raises:
        ConfigError: an unknown task; a section of another task (``task: regression`` with a ``segmentation:``
            section); sections of two tasks.
    """
    if isinstance(config, Mapping):
        given = config.get("task") or "auto"
        present = [name for name in TASK_NAMES if config.get(name) is not None]
    else:
        given = getattr(config, "task", None) or "auto"
        present = [name for name in TASK_NAMES if getattr(config, name, None) is not None]
    if given != "auto":
        given = look_up_option(str(given), ("auto", *TASK_NAMES), what="task")
    if len(present) > 1:
        raise ConfigError(
            f"the config has sections for two tasks ({', '.join(present)})",
            fix="keep the section of the task the run learns, and set task: to it",
        )
    if given == "auto":
        return present[0] if present else "classification"
    if present and present[0] != given:
        raise ConfigError(
            f"task: {given} but the config has a {present[0]}: section (options of another task)",
            fix=f"remove the {present[0]}: section, or set task: {present[0]}",
        )
    return given


def task_class(name: str) -> type[Task]:
    """The class implementing task ``name``.

    Raises:
        UnknownOptionError: ``name`` is not a task (with the closest name).
    """
    name = look_up_option(name, TASK_NAMES, what="task")
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def task_for(config: Any) -> type[Task]:
    """The task class of a config (:func:`task_name`, then :func:`task_class`)."""
    return task_class(task_name(config))
