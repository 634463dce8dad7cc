"""The input record: what a model expects and what the pipeline does to a scan before it reaches the model.

Resolved once per experiment (:func:`medtl.train.experiment.resolve_input_record`: the first scan's dimensions,
channels and modality, the mode, and the weight source's channels and normalisation), written once to a run's
``preprocessing.json``, and read back by everything that feeds the model later: ``predict``, ``evaluate``,
segmentation's native-grid inference, pretraining, weights made from a run and exporters. Nothing re-derives it
from a config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from medtl.errors import RunDirError
from medtl.weights.sources import Normalization

__all__ = ["InputRecord"]


@dataclass(frozen=True)
class InputRecord:
    """The resolved input of a model.

    Attributes:
        modality: ``CT``, ``MR`` or ``XR`` (intensity handling).
        mode: ``2d``, ``3d`` or ``2.5d``.
        scan_dims: spatial dims of the scans as read (2 for radiographs and one-slice volumes).
        scan_channels: channels of the scans as read (1 grey, 3 RGB, N volumes of a 4D NIfTI).
        flat_volumes: the scans are volumes of one slice, used as 2D images.
        in_channels: channels of the model's input.
        model_spatial_dims: 2 or 3.
        normalization: what the weights expect after intensity scaling (ImageNet mean/std, a z-score, none).
        size: the model's input size (a 2D image, a 3D patch or window); None until the pipeline fixed it.
    """

    modality: str
    mode: str
    scan_dims: int
    scan_channels: int
    flat_volumes: bool
    in_channels: int
    model_spatial_dims: int
    normalization: Normalization
    size: tuple[int, ...] | None = None

    @classmethod
    def of(
        cls,
        *,
        modality: str,
        mode: str,
        scan_dims: int,
        in_channels: int,
        normalization: Normalization,
        scan_channels: int = 1,
        flat_volumes: bool = False,
    ) -> InputRecord:
        """A record from its parts, the model's dims from the mode (3D for ``3d``, else 2D)."""
        return cls(
            modality=modality,
            mode=mode,
            scan_dims=scan_dims,
            scan_channels=scan_channels,
            flat_volumes=flat_volumes,
            in_channels=in_channels,
            model_spatial_dims=3 if mode == "3d" else 2,
            normalization=normalization,
        )

    def with_size(self, size: Any) -> InputRecord:
        return replace(self, size=tuple(int(s) for s in size))

    def to_dict(self) -> dict[str, Any]:
        """The flat keys of ``preprocessing.json``."""
        d = asdict(self)
        d["normalization"] = self.normalization.to_dict()
        d["size"] = list(self.size) if self.size is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "preprocessing.json") -> InputRecord:
        """The record of a run's ``preprocessing.json`` (runs of earlier versions lack the newer keys: defaults).

        Raises:
            RunDirError: a key is missing or holds a value of the wrong kind, naming ``source``.
        """
        needed = ("modality", "mode", "scan_dims", "in_channels", "model_spatial_dims", "normalization")
        missing = [k for k in needed if k not in data]
        if missing:
            raise RunDirError(
                f"{source} lacks {', '.join(missing)}", path=source, fix="restore the file or train the run again"
            )
        try:
            norm = data["normalization"]
            size = data.get("size")
            return cls(
                modality=str(data["modality"]),
                mode=str(data["mode"]),
                scan_dims=int(data["scan_dims"]),
                scan_channels=int(data.get("scan_channels", 1)),
                flat_volumes=bool(data.get("flat_volumes", False)),
                in_channels=int(data["in_channels"]),
                model_spatial_dims=int(data["model_spatial_dims"]),
                normalization=Normalization(
                    str(norm["kind"]), tuple(norm.get("mean") or ()) or None, tuple(norm.get("std") or ()) or None
                ),
                size=tuple(int(s) for s in size) if size else None,
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise RunDirError(
                f"{source} holds an invalid input record ({type(exc).__name__}: {exc})",
                path=source,
                fix="restore the file or train the run again",
            ) from None
