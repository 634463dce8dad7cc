"""A mask on the image's grid up to axis order, direction and a whole-voxel shift is placed on it exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medtl.errors import DataLoadError
from medtl.transforms.segmentation import check_mask, onto_image_grid

CLASSES = ["background", "lung", "nodule"]


def _image() -> tuple[MetaTensor, np.ndarray]:
    affine = np.array([[0.8, 0.0, 0.0, -20.0], [0.0, 0.8, 0.0, 10.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1.0]])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 7, 5)).astype(np.float32)
    return MetaTensor(torch.zeros(1, 6, 7, 5), affine=torch.as_tensor(affine)), labels


def _world(affine: np.ndarray, index: tuple[int, int, int]) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def test_a_mask_saved_with_swapped_and_flipped_axes_lands_voxel_for_voxel() -> None:
    image, labels = _image()
    b = image.affine.numpy()
    # the mask's array axes: (z flipped, x, y); its affine says where each of its voxels is
    data = np.flip(labels.transpose(2, 0, 1), axis=0).copy()
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[3, 3] = 1.0  # mask index (k', i, j) -> image index (i, j, 4 - k')
    perm[2, 0], perm[2, 3] = -1.0, 4.0
    a = b @ perm
    mask = MetaTensor(torch.as_tensor(data)[None], affine=torch.as_tensor(a))
    for idx in [(0, 0, 0), (3, 2, 1), (4, 6, 5)]:  # mask voxel -> the same world point as its image voxel
        i, j, k = idx[1], idx[2], 4 - idx[0]
        assert np.allclose(_world(a, idx), _world(b, (i, j, k)))
    placed = onto_image_grid(image, mask)
    assert placed.shape == (1, 6, 7, 5) and np.allclose(placed.affine.numpy(), b)
    assert np.array_equal(placed[0].numpy(), labels)
    assert np.array_equal(check_mask(image, mask, CLASSES, "img.nii.gz", "mask.nii.gz")[0].numpy(), labels)


def test_a_larger_mask_shifted_by_whole_voxels_is_cropped_to_the_image() -> None:
    image, labels = _image()
    b = image.affine.numpy()
    big = np.zeros((9, 10, 8), np.float32)
    big[2:8, 1:8, 3:8] = labels  # image voxel (0, 0, 0) is mask voxel (2, 1, 3)
    shift = np.eye(4)
    shift[:3, 3] = [-2.0, -1.0, -3.0]
    mask = MetaTensor(torch.as_tensor(big)[None], affine=torch.as_tensor(b @ shift))
    assert np.array_equal(onto_image_grid(image, mask)[0].numpy(), labels)


@pytest.mark.parametrize("offset", [0.5, 0.01])
def test_a_grid_off_by_part_of_a_voxel_is_still_refused(offset: float) -> None:
    image, labels = _image()
    a = image.affine.numpy().copy()
    a[0, 3] += offset * a[0, 0]
    mask = MetaTensor(torch.as_tensor(labels)[None], affine=torch.as_tensor(a))
    with pytest.raises(DataLoadError, match="differ in geometry"):
        check_mask(image, mask, CLASSES, "img.nii.gz", "mask.nii.gz")


def test_a_mask_smaller_than_the_image_is_still_refused() -> None:
    image, labels = _image()
    mask = MetaTensor(torch.as_tensor(labels[:5])[None], affine=image.affine)
    with pytest.raises(DataLoadError, match="differ in grid"):
        check_mask(image, mask, CLASSES, "img.nii.gz", "mask.nii.gz")
