"""``timm/<name>`` architectures: records from timm's metadata, features equal to timm's own model, loading timm
files (channels adapted, position embeddings resampled), a ViT feature pyramid for segmentation, timm's weights."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch

from medtl import create_model
from medtl.backbones import get_architecture, list_families
from medtl.backbones.adapt import adapt_input_conv
from medtl.backbones.registry import PYRAMID
from medtl.errors import ConfigError, UnknownOptionError, WeightsNotAvailableError
from medtl.models import SegmentationModel, expected_input, weight_source_for

VIT = "timm/vit_tiny_patch16_224[img_size=64]"
# a ViT with 14-pixel patches (as DINOv2's), tiny: patch 14 on vit_tiny
VIT14 = "timm/vit_tiny_patch16_224[img_size=56,patch_size=14]"
HIERARCHICAL = ["resnet18", "convnext_atto", "tiny_vit_5m_224"]


def _timm_file(tmp_path: Path, name: str, seed: int = 0, **kwargs) -> tuple[Path, torch.nn.Module]:
    """A timm model with seeded random weights (its own init), and ``torch.save(model.state_dict())`` of it."""
    torch.manual_seed(seed)
    net = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # no zero-initialised tensors (ViT heads, biases): equal outputs then mean equal weights
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return path, net


def _hooked_maps(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's feature maps taken with forward hooks on its ``feature_info`` modules during ``forward_features``."""
    maps: list[torch.Tensor] = []
    handles = [
        net.get_submodule(f["module"]).register_forward_hook(lambda m, i, o: maps.append(o)) for f in net.feature_info
    ]
    try:
        net.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return maps


def test_a_record_is_made_from_timm_metadata_and_cached() -> None:
    spec = get_architecture("timm/resnet18")
    assert spec is get_architecture("timm/resnet18")
    assert (spec.family, spec.dims, spec.supported_dims, spec.default_in_channels) == ("timm", 2, (2,), 3)
    assert (spec.first_conv, spec.classifier, spec.num_features) == ("conv1", "fc", 512)
    assert [g for g, _ in spec.groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert spec.pretrained_cfg["hf_hub_id"] == "timm/resnet18.a1_in1k"
    # options are canonical: sorted keys, whatever order the name had
    a = get_architecture("timm/vit_tiny_patch16_224[patch_size=14,img_size=56]")
    assert a.name == VIT14 and get_architecture(VIT14) is a
    assert get_architecture(VIT).first_conv == "patch_embed.proj"


def test_unknown_names_and_options_are_one_line_errors() -> None:
    with pytest.raises(UnknownOptionError, match=r"unknown timm model 'resnet_18'.*Did you mean 'timm/resnet18'"):
        get_architecture("timm/resnet_18")
    with pytest.raises(UnknownOptionError, match=r"does not take the size option"):
        get_architecture("timm/resnet18[no_such_option=3]")
    with pytest.raises(UnknownOptionError, match=r"in_chans cannot be a size option"):
        get_architecture("timm/resnet18[in_chans=1]")
    with pytest.raises(UnknownOptionError, match=r"takes no size options"):
        get_architecture("resnet18[width=2]")
    with pytest.raises(UnknownOptionError, match=r"name\[key=value"):
        get_architecture("timm/resnet18[32]")


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_hierarchical_features_and_logits_equal_timm_on_the_same_weights(name: str, tmp_path: Path) -> None:
    path, ref = _timm_file(tmp_path, name, num_classes=4)
    model = create_model(f"timm/{name}", weights=str(path), num_classes=4).eval()
    report = model.load_report
    assert not report.left_random and not report.adapted and not report.unexpected
    assert set(report.matched) == set(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_features(x, out_indices=range(len(model.feature_info)))
        expected = _hooked_maps(ref, x)
        assert len(maps) == len(expected) == len(ref.feature_info)
        for ours, theirs in zip(maps, expected, strict=True):
            torch.testing.assert_close(ours, theirs)
        pooled = ref.forward_head(ref.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.forward_features(x), pooled)
        torch.testing.assert_close(model(x), ref(x))
    info = model.feature_info
    assert [f.channels for f in info] == [f["num_chs"] for f in ref.feature_info]
    assert [f.reduction for f in info] == [(f["reduction"],) * 2 for f in ref.feature_info]


def test_vit_features_logits_and_pyramid_equal_timm_on_the_same_weights(tmp_path: Path) -> None:
    path, ref = _timm_file(tmp_path, "vit_tiny_patch16_224", img_size=64, num_classes=4)
    model = create_model(VIT, weights=str(path), num_classes=4).eval()
    assert set(model.load_report.matched) == set(ref.state_dict()) and not model.load_report.left_random
    assert not any(k.startswith(PYRAMID) for k in model.state_dict())  # a classifier carries no pyramid
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        tokens = ref.forward_features(x)  # normalised tokens, the class token first
        torch.testing.assert_close(model.forward_features(x), tokens[:, 0])
        maps = model.forward_features(x, out_indices=[0, 1, 2, 3])
    # the pyramid's own scale is timm's last-block tokens as a map; the others are the new layers on it
    patch_map = tokens[:, 1:].reshape(2, 4, 4, 192).permute(0, 3, 1, 2)
    torch.testing.assert_close(maps[2], patch_map)
    torch.testing.assert_close(maps[3], torch.nn.functional.max_pool2d(patch_map, 2))
    with torch.no_grad():
        torch.testing.assert_close(maps[1], model.net.feature_pyramid.up2(patch_map))
    assert [tuple(m.shape) for m in maps] == [(2, 48, 16, 16), (2, 96, 8, 8), (2, 192, 4, 4), (2, 192, 2, 2)]
    info = model.feature_info
    assert [(f.channels, f.reduction) for f in info] == [(48, (4, 4)), (96, (8, 8)), (192, (16, 16)), (192, (32, 32))]
    # asking for scales added the pyramid, reported as random
    pyramid = [k for k in model.net.state_dict() if k.startswith(PYRAMID + ".")]
    assert pyramid and set(pyramid) <= set(model.load_report.left_random)
    assert any("feature pyramid" in n for n in model.load_report.notes)


def test_a_vit_takes_other_input_sizes_and_patch_14_gives_fractional_reductions() -> None:
    model = create_model(VIT, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 2)  # position embedding resampled on the fly
    m14 = create_model(VIT14, num_classes=0)
    assert [f.reduction for f in m14.feature_info] == [(3.5, 3.5), (7, 7), (14, 14), (28, 28)]


@pytest.mark.parametrize("arch", ["timm/resnet18", "timm/convnext_atto", "timm/tiny_vit_5m_224", VIT])
def test_param_groups_cover_every_parameter_once_stem_first(arch: str) -> None:
    model = create_model(arch, num_classes=3)
    _ = model.feature_info  # a ViT's pyramid joins the head group
    groups = model.param_groups()
    names = [g.name for g in groups]
    assert names[0] == "stem" and names[-1] == "head" and 3 <= len(names) <= 6
    listed = [n for g in groups for n in g.param_names]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    assert f"net.{model.spec.first_conv}.weight" in groups[0].param_names
    assert f"net.{model.spec.classifier}.weight" in groups[-1].param_names
    assert all(len(g) for g in groups[:-1])
    if arch == VIT:
        assert any(n.startswith(f"net.{PYRAMID}.") for n in groups[-1].param_names)


def test_medtl_channel_adaptation_is_timms_for_2d_rgb_kernels() -> None:
    from timm.models import adapt_input_conv as timm_adapt

    w = torch.randn(8, 3, 7, 7)
    for n in (1, 2, 5):
        torch.testing.assert_close(adapt_input_conv(w, n)[0], timm_adapt(n, w.clone()))


@pytest.mark.parametrize("in_channels,how", [(1, "summed 3 input channels into 1"), (5, "repeated 3 input")])
@pytest.mark.parametrize(
    "name,kwargs,arch", [("resnet18", {}, "timm/resnet18"), ("vit_tiny_patch16_224", {"img_size": 64}, VIT)]
)
def test_a_timm_file_loads_into_other_channels_with_the_first_conv_adapted(
    tmp_path: Path, name: str, kwargs: dict, arch: str, in_channels: int, how: str
) -> None:
    path, ref = _timm_file(tmp_path, name, num_classes=10, **kwargs)
    model = create_model(arch, weights=str(path), in_channels=in_channels, num_classes=3)
    report = model.load_report
    key = f"{model.spec.first_conv}.weight"
    assert list(report.adapted) == [key] and report.adapted[key].startswith(how)
    assert set(report.left_random) == {f"{model.spec.classifier}.weight", f"{model.spec.classifier}.bias"}
    assert len(report.matched) == len(ref.state_dict()) - 3
    expected, _ = adapt_input_conv(ref.state_dict()[key], in_channels)
    torch.testing.assert_close(model.net.state_dict()[key], expected)
    assert f"adapted {key}" in report.summary()
    with torch.no_grad():
        assert model(torch.randn(1, in_channels, 64, 64)).shape == (1, 3)


def test_a_vit_file_made_for_another_size_is_resampled_by_timm_and_reported(tmp_path: Path) -> None:
    from timm.layers import resample_abs_pos_embed

    path, ref = _timm_file(tmp_path, "vit_tiny_patch16_224", img_size=32, num_classes=4)
    model = create_model(VIT, weights=str(path), num_classes=4)
    report = model.load_report
    assert list(report.adapted) == ["pos_embed"] and "(1, 5, 192) to (1, 17, 192)" in report.adapted["pos_embed"]
    assert not report.left_random
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), new_size=(4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(model.net.pos_embed.detach(), expected)


def test_vit_segmentation_forward_backward_and_groups(tmp_path: Path) -> None:
    path, _ = _timm_file(tmp_path, "vit_tiny_patch16_224", img_size=64, num_classes=4)
    seg = create_model(VIT, weights=str(path), in_channels=1, num_classes=3, head="unet")
    assert isinstance(seg, SegmentationModel) and seg.stride == (32, 32)
    report = seg.load_report
    pyramid = [k for k in seg.encoder.net.state_dict() if k.startswith(PYRAMID + ".")]
    assert set(report.left_random) == set(pyramid) and len(pyramid) == 8
    assert list(report.adapted) == ["patch_embed.proj.weight"]
    assert any("feature pyramid" in n for n in report.notes) and any("decoder and head new" in n for n in report.notes)
    x = torch.randn(2, 1, 64, 96)
    out = seg(x)
    assert out.shape == (2, 3, 64, 96)
    out.square().mean().backward()
    assert seg.encoder.net.feature_pyramid.up4[0].weight.grad.abs().sum() > 0
    assert seg.encoder.net.patch_embed.proj.weight.grad.abs().sum() > 0
    groups = seg.param_groups()
    # the new pyramid trains with the decoder from the start; the encoder's stages hold the ViT only
    assert all(not n.startswith(f"encoder.net.{PYRAMID}") for g in groups[:-1] for n in g.param_names)
    assert sum(n.startswith(f"encoder.net.{PYRAMID}") for n in groups[-1].param_names) == 8
    listed = [n for g in groups for n in g.param_names]
    assert sorted(listed) == sorted(n for n, _ in seg.named_parameters())
    with pytest.raises(ValueError, match=r"multiple of \(32, 32\)"):
        seg(torch.randn(1, 1, 48, 64))


def test_a_patch_14_vit_segments_multiples_of_28_and_the_window_check_says_so() -> None:
    from medtl.tasks.segmentation import SegmentationTask

    seg = create_model(VIT14, num_classes=2, head="unet")
    assert seg.stride == (28, 28)
    with torch.no_grad():
        assert seg(torch.randn(1, 3, 56, 84)).shape == (1, 2, 56, 84)
    pipeline = SimpleNamespace(model_spatial_dims=2, size=[64, 100])
    config = SimpleNamespace(model=SimpleNamespace(arch=VIT14))
    with pytest.raises(ConfigError, match=r"multiple of \[28, 28\].*e\.g\. \[56, 112\]"):
        SegmentationTask(["background", "x"], spatial_dims=2).check_model(seg, pipeline, config)


def test_a_classifier_has_no_pyramid_but_a_segmentation_encoder_file_keeps_it(tmp_path: Path) -> None:
    seg = create_model(VIT, num_classes=2, head="unet")
    path = tmp_path / "encoder.pth"
    torch.save(seg.encoder.net.state_dict(), path)  # as medtl pretrain saves an encoder: the pyramid included
    again = create_model(VIT, weights=str(path), num_classes=2, head="unet")
    assert not again.load_report.left_random  # pyramid loaded from the file
    for key, value in seg.encoder.net.state_dict().items():
        assert torch.equal(again.encoder.net.state_dict()[key], value), key
    cls = create_model(VIT, weights=str(path), num_classes=2)
    assert sorted(cls.load_report.unexpected) == sorted(
        k for k in seg.encoder.net.state_dict() if k.startswith(PYRAMID)
    )


def test_imagenet_means_timms_pretrained_tag_read_through_the_hugging_face_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants
    from safetensors.torch import save_file

    spec = get_architecture("timm/resnet18")
    source = weight_source_for("timm/resnet18", "imagenet")
    assert (source.name, source.in_channels, source.archs) == ("imagenet", 3, ("timm/resnet18",))
    assert source.normalization.mean == spec.pretrained_cfg["mean"] and source.input_size == (224, 224)
    assert expected_input("imagenet", "timm/resnet18").normalization == source.normalization
    with pytest.raises(UnknownOptionError, match="2D only"):
        weight_source_for("timm/resnet18", "imagenet", spatial_dims=3)

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotAvailableError, match=r"timm/resnet18\.a1_in1k"):
        create_model("timm/resnet18", weights="imagenet")
    # timm's file as the hub caches it (offline here): models--timm--resnet18.a1_in1k/snapshots/<commit>/
    _, ref = _timm_file(tmp_path, "resnet18")
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(ref.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    model = create_model("timm/resnet18", weights="imagenet", in_channels=1, num_classes=3)
    report = model.load_report
    assert report.source == "imagenet" and "a1_in1k" in report.format and report.file == "timm/resnet18.a1_in1k"
    assert list(report.adapted) == ["conv1.weight"] and set(report.left_random) == {"fc.weight", "fc.bias"}
    assert report.sha256 is None and report.verification.startswith("unverified: downloaded and cached by timm")
    torch.testing.assert_close(model.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_backbones_lists_the_timm_family_as_one_row(capsys: pytest.CaptureFixture[str]) -> None:
    from medtl.cli import main

    assert [f.prefix for f in list_families()] == ["timm/"]
    assert main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["timm/<any timm model name>"]
    assert row["dims"] == [2] and "timm/vit_base_patch16_224" in row["examples"]
    assert row["weights"] == ["scratch", "imagenet (timm's pretrained tag)", "<file>"]
    assert not any(name.startswith("timm/") and "<" not in name for name in rows)  # not 1,000 rows
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "timm/<name>" in out and "swin_unetr_3d[feature_size=24]" in out


@pytest.mark.slow  # 27 s on 2 shared cores under load
def test_a_vit_segmentation_run_through_fine_tune_reloads_for_prediction(tmp_path: Path) -> None:
    from helpers.seg_tasks import make_disc_task, seg_config

    from medtl.train.predict import load_run
    from medtl.train.run import fine_tune

    manifest = make_disc_task(tmp_path, n_patients=12)
    arch = "timm/vit_tiny_patch16_224[img_size=32]"
    cfg = seg_config(manifest, tmp_path / "runs", model={"arch": arch}, train={"epochs": 1, "batch_size": 4})
    result = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True)
    for split in ("val", "test"):
        assert result.metrics[split]["n"] == 4 and 0.0 <= result.metrics[split]["dice"] <= 1.0
    loaded = load_run(result.run_dir, quiet=True)  # the network rebuilt from config.yaml, best.ckpt loaded strictly
    encoder = loaded.model.encoder
    assert encoder.arch == arch and hasattr(encoder.net, PYRAMID)


@pytest.mark.slow  # 31 s on 2 shared cores under load
def test_simclr_pretraining_of_a_vit_writes_a_local_source_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from safetensors.torch import load_file

    from medtl.pretraining import pretrain

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    script = Path(__file__).resolve().parents[2] / "sample_data" / "unlabeled.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "pool"), "--n2d", "16", "--n3d", "0"], check=True)
    arch = "timm/vit_tiny_patch16_224[img_size=32]"
    views = {"crop_scale": [0.95, 1.0], "flip_prob": 0, "affine_prob": 0, "intensity_scale": 0, "intensity_shift": 0}
    cfg = {
        "data": {"manifest": str(tmp_path / "pool" / "xray" / "manifest.csv")},
        "preprocess": {"size": [32, 32]},
        "model": {"arch": arch},
        "views": views | {"blur_prob": 0, "noise_std": 0.01},
        "method": "simclr",
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.001, "warmup_epochs": 0, "cache": "memory"},
        "output": {"dir": str(tmp_path / "runs"), "name": "vit"},
    }
    result = pretrain(cfg, quiet=True)
    assert result.weights == "local:vit" and all(r["train_loss"] == r["train_loss"] for r in result.metrics)
    saved = load_file(str(result.encoder_file))
    assert not any(k.startswith(PYRAMID) for k in saved)  # SimCLR uses pooled features: no pyramid was made
    model = create_model(arch, weights="local:vit", num_classes=3)
    report = model.load_report
    assert set(report.matched) == set(saved) and set(report.left_random) == {"head.weight", "head.bias"}
    for key, value in saved.items():
        assert torch.equal(model.net.state_dict()[key], value), key
