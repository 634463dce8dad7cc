"""Geometric augmentation of training batches on the device they train on (``augment.device: gpu``).

With ``augment.device: cpu`` (the default) every sample is flipped, rotated and zoomed in the loader. With ``gpu``
the sample pipeline leaves those out (:func:`medtl.transforms.presets.augmentation`) and :class:`BatchAugment`
applies them to each training batch once it is on the GPU (Lightning's ``on_after_batch_transfer``): MONAI's array
transforms compute on CUDA tensors, so a 3D loader only reads the cache and normalises, and its workers keep up.

The transforms are the sample pipeline's own (:func:`~medtl.transforms.presets.geometric_augmentation`: the same
flips, probabilities and ranges), applied to each sample of the batch with its own draws, the mask (segmentation)
moved with its image. They draw from one generator in the training process, seeded by ``train.seed``, so the draws
do not depend on the number of loader workers; its state is saved in checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose

from medtl.transforms.checks import KEY

__all__ = ["BatchAugment", "batch_augmentation"]

MASK = "mask"


class BatchAugment:
    """The flips, rotation and zoom of ``augment`` applied to each sample of a batch where the batch is.

    Args:
        config: the experiment config (``augment``, ``preprocess``).
        model_dims: spatial dims of a sample (2 or 3).
        seed: seed of the generator.
    """

    def __init__(self, config: Any, model_dims: int, seed: int = 0) -> None:
        self.config = config
        self.model_dims = model_dims
        self.R = np.random.RandomState(seed)
        self._built: dict[tuple[Any, ...], Compose] = {}

    def _transforms(self, device: torch.device, shape: tuple[int, ...], keys: tuple[str, ...]) -> Compose:
        """The transforms for samples of ``shape`` on ``device`` (the identity grid of the rotation cached there)."""
        from medtl.data.dataset import random_transforms
        from medtl.transforms.presets import geometric_augmentation

        key = (str(device), shape, keys)
        if key not in self._built:
            aug = geometric_augmentation(
                self.config,
                self.model_dims,
                mask_key=MASK if MASK in keys else None,
                plain=True,
                device=device,
                spatial_size=shape,
                cache_grid=True,
            )
            compose = Compose(aug, log_stats=False)
            for t in random_transforms(compose):  # one generator for all, so its state is the whole state
                t.set_random_state(state=self.R)
            self._built[key] = compose
        return self._built[key]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with its ``image`` (and ``mask``, when it has one of the image's spatial shape) augmented."""
        image = batch[KEY]
        shape = tuple(image.shape[2:])
        mask = batch.get(MASK)
        with_mask = isinstance(mask, torch.Tensor) and tuple(mask.shape[2:]) == shape
        keys = (KEY, MASK) if with_mask else (KEY,)
        transforms = self._transforms(image.device, shape, keys)
        out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for i in range(image.shape[0]):
            sample = transforms({k: batch[k][i] for k in keys})
            for k in keys:
                out[k].append(torch.as_tensor(sample[k]).as_subclass(torch.Tensor))
        result = dict(batch)
        for k in keys:  # the mask comes back from the interpolation as floats: its own type again
            result[k] = torch.stack(out[k]).to(batch[k].dtype)
        return result

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, as plain numbers (checkpoints are read with ``weights_only=True``)."""
        name, keys, pos, has_gauss, cached = self.R.get_state()
        return {"name": name, "keys": keys.astype(np.int64).tolist(), "pos": int(pos), "gauss": [has_gauss, cached]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        has_gauss, cached = state["gauss"]
        self.R.set_state(
            (state["name"], np.asarray(state["keys"], dtype=np.uint32), int(state["pos"]), int(has_gauss), cached)
        )

    @contextlib.contextmanager
    def untouched(self) -> Iterator[None]:
        """Put the generator back on leaving (batches drawn for precise BN must not change training's draws)."""
        state = self.R.get_state()
        try:
            yield
        finally:
            self.R.set_state(state)


def batch_augmentation(config: Any, pipeline: Any) -> BatchAugment | None:
    """The batch-side augmentation of an experiment: a :class:`BatchAugment` with ``augment.device: gpu`` when it
    has flips, a rotation or a zoom; else None (everything happens on the samples)."""
    a = getattr(config, "augment", None)
    if a is None or not a.enabled or a.device != "gpu":
        return None
    from medtl.transforms.presets import geometric_augmentation

    if not geometric_augmentation(config, pipeline.model_spatial_dims):
        return None
    return BatchAugment(config, pipeline.model_spatial_dims, seed=config.train.seed)
