"""ModelInput: the last per-sample step (channels, normalisation) on plain tensors, with MONAI's values."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, NormalizeIntensityd, RandFlipd

from medtl.errors import ConfigError
from medtl.transforms.checks import AdaptChannelsd, ModelInput, ModelInputd, RandFlipTensord

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _monai_twin(channels: int) -> Compose:
    """The transforms ModelInputd replaces in the pipeline."""
    return Compose(
        [
            AdaptChannelsd("image", channels),
            NormalizeIntensityd("image", subtrahend=MEAN, divisor=STD, channel_wise=True),
            EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


@pytest.mark.parametrize("meta", [False, True])
def test_model_input_gives_monai_normalisation_bit_for_bit_as_a_plain_tensor(meta: bool) -> None:
    torch.manual_seed(0)
    img = torch.rand(1, 64, 48)
    src = MetaTensor(img.clone(), affine=torch.eye(4)) if meta else img.clone()
    want = _monai_twin(3)({"image": src.clone()})["image"]
    got = ModelInputd("image", 3, MEAN, STD)({"image": src.clone()})["image"]
    assert type(got) is torch.Tensor and got.dtype == torch.float32 and got.shape == (3, 64, 48)
    assert torch.equal(got, want)
    # the input is not modified in place (a cached sample stays as it was)
    assert torch.equal(src.as_subclass(torch.Tensor), img)


def test_model_input_after_a_random_flip_drops_the_metatensor() -> None:
    flip = RandFlipd("image", prob=1.0, spatial_axis=1)
    out = ModelInputd("image", 1)(flip({"image": torch.arange(6.0).reshape(1, 2, 3)}))["image"]
    assert type(out) is torch.Tensor
    assert out.tolist() == [[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]]


def test_model_input_adapts_channels_and_refuses_mismatched_statistics() -> None:
    rgb = torch.rand(3, 4, 4)
    assert torch.equal(ModelInput(1)(rgb), rgb.mean(dim=0, keepdim=True))
    with pytest.raises(ConfigError, match="one mean and one std per model channel"):
        ModelInput(3, [0.5], [0.2])


def test_rand_flip_tensor_flips_the_same_samples_as_monai_rand_flipd_and_stays_plain() -> None:
    torch.manual_seed(0)
    imgs = [torch.rand(1, 5, 7) for _ in range(40)]
    for axis in (0, 1):
        ours, theirs = RandFlipTensord("image", prob=0.5, spatial_axis=axis), RandFlipd("image", 0.5, axis)
        ours.set_random_state(seed=3)
        theirs.set_random_state(seed=3)
        flipped = 0
        for img in imgs:
            a = ours({"image": img})["image"]
            b = theirs({"image": img})["image"]
            assert type(a) is torch.Tensor and torch.equal(a, b.as_subclass(torch.Tensor))
            flipped += not torch.equal(a, img)
        assert 10 < flipped < 30  # about half of them
