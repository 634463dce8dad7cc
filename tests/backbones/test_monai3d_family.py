"""MONAI's 3D encoders: SwinUNETR's Swin transformer (v1, v2) and SegResNetDS's encoder, as MONAI's own modules:
features equal to MONAI's networks on the same weights, published key layouts, channel adaptation, segmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import SegResNetDS, SwinUNETR

from medtl import create_model
from medtl.backbones import get_architecture
from medtl.errors import UnknownOptionError
from medtl.models import SegmentationModel

# small variants (feature size 12, windows of 4 voxels) at 32^3: the published network is feature size 48
SWIN = "swin_unetr_3d[feature_size=12,window_size=4]"
SWIN2 = "swin_unetr_v2_3d[feature_size=12,window_size=4]"
SEGRES = "segresnet_3d[blocks_down=(1,1,1,1),init_filters=8]"


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def _swin_unetr(in_channels: int = 1, use_v2: bool = False, seed: int = 0) -> SwinUNETR:
    torch.manual_seed(seed)
    net = SwinUNETR(in_channels=in_channels, out_channels=2, feature_size=12, window_size=4, use_v2=use_v2)
    return _randomize(net, seed)


def _segresnet_ds(in_channels: int = 1, seed: int = 0) -> SegResNetDS:
    torch.manual_seed(seed)
    net = SegResNetDS(in_channels=in_channels, out_channels=2, init_filters=8, blocks_down=(1, 1, 1, 1))
    return _randomize(net, seed)


def test_the_published_layouts_are_registered() -> None:
    swin, seg = get_architecture("swin_unetr_3d"), get_architecture("segresnet_3d")
    assert (swin.num_features, swin.first_conv, swin.classifier, swin.dims) == (768, "patch_embed.proj", "head", 3)
    assert (seg.num_features, seg.first_conv, len(seg.stages)) == (512, "conv_init", 5)  # CT-FM: 32 filters, 5 levels
    assert get_architecture(SWIN).name == SWIN and get_architecture(SWIN).num_features == 192
    with pytest.raises(UnknownOptionError, match=r"no size option embed_dim; it takes: .*feature_size"):
        get_architecture("swin_unetr_3d[embed_dim=12]")


@pytest.mark.parametrize("arch,use_v2", [(SWIN, False), (SWIN2, True)])
def test_swin_features_equal_swinunetr_swinvit_loaded_from_a_swinunetr_file(arch, use_v2, tmp_path: Path) -> None:
    ref = _swin_unetr(use_v2=use_v2)
    path = tmp_path / "swin_unetr.pth"
    torch.save(ref.state_dict(), path)  # keys swinViT.* plus the decoder's
    model = create_model(arch, weights=str(path), num_classes=3).eval()
    report = model.load_report
    assert report.prefix == "swinViT."
    assert set(report.matched) == {k[len("swinViT.") :] for k in ref.state_dict() if k.startswith("swinViT.")}
    assert set(report.left_random) == {"head.weight", "head.bias"} and not report.adapted
    assert report.unexpected and all(not k.startswith("swinViT.") for k in report.unexpected)  # the decoder
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        expected = ref.swinViT(x, ref.normalize)
        maps = model.forward_features(x, out_indices=range(5))
        pooled = model.forward_features(x)
    for ours, theirs in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(pooled, expected[-1].mean(dim=(2, 3, 4)))
    info = model.feature_info
    assert [f.channels for f in info] == [12, 24, 48, 96, 192]
    assert [f.reduction for f in info] == [(r,) * 3 for r in (2, 4, 8, 16, 32)]


def test_the_ssl_swin_file_layout_loads_as_swinunetr_load_from_does(tmp_path: Path) -> None:
    # model_swinvit.pt (Tang et al. 2022): {"state_dict": {"module.<SwinTransformer key>"}}, MLPs named fc1/fc2
    src = _swin_unetr(seed=1).swinViT
    ssl = {
        "module." + k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
        for k, v in src.state_dict().items()
    }
    torch.save({"state_dict": ssl}, tmp_path / "model_swinvit.pt")
    model = create_model(SWIN, weights=str(tmp_path / "model_swinvit.pt"), num_classes=2)
    assert model.load_report.prefix == "module." and set(model.load_report.left_random) == {"head.weight", "head.bias"}
    monai_net = _swin_unetr(seed=2)
    monai_net.load_from({"state_dict": ssl})  # MONAI's own key map of that file
    ours = model.net.state_dict()
    loaded_by_monai = [k for k in monai_net.swinViT.state_dict() if ".blocks." in k or "patch_embed" in k]
    assert any(".mlp.linear1." in k for k in loaded_by_monai)
    for key in loaded_by_monai:
        assert torch.equal(ours[key], monai_net.swinViT.state_dict()[key]), key


def test_segresnet_features_equal_segresnetds_encoder_loaded_from_a_segresnetds_file(tmp_path: Path) -> None:
    ref = _segresnet_ds()
    path = tmp_path / "segresnet_ds.pth"
    torch.save(ref.state_dict(), path)  # keys encoder.* plus the decoder's
    model = create_model(SEGRES, weights=str(path), num_classes=3).eval()
    report = model.load_report
    assert report.prefix == "encoder." and set(report.left_random) == {"head.weight", "head.bias"}
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        expected = ref.encoder(x)
        maps = model.forward_features(x, out_indices=range(4))
        torch.testing.assert_close(model.forward_features(x), expected[-1].mean(dim=(2, 3, 4)))
    for ours, theirs in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, theirs)
    info = model.feature_info
    assert [(f.channels, f.reduction) for f in info] == [(8 * 2**i, (2**i,) * 3) for i in range(4)]


@pytest.mark.parametrize("arch", [SWIN, SWIN2, SEGRES, "segresnet_3d"])
def test_param_groups_cover_every_parameter_once_stem_first(arch: str) -> None:
    with torch.device("meta"):
        net = get_architecture(arch).build(in_channels=1, num_classes=3)
    spec = get_architecture(arch)
    for name, _ in net.named_parameters():
        owners = [g for g, prefixes in spec.groups if any(name == p or name.startswith(p + ".") for p in prefixes)]
        assert len(owners) == 1, (name, owners)
    assert spec.groups[0][0] == "stem" and spec.groups[-1][0] == "head"
    assert net.get_submodule(spec.classifier).out_features == 3


@pytest.mark.parametrize("arch,make", [(SWIN, _swin_unetr), (SEGRES, _segresnet_ds)])
@pytest.mark.parametrize("in_channels,how", [(1, "summed 2 input channels into 1"), (5, "repeated 2 input")])
def test_a_two_channel_file_loads_into_1_or_5_channels(arch, make, in_channels, how, tmp_path: Path) -> None:
    path = tmp_path / "two.pth"
    torch.save(make(in_channels=2).state_dict(), path)
    model = create_model(arch, weights=str(path), in_channels=in_channels, num_classes=2)
    key = f"{model.spec.first_conv}.weight"
    assert list(model.load_report.adapted) == [key] and model.load_report.adapted[key].startswith(how)
    assert model.net.state_dict()[key].shape[1] == in_channels
    with torch.no_grad():
        assert model(torch.randn(1, in_channels, 32, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("arch,stride", [(SWIN, 32), (SEGRES, 8)])
def test_segmentation_forward_backward_at_the_input_size(arch: str, stride: int) -> None:
    seg = create_model(arch, in_channels=1, num_classes=3, head="unet")
    assert isinstance(seg, SegmentationModel) and seg.stride == (stride,) * 3
    x = torch.randn(1, 1, 32, 32, 64)
    out = seg(x)
    assert out.shape == (1, 3, 32, 32, 64)
    out.square().mean().backward()
    first = seg.encoder.net.get_submodule(seg.encoder.spec.first_conv)
    assert first.weight.grad.abs().sum() > 0  # the gradient reaches the stem
    groups = seg.param_groups()
    assert sorted(n for g in groups for n in g.param_names) == sorted(n for n, _ in seg.named_parameters())


@pytest.mark.slow  # 31 s on 2 shared cores under load
def test_a_swin_segmentation_run_through_fine_tune(tmp_path: Path) -> None:
    from helpers.seg_tasks import make_sphere_task, seg_config

    from medtl.train.predict import load_run
    from medtl.train.run import fine_tune

    cfg = seg_config(
        make_sphere_task(tmp_path, n_patients=6),
        tmp_path / "runs",
        data={"mode": "3d"},
        preprocess={"size": None, "ct_window": [-1000, 400]},
        model={"arch": SWIN},
        segmentation={"patch_size": [32, 32, 32], "samples_per_scan": 1, "decoder_channels": [16, 16, 8, 8, 8]},
        splits={"val_fraction": 0.34, "test_fraction": 0.17},
        train={"epochs": 1, "batch_size": 2},
    )
    result = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True)
    assert result.metrics["val"]["n"] == 2 and 0.0 <= result.metrics["val"]["dice"] <= 1.0
    assert load_run(result.run_dir, quiet=True).model.encoder.arch == SWIN


@pytest.mark.slow  # 35 s on 2 shared cores under load
def test_genesis_pretraining_of_a_swin_writes_a_local_source_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from safetensors.torch import load_file

    from medtl.pretraining import pretrain

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    script = Path(__file__).resolve().parents[2] / "sample_data" / "unlabeled.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "pool"), "--n2d", "0", "--n3d", "8"], check=True)
    arch = "swin_unetr_3d[window_size=4,feature_size=12]"  # options in any order name the same network
    cfg = {
        "data": {"manifest": str(tmp_path / "pool" / "ct" / "manifest.csv"), "modality": "CT"},
        "preprocess": {"size": [32, 32, 32], "ct_window": [-1000, 400]},
        "model": {"arch": arch},
        "method": "genesis",
        "genesis": {"decoder_width": 8},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.001, "warmup_epochs": 0, "cache": "memory"},
        "output": {"dir": str(tmp_path / "runs"), "name": "swin"},
    }
    result = pretrain(cfg, quiet=True)
    assert result.weights == "local:swin" and all(r["train_loss"] == r["train_loss"] for r in result.metrics)
    saved = load_file(str(result.encoder_file))
    seg = create_model(SWIN, weights="local:swin", num_classes=2, head="unet")
    report = seg.load_report
    assert set(report.matched) == set(saved) and not report.left_random and not report.unexpected
    for key, value in saved.items():
        assert torch.equal(seg.encoder.net.state_dict()[key], value), key
