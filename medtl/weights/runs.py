"""A finished medtl run used as weights: the run folder, or its ``best.ckpt`` / ``last.ckpt``.

A run's network is only half of what it learnt: the other half is its input (channels and intensity normalisation),
recorded once in its ``preprocessing.json`` (:class:`medtl.transforms.record.InputRecord`). :func:`run_source` makes
such a folder or checkpoint a :class:`~medtl.weights.sources.WeightSource` that carries both, so a run that starts
from it gets the same input as the run that made it (ImageNet mean/std, 3 channels...) instead of an anonymous file's
"no normalisation", and its load report says which run the weights came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from medtl.errors import MedtlError, WeightsError
from medtl.rundir import RunDir

if TYPE_CHECKING:
    from medtl.weights.sources import WeightSource

__all__ = ["RUN_PREFIX", "run_folder_of", "run_source"]

#: the name of a run's weight source is ``run:<run folder>``
RUN_PREFIX = "run:"
_CHECKPOINTS = ("best.ckpt", "last.ckpt")


def run_folder_of(path: str | os.PathLike[str]) -> Path | None:
    """The run folder ``path`` names (the folder, or a checkpoint inside it), or None when it is not one: a run
    folder holds ``config.yaml`` and ``preprocessing.json``."""
    p = Path(path).expanduser()
    folder = p if p.is_dir() else p.parent if p.name in _CHECKPOINTS else None
    if folder is None:
        return None
    if not (folder / RunDir.CONFIG).is_file() or not (folder / RunDir.PREPROCESSING).is_file():
        return None
    return folder


def run_source(path: str | os.PathLike[str]) -> WeightSource | None:
    """The weight source of a finished run (see the module docstring), or None when ``path`` is not a run folder or
    a checkpoint inside one.

    The source's architecture is the run's ``model.arch``, its input channels and normalisation those of the run's
    input record, its file the checkpoint given (a folder: its ``best.ckpt``, else ``last.ckpt``).

    Raises:
        WeightsError: ``path`` is a folder that is not a finished run, or the run's files cannot be read.
    """
    from medtl.weights.sources import Normalization, WeightSource

    p = Path(path).expanduser()
    folder = run_folder_of(p)
    if folder is None:
        if p.is_dir():
            raise WeightsError(
                f"model.weights {p} is a folder, but not a medtl run (it has no {RunDir.CONFIG} and "
                f"{RunDir.PREPROCESSING})",
                path=str(p),
                fix="give a checkpoint file, or the folder `medtl train` wrote",
            )
        return None
    run = RunDir(folder)
    try:
        checkpoint = p if p.is_file() else run.checkpoint_for_inference()[0]
        pre = run.read_preprocessing()
        arch = str(run.read_config().model.arch)
        norm = pre["normalization"]
        normalization = Normalization(
            str(norm["kind"]),
            tuple(float(v) for v in norm.get("mean") or ()) or None,
            tuple(float(v) for v in norm.get("std") or ()) or None,
        )
        in_channels = int(pre["in_channels"])
    except MedtlError as exc:
        raise WeightsError(f"cannot use run {folder} as weights: {exc}", path=str(folder)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WeightsError(
            f"cannot use run {folder} as weights: its {RunDir.PREPROCESSING} holds an invalid input record "
            f"({type(exc).__name__}: {exc})",
            path=str(folder / RunDir.PREPROCESSING),
            fix="restore the file or train the run again",
        ) from None
    size = pre.get("size")
    return WeightSource(
        name=f"{RUN_PREFIX}{folder}",
        description=f"medtl run {folder} ({checkpoint.name}), {arch} trained from {pre.get('weight_source', '?')}",
        dims=None,  # as any checkpoint file: a 2D run's network may still be inflated to 3D
        archs=(arch,),
        in_channels=in_channels,
        normalization=normalization,
        license="as the run's training data and starting weights allow",
        citation="",
        input_size=tuple(int(s) for s in size) if size else None,
        path=str(checkpoint),
    )
