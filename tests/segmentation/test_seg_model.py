"""Segmentation models: the encoder holds exactly the classification path's tensors; decoder groups; inference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.model_states import randomize_
from monai.networks.nets import resnet as monai_resnet

from medtl.config import TrainConfig
from medtl.errors import UnknownOptionError
from medtl.models import SegmentationModel, create_model
from medtl.tasks.segmentation import SegmentationTask, sliding_window
from medtl.train.module import TaskModule


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _write_medicalnet(path: Path, depth: int = 10) -> dict[str, torch.Tensor]:
    """``{"state_dict": {"module.<key>": ...}}`` as MedicalNet's releases are (random values)."""
    bias_downsample, shortcut = monai_resnet.get_medicalnet_pretrained_resnet_args(depth)
    net = getattr(monai_resnet, f"resnet{depth}")(
        spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type=shortcut, bias_downsample=bias_downsample
    )
    state = randomize_(net.state_dict(), seed=depth)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def test_imagenet_format_encoder_equals_classification_path(torchvision_file) -> None:
    path, state = torchvision_file("resnet18")
    seg = create_model("resnet18", weights=str(path), head="unet", num_classes=3)
    cls = create_model("resnet18", weights=str(path), num_classes=0)
    assert isinstance(seg, SegmentationModel)
    _same_tensors(seg.encoder.net.state_dict(), cls.net.state_dict())
    # and those are the file's own tensors (the classifier aside)
    for key, value in seg.encoder.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    rep = seg.load_report
    assert not rep.left_random and len(rep.matched) == len(state) - 2  # fc.weight, fc.bias dropped
    assert any("decoder and head new" in n for n in rep.notes)
    assert seg(torch.randn(2, 3, 64, 64)).shape == (2, 3, 64, 64)


def test_imagenet_inflated_encoder_equals_classification_path(torchvision_file) -> None:
    path, _ = torchvision_file("resnet18")
    seg = create_model("resnet18", weights=str(path), head="unet", num_classes=2, spatial_dims=3)
    cls = create_model("resnet18", weights=str(path), num_classes=0, spatial_dims=3)
    assert seg.spatial_dims == 3 and seg.encoder.net.conv1.weight.ndim == 5
    _same_tensors(seg.encoder.net.state_dict(), cls.net.state_dict())


def test_medicalnet_format_encoder_equals_classification_path(tmp_path: Path) -> None:
    path = tmp_path / "resnet_10.pth"
    state = _write_medicalnet(path)
    seg = create_model("resnet10_3d", weights=str(path), head="unet", num_classes=3)
    cls = create_model("resnet10_3d", weights=str(path), num_classes=0)
    _same_tensors(seg.encoder.net.state_dict(), cls.net.state_dict())
    loaded = seg.encoder.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    assert seg.in_channels == 1 and not seg.load_report.left_random


def test_param_groups_put_the_decoder_last_and_fine_tune_freezes_the_encoder() -> None:
    model = create_model("resnet18", head="unet", num_classes=2, decoder_channels=[16, 16, 16, 16, 16])
    groups = model.param_groups()
    assert [g.name for g in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    ids = [id(p) for g in groups for p in g.params]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    decoder = {id(p) for p in (*model.decoder.parameters(), *model.head.parameters())}
    assert {id(p) for p in groups[-1].params} == decoder
    cfg = TrainConfig(epochs=3, freeze_epochs=1, loggers=["csv"])
    module = TaskModule(model, SegmentationTask(["bg", "fg"], roi_size=[32, 32], spatial_dims=2), cfg, "fine_tune")
    module.apply_phase(0)
    assert model.encoder.net.layer3[0].conv1.weight.requires_grad is False
    assert all(p.requires_grad for p in model.decoder.parameters())
    module.apply_phase(1)
    assert model.encoder.net.layer3[0].conv1.weight.requires_grad is True


def test_sliding_window_equals_whole_volume_inference_on_a_volume_that_fits() -> None:
    torch.manual_seed(0)
    model = create_model("resnet10_3d", head="unet", num_classes=3, decoder_channels=[16, 16, 8, 8, 8]).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        whole = model(x)
        for blend in ("gaussian", "constant"):
            slid = sliding_window(model, x, [32, 32, 32], overlap=0.5, blend=blend)
            assert slid.shape == whole.shape
            torch.testing.assert_close(slid, whole, rtol=1e-4, atol=1e-5)
    assert whole.abs().max() > 0  # not a trivially equal zero output


def test_inputs_not_multiple_of_the_stride_and_anisotropic_encoders_are_refused() -> None:
    model = create_model("resnet18", head="unet", num_classes=2, decoder_channels=[8, 8, 8, 8, 8])
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.randn(1, 3, 40, 40))
    with pytest.raises(UnknownOptionError, match="head 'detection'.*linear, unet"):
        create_model("resnet18", head="detection")
