"""The sections of an experiment config (pydantic models with ``extra="forbid"``)."""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DataConfig",
    "SplitsConfig",
    "PreprocessConfig",
    "AugmentConfig",
    "ModelConfig",
    "TrainConfig",
    "OutputConfig",
    "RUN_NAME_MAX",
    "check_run_name",
    "SegmentationConfig",
    "RegressionConfig",
    "MultiLabelConfig",
    "ExperimentConfig",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """What to learn from."""

    manifest: Path = Field(description="Manifest CSV (image, label, optional patient_id, split, series).")
    image_column: str = Field("image", description="Column of the manifest holding the scan paths.")
    label_column: str = Field("label", description="Column of the manifest holding the label.")
    patient_column: str = Field("patient_id", description="Column of the manifest holding the patient IDs.")
    classes: list[str] | None = Field(None, description="Class names in index order; default: sorted labels.")
    modality: Literal["auto", "CT", "MR", "XR"] = Field(
        "auto", description="Intensity handling. auto: from the first scan's DICOM Modality (CR/DX/DR/MG -> XR)."
    )
    mode: Literal["auto", "2d", "3d", "2.5d"] = Field(
        "auto",
        description="2d: images; 3d: volumes; 2.5d: slices of volumes as 2D samples, per-scan predictions "
        "averaged over slices. auto: 2d for 2D images, 3d for volumes.",
    )
    slices_per_scan: int | None = Field(
        None, ge=1, description="2.5d: number of evenly spaced slices taken per scan (default: all)."
    )
    slice_margin: float = Field(
        0.0, ge=0.0, lt=0.5, description="2.5d: fraction of slices skipped at each end of the volume."
    )
    neighbor_slices: bool = Field(
        True, description="2.5d: stack slices k-1, k, k+1 as three channels (else the single slice)."
    )


class SplitsConfig(_Section):
    """Patient-level splits. A manifest ``split`` column, or ``file``, takes precedence over fractions."""

    seed: int = Field(0, description="Seed of the split and of the label-fraction subset.")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Fraction of patients for validation.")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Fraction of patients held out for testing.")
    folds: int | None = Field(
        None,
        ge=2,
        description="k-fold cross-validation: a stratified test set of test_fraction is held out first, the other "
        "patients are dealt into this many stratified folds, and fold `fold` validates (val_fraction is not used). "
        "`medtl cv CONFIG` trains every fold; compare.repeat: folds compares arms over them.",
    )
    fold: int = Field(
        0, ge=0, description="Which fold is the validation fold (0-based); the others train. The test set is the same."
    )
    label_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="Stratified, nested subset of training patients to train on."
    )
    file: Path | None = Field(None, description="An existing splits.csv (patient_id, split) to reuse.")

    @model_validator(mode="after")
    def _check(self) -> SplitsConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold must be in 0..{self.folds - 1} (got {self.fold})")
        return self


class PreprocessConfig(_Section):
    """Deterministic preprocessing (cached)."""

    orientation: str | None = Field("RAS", description="Reorient volumes to these axis codes (None: keep).")
    spacing: list[float] | None = Field(None, description="Resample to this voxel spacing in mm (None: keep).")
    size: list[int] | None = Field(
        None, description="Model input size; one value per spatial dim (default 224x224 for 2D, 64^3 for 3D)."
    )
    resize: Literal["resize", "pad_crop"] = Field(
        "resize", description="resize: scale the whole field of view; pad_crop: centre crop or pad."
    )
    ct_window: tuple[float, float] = Field((-1000.0, 1000.0), description="CT: HU window mapped to [0, 1].")
    xr_percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="Radiographs (and MR for ImageNet weights): percentiles mapped to [0, 1]."
    )
    intensity: Literal["auto", "window", "percentiles", "zscore_nonzero", "range"] = Field(
        "auto",
        description="How scan intensities are brought to a common scale before the normalisation of the weights. "
        "window: ct_window -> [0, 1]; percentiles: each scan's xr_percentiles -> [0, 1]; zscore_nonzero: each "
        "scan's non-zero voxels to mean 0, SD 1; range: the fixed intensity_range -> [0, 1], the same for every "
        "scan (8-bit images: 0..255, as torchvision's ToTensor). auto: CT window, radiographs and MR percentiles "
        "for every weight source (pretrained and scratch arms see the same intensities; MedicalNet's z-score "
        "follows as its normalisation). Per-scan scaling removes absolute intensity: for patches or slices cut "
        "from scans of one protocol, where intensity tells classes apart, use range (benchmarks/README.md: "
        "+0.06 accuracy for scratch on MNI tissue patches).",
    )
    intensity_range: tuple[float, float] = Field(
        (0.0, 255.0), description="intensity: range: raw values mapped to 0 and 1 (clipped)."
    )
    normalization: Literal["auto", "imagenet", "zscore_nonzero", "none"] = Field(
        "auto", description="auto: what the weight source expects (ImageNet mean/std, MedicalNet z-score)."
    )

    @field_validator("size")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(s < 1 for s in v)):
            raise ValueError(f"size must hold positive integers (got {v})")
        return v


FLIP_NAMES = ("left_right", "anterior_posterior", "superior_inferior")


class AugmentConfig(_Section):
    """Random augmentation, applied to training samples only.

    Flips are named by anatomy and mapped to each mode's axes: in 2D and 2.5D samples (rows, columns as
    displayed) ``left_right`` flips the columns and ``anterior_posterior`` / ``superior_inferior`` flip the rows
    (an axial slice has anterior-posterior rows, a frontal radiograph superior-inferior ones); in 3D volumes
    reoriented to RAS they are axes 0, 1 and 2.
    """

    enabled: bool = Field(True, description="Turn all augmentation on or off.")
    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of each flip in ``flips``.")
    flips: list[Literal["left_right", "anterior_posterior", "superior_inferior"]] = Field(
        ["left_right"],
        description="Anatomical flips (2D/2.5D: left_right = columns, anterior_posterior or superior_inferior = "
        "rows; 3D in RAS: axes 0, 1, 2). Default left-right, the usual mirror image; set [] for tasks where "
        "laterality matters.",
    )
    flip_axes: list[int] | None = Field(
        None,
        description="Deprecated: raw spatial axes to flip, used instead of ``flips`` when set (2D/2.5D: 0 = rows, "
        "i.e. upside down, 1 = columns, left-right; 3D: the volume's axes).",
    )
    rotate_deg: float = Field(
        0.0,
        ge=0.0,
        description="Maximum in-plane rotation in degrees (0: none). Off by default: on the benchmark tasks "
        "(benchmarks/README.md) rotation with zoom and intensity shifts cost accuracy at short budgets.",
    )
    zoom: float = Field(0.0, ge=0.0, lt=1.0, description="Maximum relative zoom in or out (0: none; off by default).")
    affine_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of the rotation/zoom, when either is set.")
    intensity_shift: float = Field(
        0.0,
        ge=0.0,
        description="Maximum additive intensity shift, on the [0, 1] scale before normalisation (0: none; off by "
        "default, as it blurs the intensity differences tissue classes are told apart by).",
    )
    noise_std: float = Field(0.0, ge=0.0, description="Standard deviation of Gaussian noise (0: none).")
    device: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="Where the geometric augmentation (flips, rotation, zoom) runs. cpu: on each sample, in the "
        "loader; gpu: on each training batch after it reached the training device (the GPU), with the same "
        "draws per sample, so loader workers only read the cache. The rotation and zoom then act after the intensity "
        "shift, noise and normalisation (the same image for a fixed normalisation; a z-score keeps the unrotated "
        "scan's statistics).",
    )

    @model_validator(mode="after")
    def _one_way_to_flip(self) -> AugmentConfig:
        # flip_axes, when set, replaces flips; flips at its default (as a saved config repeats it) is no conflict
        if self.flip_axes is not None and self.flips != ["left_right"]:
            raise ValueError("set augment.flips (by anatomy) or the deprecated augment.flip_axes, not both")
        return self


class ModelConfig(_Section):
    """Which backbone and which pretrained weights."""

    arch: str = Field(
        description="Architecture, e.g. resnet18, mobilenet_v2, resnet18_3d (see `medtl backbones`); may be left out "
        "when model.weights names a source with weights for one architecture (rad-dino, litemedsam, ct-fm...)."
    )
    weights: str = Field(
        "scratch",
        description="scratch | imagenet | imagenet-inflated | medicalnet | ... (`medtl weights list`) | a file path.",
    )
    in_channels: int | None = Field(
        None, ge=1, description="Model input channels (default: what the weights expect; 1 for scratch)."
    )

    @model_validator(mode="before")
    @classmethod
    def _arch_from_weights(cls, data: Any) -> Any:
        weights = data.get("weights", "scratch") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("arch") is None and isinstance(weights, str):
            from medtl.weights.sources import single_arch_of  # the weight registry is data; imported only here

            arch = single_arch_of(weights)
            if arch is None:
                raise ValueError(
                    f"model.arch is missing; it may be left out only when model.weights names a source with weights "
                    f"for one architecture, and {weights!r} does not (see `medtl weights list`)"
                )
            data = {**data, "arch": arch}
        return data


# Bump when the code of the preprocessing changes what a cached sample holds, so stale disk caches are not reused.
PIPELINE_VERSION = 2


class TrainConfig(_Section):
    """How to train."""

    @property
    def monitor_mode(self) -> str:
        """``min`` for a monitor whose best value is the lowest (val_loss, val_hd95, val_mae), else ``max``."""
        from medtl.metric_specs import monitor_metric

        return monitor_metric(self.monitor or "val_loss").mode

    def lr_for(self, schedule: str) -> float:
        """``lr``, or the default of ``schedule`` (fine_tune 1e-3, one_cycle 3e-3)."""
        return self.lr if self.lr is not None else (3e-3 if schedule == "one_cycle" else 1e-3)

    epochs: int = Field(
        10,
        ge=1,
        description="Total epochs, INCLUDING the freeze_epochs of fine_tune (fastai's fine_tune(epochs, "
        "freeze_epochs) adds them on top; here epochs: 10 with freeze_epochs: 1 is 1 frozen + 9 unfrozen).",
    )
    batch_size: int = Field(16, ge=1)
    lr: float | None = Field(
        None,
        gt=0.0,
        description="Peak learning rate of the head (one-cycle maximum). Default: 1e-3 for fine_tune (pretrained "
        "weights), 3e-3 for one_cycle (scratch), the rates a plain torchvision loop uses; measured in "
        "benchmarks/README.md, scratch at 1e-3 lost 0.14 test accuracy on the MNI tissue task.",
    )
    weight_decay: float = Field(1e-4, ge=0.0)
    schedule: Literal["auto", "fine_tune", "one_cycle"] = Field(
        "auto",
        description="fine_tune: body frozen for freeze_epochs, then everything with discriminative rates; "
        "one_cycle: everything trains from the start. auto: fine_tune for pretrained weights, one_cycle for scratch.",
    )
    freeze_epochs: int = Field(1, ge=0, description="fine_tune: epochs with the body frozen (batch-norm trains).")
    lr_mult: float = Field(
        1.0,
        ge=1.0,
        description="fine_tune: the stem's rate is lr / lr_mult, spread geometrically up to the head (discriminative "
        "rates; fastai uses 10-100). Default 1, one rate for every group, as a plain loop trains: scans are far "
        "from ImageNet's photographs and the early layers must move too. On the MNI tissue benchmark "
        "(benchmarks/README.md) lr_mult 10 with unfreeze_lr_factor 0.5 scored 0.05 lower (both seeds).",
    )
    unfreeze_lr_factor: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="fine_tune: after unfreezing the head's peak rate is lr * this factor (fastai halves it). "
        "Default 1: see lr_mult.",
    )
    pct_start: float = Field(0.25, gt=0.0, lt=1.0, description="One-cycle: fraction of steps warming up.")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed", "32-true", "bf16-true"] = Field(
        "auto", description="auto: bf16-mixed on a GPU, 32 on CPU."
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = Field(1, ge=1, description="Devices per node; > 1 uses Lightning's DDP strategy.")
    num_nodes: int = Field(1, ge=1)
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="DataLoader worker processes. auto: on a GPU the cores this run may use minus one, at most 8 "
        "(cores shared among parallel compare runs and DDP processes, as torch's threads are), on the CPU 0 (workers "
        "would take the cores the model computes on). A run is reproduced exactly with the same number of workers: "
        "set a number to reproduce it on another machine.",
    )
    seed: int = Field(0, description="Seed of weights initialisation, shuffling and augmentation.")
    patience: int | None = Field(None, ge=1, description="Early stopping after this many epochs without progress.")
    monitor: str | None = Field(
        None,
        description="Metric of the best checkpoint (select: best) and of early stopping: val_<metric> of one of the "
        "task's metrics (`medtl metrics` lists them) or val_loss. Default: the task's primary metric (val_auroc, "
        "val_dice, val_mae...). Errors and distances (loss, MAE, HD95) are minimised, the others maximised.",
    )
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto",
        description="Cache preprocessed scans: memory (each run's own), disk (in $MEDTL_HOME/cache, one folder per "
        "preprocessing, shared by every run and process that preprocesses alike: the arms, seeds and label fractions "
        "of a comparison read one copy), none. auto: disk for volumes (3d, 2.5d), memory for 2D images.",
    )
    class_balance: Literal["none", "weighted_loss", "sampler"] = Field(
        "none", description="Class imbalance: inverse-frequency loss weights or a weighted sampler."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    precise_bn_batches: int = Field(
        20,
        ge=0,
        description="Re-estimate batch-norm statistics over up to this many training batches with the current "
        "weights (precise BN; 0 turns it off) before the validations whose checkpoint can be tested: every "
        "validation with select: best or early stopping (the monitor compares them), only the last one with "
        "select: last (earlier validations are then progress reports with the running statistics). Short runs "
        "and high learning rates otherwise leave running statistics that lag the weights, and a network trained "
        "from scratch can give the same output for every scan in eval mode: without it medtl's scratch arm fell "
        "from 0.60 to 0.40 accuracy on the MNI tissue benchmark (benchmarks/README.md). Its batches are drawn "
        "with the random state put back afterwards, so it never changes the weights training reaches (with "
        "num_workers 0; workers keep their own augmentation state). Each pass costs a forward pass over those "
        "batches (before every validation: +0.5x CPU per epoch on that benchmark).",
    )
    limit_train_batches: int | None = Field(None, ge=1, description="Cap on batches per epoch (quick checks).")
    deterministic: bool = Field(False, description="Ask torch for deterministic algorithms.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with Nesterov momentum.")
    select: Literal["best", "last"] = Field(
        "last",
        description="Checkpoint that is tested and predicts (saved as best.ckpt): last (the final epoch, as a plain "
        "training loop uses) or best (by train.monitor on the validation patients). Default last: with the small "
        "validation sets of transfer learning best picks a lucky epoch, and on the MNI tissue benchmark the last "
        "epoch scored higher for both arms (benchmarks/README.md); it also lets precise BN run once per run "
        "instead of before every validation.",
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd: momentum.")
    accumulate_grad_batches: int = Field(1, ge=1, description="Batches whose gradients are summed per step.")
    gradient_clip_val: float | None = Field(None, gt=0.0, description="Clip the gradient norm to this value.")
    channels_last: bool = Field(
        False, description="Channels-last memory format (2D and 3D): faster convolutions on GPUs with bf16/fp16."
    )
    compile: bool = Field(
        False, description="torch.compile the model; falls back to eager mode with a warning if compiling fails."
    )
    sync_batchnorm: bool = Field(
        False, description="Under DDP on GPUs, batch-norm statistics over all devices (CUDA only; ignored on CPUs)."
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Keep an exponential moving average of the weights (e.g. 0.999) and "
        "validate, checkpoint and test with it.",
    )
    max_nonfinite_steps: int = Field(
        0, ge=0, description="Training steps with a NaN/inf loss skipped before the run stops (0: stop at once)."
    )
    calibrate: Literal["none", "temperature"] = Field(
        "none",
        description="temperature (classification): after training, fit one temperature that divides every logit on "
        "the validation patients (minimum negative log-likelihood, Guo et al. 2017): the predicted classes stay "
        "the same, the probabilities become as sure as the model is right. It is recorded in the run "
        "(preprocessing.json) and used by the run's own test predictions, predict and evaluate; result.json "
        "records the validation ECE before and after.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of torch in this process (default: the cores this process may use, "
        "divided among parallel compare runs).",
    )
    loggers: list[Literal["csv", "tensorboard", "mlflow", "wandb"]] = Field(
        ["csv", "tensorboard"],
        description="csv: metrics.csv (always written); tensorboard: per-step loss and learning rate under "
        "tensorboard/; mlflow, wandb: need their packages (pip install 'medtl[mlflow]' / 'medtl[wandb]').",
    )


RUN_NAME_MAX = 120
"""The longest run name: a run folder's path must stay well under the file systems' 255-byte name limit."""

_RUN_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-+=@, ")


def check_run_name(name: str | None) -> str | None:
    """``name`` if it can name a run folder inside ``output.dir`` (training and pretraining alike): 1-120
    characters, each a letter, a digit, a space (not at either end) or one of ``. _ - + = @ ,``; not ``.`` or
    ``..``. So no path separator, NUL, newline or other control character, and no name the file system refuses
    (``File name too long``).

    Raises:
        ValueError: what is wrong with ``name`` (the config loader names the field, ``output.name``).
    """
    if name is None:
        return None
    problem = None
    bad = next((c for c in name if c not in _RUN_NAME_CHARS), None)
    if not name.strip():
        problem = "it is empty"
    elif len(name) > RUN_NAME_MAX:
        problem = f"it is {len(name)} characters long, at most {RUN_NAME_MAX} are allowed"
    elif bad is not None:
        kind = "a path separator" if bad in ("/", "\\") else "the character"
        problem = f"{kind} {bad!r} is not allowed"
    elif name in (".", ".."):
        problem = "it names no folder of its own"
    elif name != name.strip():
        problem = "it starts or ends with a space"
    if problem is None:
        return name
    shown = repr(name if len(name) <= 40 else name[:40] + "...")
    raise ValueError(
        f"{shown} is not a plain folder name inside output.dir ({problem}): use 1-{RUN_NAME_MAX} characters: letters "
        "a-z A-Z, digits, spaces (not at the ends) and . _ - + = @ ,"
    )


class OutputConfig(_Section):
    """Where runs go: ``<dir>/<name>`` (name defaults to a timestamp)."""

    dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    name: str | None = Field(
        None,
        description="Run folder name: 1-120 letters a-z A-Z, digits, spaces (not at the ends) and . _ - + = @ , "
        "(no path); default: <arch>-<weights>-<timestamp>.",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        return check_run_name(v)


class SegmentationConfig(_Section):
    """Segmentation: a ``mask`` column in the manifest (label-map NIfTI) and a U-Net decoder on the encoder.

    Present in a config, it makes the run a segmentation run; the manifest's ``label`` column then only
    stratifies the patient split (e.g. nodule / no_nodule).
    """

    classes: list[str] = Field(
        description="Class names in label-value order: mask value 0 is classes[0] (the background), 1 is classes[1]..."
    )
    mask_column: str = Field("mask", description="Manifest column holding the label map (paths relative to the CSV).")
    loss: Literal["dice_ce", "dice", "dice_focal", "ce"] = Field(
        "dice_ce", description="MONAI DiceCELoss, DiceLoss, DiceFocalLoss, or plain cross-entropy."
    )
    patch_size: list[int] | None = Field(
        None,
        description="3D: training patches of this size (voxels, multiples of the encoder's reduction, 32); "
        "validation and test slide a window of this size over the whole volume. None: preprocess.size. "
        "2D images are used whole (resized to preprocess.size).",
    )
    samples_per_scan: int = Field(4, ge=1, description="3D: patches drawn from each scan per epoch.")
    foreground_ratio: float = Field(
        0.67, ge=0.0, le=1.0, description="3D: share of patches centred on foreground (RandCropByPosNegLabeld)."
    )
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Sliding-window overlap of neighbouring windows.")
    blend: Literal["gaussian", "constant"] = Field("gaussian", description="Sliding-window blending of overlaps.")
    surface_tolerance_mm: float = Field(1.0, gt=0.0, description="Tolerance of the surface Dice, in mm.")
    decoder_channels: list[int] = Field(
        [256, 128, 64, 32, 16], description="Channels of the decoder blocks, deepest first (one per encoder scale)."
    )

    @field_validator("classes")
    @classmethod
    def _two_classes(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError("classes must hold the background and at least one other class, e.g. [background, lesion]")
        seen: dict[str, str] = {}
        for name in v:
            key = " ".join(name.split()).casefold()  # DICOM SEG segments are matched to classes with case ignored
            if key in seen:
                raise ValueError(f"classes list {seen[key]!r} and {name!r}, the same class; list each class once")
            seen[key] = name
        return v

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(s < 1 for s in v)):
            raise ValueError(f"patch_size must hold positive integers (got {v})")
        return v


class MultiLabelConfig(_Section):
    """Multi-label findings: several 0/1 findings per scan (``task: multilabel``; see :mod:`medtl.tasks.multilabel`).

    The manifest gives either one column per finding (``1`` present, ``0`` absent, ``-1`` uncertain, blank
    unknown; ``1.0``/``0.0``/``-1.0`` as CheXpert writes them) or one ``labels`` column naming the findings present,
    separated by ``|`` (an empty cell: no finding).
    """

    findings: list[str] | None = Field(
        None,
        description="The findings, in output order. Default: the sorted names found in the labels column when the "
        "manifest has one, else every other column whose filled cells are all 0, 1 or -1.",
    )
    labels_column: str = Field(
        "labels", description="Column of '|'-separated findings present (used when the manifest has it)."
    )
    separator: str = Field("|", min_length=1, description="Separator of the findings in the labels column.")
    uncertain: Literal["ignore", "zeros", "ones"] = Field(
        "ignore",
        description="Uncertain labels (-1, as CheXpert writes them). ignore: masked out of the loss and the metrics, "
        "like blank cells; zeros: read as absent; ones: read as present.",
    )
    pos_weight: Literal["none", "balanced"] | list[float] = Field(
        "none",
        description="Weights of the positive terms of the binary cross-entropy, one per finding. balanced: "
        "negatives / positives of each finding among the training scans; a list: one weight per finding.",
    )
    threshold: Literal["fixed", "youden", "f1"] = Field(
        "fixed",
        description="Decision thresholds of the pred_<finding> columns and of F1. fixed: threshold_value for every "
        "finding; youden (sensitivity + specificity - 1) or f1: each finding's best threshold on the validation "
        "scans after training, recorded in the run's preprocessing.json and used by predict and evaluate.",
    )
    threshold_value: float = Field(0.5, gt=0.0, lt=1.0, description="The threshold of threshold: fixed.")

    @field_validator("findings")
    @classmethod
    def _findings(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        names = [str(f).strip() for f in v]
        if not names or any(not n for n in names):
            raise ValueError("findings must list one or more non-empty names (or leave it out to read them)")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"findings lists {', '.join(map(repr, twice))} more than once; list each finding once")
        return names

    @field_validator("pos_weight")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or any(not w > 0 for w in v)):
            raise ValueError(f"pos_weight must be none, balanced or a list of positive numbers (got {v})")
        return v

    @model_validator(mode="after")
    def _weights_fit_findings(self) -> MultiLabelConfig:
        given = isinstance(self.pos_weight, list) and self.findings is not None
        if given and len(self.pos_weight) != len(self.findings):  # type: ignore[arg-type]
            raise ValueError(
                f"pos_weight has {len(self.pos_weight)} weights but findings lists {len(self.findings)} findings"
            )
        return self

    def check_experiment(self, config: ExperimentConfig) -> None:
        """Refuse options of the experiment that do not apply to multi-label findings (each names its
        replacement)."""
        if config.train.class_balance != "none":
            raise ValueError(
                f"train.class_balance {config.train.class_balance!r} balances the classes of a classification run; "
                "a multi-label run weighs each finding's positives with multilabel.pos_weight (e.g. balanced)"
            )
        if config.train.label_smoothing:
            raise ValueError("train.label_smoothing applies to classification; leave it at 0 for task: multilabel")
        if config.data.classes is not None:
            raise ValueError("data.classes lists the classes of a classification run; use multilabel.findings")
        if config.data.label_column != "label":
            raise ValueError(
                f"data.label_column {config.data.label_column!r} is the class column of a classification run; a "
                "multi-label manifest names its findings' column in multilabel.labels_column"
            )


class RegressionConfig(_Section):
    """Regression: a number per scan (``task: regression``; see :mod:`medtl.tasks.regression`).

    The manifest's ``data.label_column`` holds the numbers (an age, a volume, a score, a size in mm). The network has
    one output; with ``standardize`` it learns the target standardised by the training scans' mean and SD, and its
    outputs are turned back into the label's units before any metric, prediction or comparison sees them.
    """

    loss: Literal["mse", "l1", "huber"] = Field(
        "huber",
        description="mse: squared error; l1: absolute error; huber: squared within huber_delta of the target, "
        "absolute beyond it, so a few outlying or mistyped labels cannot dominate the gradients (the default).",
    )
    huber_delta: float = Field(
        1.0,
        gt=0.0,
        description="huber: where the loss turns from squared to absolute, in training-SD units of the target "
        "with standardize (in the label's units without).",
    )
    unit: str = Field(
        "", max_length=20, description="The label's unit (years, mm, ml), shown with MAE and RMSE in every output."
    )
    standardize: bool = Field(
        True,
        description="Learn (target - mean) / SD of the training scans' targets; outputs are turned back into the "
        "label's units (the mean and SD are kept in the run's preprocessing.json).",
    )
    bins: int = Field(
        5,
        ge=1,
        description="The patient split and the label fractions are stratified by this many quantile bins of each "
        "patient's mean target (fewer when there are too few patients for every bin to give val and test patients).",
    )

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        v = v.strip()
        if any(not (c.isprintable() and c not in "$|<>") for c in v):
            raise ValueError(f"unit {v!r} must be plain text (letters, digits, spaces, / ^ . %)")
        return v

    def check_experiment(self, config: ExperimentConfig) -> None:
        """Refuse options of the experiment that only a classification run uses (each names the field)."""
        if config.train.class_balance != "none":
            raise ValueError(
                f"train.class_balance {config.train.class_balance!r} balances classes; a regression run has none "
                "(its split is stratified by regression.bins): leave train.class_balance at none"
            )
        if config.train.label_smoothing:
            raise ValueError(
                f"train.label_smoothing {config.train.label_smoothing} smooths class labels; a regression target "
                "has none: leave it at 0"
            )
        if config.data.classes is not None:
            raise ValueError(
                "data.classes lists the classes of a classification run; a regression run reads numbers from "
                f"data.label_column ({config.data.label_column!r}): remove data.classes"
            )


class ExperimentConfig(_Section):
    """A whole experiment."""

    task: str = Field(
        "auto",
        description="What is learned: classification, multilabel, regression or segmentation. auto: segmentation "
        "when the config has a segmentation section, else classification (multi-label and regression are never "
        "guessed).",
    )
    data: DataConfig
    splits: SplitsConfig = SplitsConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()
    segmentation: SegmentationConfig | None = None
    multilabel: MultiLabelConfig | None = None
    regression: RegressionConfig | None = None

    @model_validator(mode="after")
    def _task_and_monitor(self) -> ExperimentConfig:
        """Resolve ``task: auto`` and check ``train.monitor`` against the task's metrics (default: its primary one)."""
        from medtl.errors import MedtlError
        from medtl.metric_specs import METRIC_SPECS, default_metric, monitors_for_task
        from medtl.tasks import task_name

        try:
            task = task_name(self)
        except MedtlError as exc:
            raise ValueError(str(exc)) from None
        if self.task != task:
            self.task = task
        section = type(self).model_fields.get(task)
        if section is not None and getattr(self, task) is None:
            # the task's own options: defaults where it has none that must be given
            kind = next(a for a in section.annotation.__args__ if a is not type(None))  # type: ignore[union-attr]
            needed = [name for name, f in kind.model_fields.items() if f.is_required()]
            if needed:
                raise ValueError(f"task: {task} needs a {task}: section with {', '.join(needed)}")
            setattr(self, task, kind())
        check = getattr(getattr(self, task, None), "check_experiment", None)
        if check is not None:  # the task's section refuses options of the experiment that do not apply to it
            check(self)
        if self.train.calibrate != "none":  # the task's own list; read only when asked (it imports the task)
            from medtl.tasks import task_class

            calibrations = task_class(task).calibrations
            if self.train.calibrate not in calibrations:
                raise ValueError(
                    f"train.calibrate {self.train.calibrate!r} is not available for a {task} run; it takes "
                    f"{', '.join(calibrations)}"
                )
        allowed = monitors_for_task(task)
        if self.train.monitor is None:
            self.train.monitor = METRIC_SPECS[default_metric(task)].monitor
        elif self.train.monitor not in allowed:
            raise ValueError(
                f"train.monitor {self.train.monitor!r} is not a metric of a {task} run; it monitors one of "
                f"{', '.join(allowed)}"
            )
        return self

    def resolved_schedule(self) -> str:
        """The schedule actually used (``auto`` resolved from the weights)."""
        if self.train.schedule != "auto":
            return self.train.schedule
        return "one_cycle" if self.model.weights == "scratch" else "fine_tune"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-compatible dict (paths as strings)."""
        return self.model_dump(mode="json")

    def transform_key(self) -> str:
        """Hash of everything that changes preprocessed samples (keys the disk cache)."""
        blob = json.dumps(
            {
                "data": self.data.model_dump(mode="json"),
                "pre": self.preprocess.model_dump(mode="json"),
                "pipeline_version": PIPELINE_VERSION,
            }
            # masks are cached with their images: a segmentation run keys its own cache
            | ({"segmentation": self.segmentation.model_dump(mode="json")} if self.segmentation else {}),
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
