"""The views: shapes, independence of the two contrastive views, and what the restoration corruption does."""

from __future__ import annotations

import torch

from medtl.pretraining.config import GenesisConfig, ViewsConfig
from medtl.pretraining.views import ContrastiveViews, RestorationViews


def _identity(d: dict) -> dict:
    return d


def _scan(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, *shape, generator=g)


def test_contrastive_views_are_two_different_views_of_the_requested_size() -> None:
    for size in ([24, 20], [12, 12, 8]):
        views = ContrastiveViews(ViewsConfig(), size, _identity)
        views.set_random_state(seed=1)
        out = views(_scan(*(s * 2 for s in size)))
        assert set(out) == {"view1", "view2"}
        assert out["view1"].shape == out["view2"].shape == (1, *size)
        assert out["view1"].dtype == torch.float32
        assert not torch.equal(out["view1"], out["view2"])


def test_contrastive_views_follow_the_seed() -> None:
    a, b = (ContrastiveViews(ViewsConfig(), [16, 16], _identity) for _ in range(2))
    a.set_random_state(seed=3)
    b.set_random_state(seed=3)
    img = _scan(32, 32)
    assert torch.equal(a(img)["view1"], b(img)["view1"])


def test_restoration_target_is_the_crop_and_the_input_is_corrupted() -> None:
    genesis = GenesisConfig(shuffle_prob=1.0, nonlinear_prob=1.0, paint_prob=1.0)
    plain = ViewsConfig(crop_scale=(1.0, 1.0), flip_prob=0.0)
    views = RestorationViews(plain, genesis, [16, 16, 8], _identity)
    views.set_random_state(seed=0)
    img = _scan(16, 16, 8)
    out = views(img)
    assert out["image"].shape == out["target"].shape == (1, 16, 16, 8)
    # no crop, no flip: the target is the scan itself; the input differs from it
    assert torch.allclose(out["target"], img, atol=1e-6)
    assert (out["image"] - out["target"]).abs().mean() > 0.05


def test_views_end_with_the_encoders_channels_and_normalisation() -> None:
    def three_channels(d: dict) -> dict:
        return {"image": (d["image"].repeat(3, 1, 1) - 0.5) / 0.25}

    views = ContrastiveViews(ViewsConfig(), [16, 16], three_channels)
    views.set_random_state(seed=0)
    out = views(_scan(16, 16))
    assert out["view1"].shape == (3, 16, 16)
