"""The ``compare`` section of a comparison config, its arms, and how an arm becomes an :class:`Arm`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medtl.comparison.results import Arm
from medtl.errors import ConfigError, MedtlError
from medtl.metric_specs import check_metric_for_task, default_metric, metric_spec, metrics_for_task
from medtl.tasks import TASK_NAMES

__all__ = [
    "ArmModel",
    "ArmConfig",
    "CompareSection",
    "CompareConfig",
    "load_compare_config",
    "default_arms",
    "arm_spec",
    "arm_overrides",
    "arm_config",
    "load_any_config",
    "compare_config_to_yaml",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArmModel(_Section):
    """The backbone of an arm; unset fields come from the experiment's ``model`` section."""

    arch: str | None = Field(
        None,
        description="Architecture (default: the one architecture of the arm's weight source when it has weights for "
        "one, e.g. rad-dino or litemedsam; else the experiment's model.arch).",
    )
    weights: str = Field("scratch", description="scratch | imagenet | imagenet-inflated | medicalnet | ... | a path.")
    in_channels: int | None = Field(None, ge=1, description="Model input channels (default: the weights').")


class ArmConfig(_Section):
    """One arm: a name, a backbone with its starting weights, a schedule and a data mode."""

    name: str = Field(description="Short name, used for folders (letters, digits, _ . -).")
    label: str | None = Field(None, description="Name shown in the report (default: name).")
    model: ArmModel = ArmModel()
    schedule: Literal["auto", "fine_tune", "one_cycle"] = Field(
        "auto", description="auto: fine_tune for pretrained weights, one_cycle for scratch."
    )
    mode: Literal["2d", "3d", "2.5d"] | None = Field(None, description="Data mode (default: the experiment's).")
    augment: dict[str, Any] | None = Field(
        None,
        description="Augmentation fields this arm changes (``{flips: [], rotate_deg: 10}``); the others come from "
        "the experiment's augment section.",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"arm name {v!r} may hold only letters, digits, '_', '.', '-'")
        return v


class CompareSection(_Section):
    """What to compare and how."""

    arms: list[ArmConfig] | None = Field(
        None,
        description="Arms; default: every registered weight source that fits the data (dims, modality) and is its "
        "family's default arm, with its own architecture when it is made for one (else model.arch), plus scratch "
        "(`medtl weights list --for CONFIG` shows which and why).",
    )
    seeds: int = Field(3, ge=1, description="Seeds per arm and fraction (seeds 0..n-1).")
    repeat: Literal["seeds", "folds", "both"] = Field(
        "seeds",
        description="What each arm's runs repeat over: seeds (compare.seeds runs on one split), folds (one run per "
        "cross-validation fold of splits.folds, seed 0; every fold's model is tested on the same held-out test "
        "patients) or both (compare.seeds x splits.folds runs). Folds share training patients, so their intervals "
        "are Nadeau and Bengio's corrected resampled t (README: Cross-validation).",
    )
    fractions: list[float] = Field([0.1, 0.25, 0.5, 1.0], description="Label fractions of the training patients.")
    primary_metric: str | None = Field(
        None,
        description="The metric the verdict is about, one of the task's (`medtl metrics` lists them): "
        + "; ".join(f"{t}: {', '.join(metrics_for_task(t))} (default {default_metric(t)})" for t in TASK_NAMES)
        + ". Errors and distances (MAE, HD95 in mm) are lower-is-better. Each run's tested checkpoint is chosen on "
        "it too (train.monitor: val_<primary_metric>) unless the config sets train.monitor.",
    )
    secondary_metrics: list[str] = Field(
        [],
        description="Other metrics of the task reported with the same paired difference and interval against the "
        "reference arm, in a table of their own (e.g. [brier, ece]: how well calibrated each arm's probabilities "
        "are); the verdict stays the primary metric's.",
    )
    reference: str = Field("scratch", description="The arm every other arm is compared with.")
    also_against: list[str] | None = Field(
        None,
        description="Arms every other arm is also compared with, besides the reference (default: the ImageNet arms, "
        "whose weights are imagenet or imagenet-inflated, unless one is the reference; [] for none). At each label "
        "fraction the tests of every arm against the reference and against these are one family: a verdict needs "
        "a Holm-adjusted p below 0.05 and the intervals shown are Bonferroni's simultaneous ones.",
    )
    n_resamples: int = Field(2000, ge=100, description="Bootstrap resamples over test patients.")
    dir: Path | None = Field(None, description="Comparison folder (default: <output.dir>/compare-<output.name>).")

    @field_validator("fractions")
    @classmethod
    def _fractions_ok(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 < f <= 1.0 for f in v):
            raise ValueError(f"fractions must be in (0, 1] (got {v})")
        return sorted(set(float(f) for f in v))


class CompareConfig(_Section):
    """An experiment config plus its ``compare`` section."""

    experiment: Any  # medtl.config.ExperimentConfig (validated by load_config)
    compare: CompareSection = CompareSection()


def _resolve(raw: dict[str, Any], base: Path) -> None:
    """Paths in a YAML file are relative to the file: the experiment's as medtl.config does, then the compare's."""
    from medtl.config import resolve_config_paths, resolve_relative_path

    resolve_config_paths(raw, base)
    comp = raw.get("compare")
    if isinstance(comp, dict):
        resolve_relative_path(comp, "dir", base)
        for arm in comp.get("arms") or []:
            if isinstance(arm, dict):
                resolve_relative_path(arm.get("model"), "weights", base, only_files=True)


def compare_overrides(
    overrides: dict[str, Any] | None, seeds: int | None = None, fractions: Sequence[float] | None = None
) -> dict[str, Any]:
    """The overrides of :func:`load_compare_config` for ``compare(..., seeds=, fractions=, overrides=)``."""
    out = dict(overrides or {})
    if seeds is not None:
        out["compare.seeds"] = seeds
    if fractions is not None:
        out["compare.fractions"] = list(fractions)
    return out


def load_compare_config(
    path_or_dict: str | Path | dict[str, Any] | CompareConfig, overrides: dict[str, Any] | None = None
) -> CompareConfig:
    """Read a comparison config: the experiment sections plus an optional ``compare`` section.

    Args:
        path_or_dict: a YAML file, a dict, or a CompareConfig.
        overrides: dotted keys for the experiment (``{"train.epochs": 2}``) or ``compare.*``
            (``{"compare.seeds": 2}``).

    Raises:
        ConfigError: unknown or invalid fields, with their path and the allowed values.
    """
    from medtl.config import load_config
    from medtl.config.loading import raw_config

    given = path_or_dict
    if isinstance(given, CompareConfig):
        given = {**given.experiment.to_dict(), "compare": given.compare.model_dump(mode="json")}
    raw, source = raw_config(given, overrides, _resolve)
    comp_raw = raw.pop("compare", None) or {}
    if not isinstance(comp_raw, dict):
        raise ConfigError(f"invalid config {source}: compare must be a mapping (arms, seeds, fractions...)")
    try:
        section = CompareSection.model_validate(comp_raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "compare." + ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown field")
            else:
                problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        allowed = ", ".join(CompareSection.model_fields)
        arm_fields = ", ".join(ArmConfig.model_fields)
        raise ConfigError(
            f"invalid config {source}: "
            + "; ".join(problems)
            + f". compare fields: {allowed}; arm fields: {arm_fields}"
        ) from None
    from medtl.tasks import task_name

    try:
        task = task_name(raw)
    except ConfigError as exc:
        raise ConfigError(f"invalid config {source}: {exc}") from None
    if section.primary_metric is None:
        section.primary_metric = default_metric(task)
    try:
        check_metric_for_task(section.primary_metric, task)
        for name in section.secondary_metrics:
            check_metric_for_task(name, task, where="compare.secondary_metrics")
    except ConfigError as exc:
        raise ConfigError(f"invalid config {source}: {exc}") from None
    train = raw.setdefault("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"invalid config {source}: train must be a mapping of fields")
    if "monitor" not in train:
        # the checkpoint each run tests is the one best on the metric the comparison is about
        train["monitor"] = _monitor_for(section.primary_metric)
    experiment = load_config(raw)
    for arm in section.arms or []:
        if arm.augment:
            arm_config(experiment, arm, source=source)  # an invalid augment field fails now, not in every run
    return CompareConfig(experiment=experiment, compare=section)


def _monitor_for(metric: str) -> str:
    """The checkpoint monitor of a primary metric (``val_<metric>``; errors and distances are minimised)."""
    return metric_spec(metric).monitor


def load_any_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """An experiment config file, or a comparison config file (one with a ``compare`` section).

    Args:
        path: the YAML file.
        overrides: dotted keys, for the experiment or ``compare.*``.

    Returns:
        An :class:`~medtl.config.ExperimentConfig`, or a :class:`CompareConfig`.

    Raises:
        ConfigError: as :func:`~medtl.config.load_config` and :func:`load_compare_config`.
    """
    from medtl.config import load_config, read_config_file

    raw = read_config_file(Path(path).expanduser())
    if "compare" in raw or any(k == "compare" or k.startswith("compare.") for k in overrides or {}):
        return load_compare_config(path, overrides)
    return load_config(path, overrides)


def compare_config_to_yaml(cfg: CompareConfig) -> str:
    """A comparison config as YAML, defaults filled in (arms: the defaults when the file names none)."""
    import yaml

    section = cfg.compare.model_dump(mode="json")
    if cfg.compare.arms is None:
        section["arms"] = [a.model_dump(mode="json", exclude_none=True) for a in default_arms(cfg.experiment)]
    return yaml.safe_dump({**cfg.experiment.to_dict(), "compare": section}, sort_keys=False, allow_unicode=True)


def arm_overrides(arm: ArmConfig) -> dict[str, Any]:
    """Experiment overrides by dotted key that the arm sets beyond model, schedule and mode (its ``augment``)."""
    return {f"augment.{k}": v for k, v in (arm.augment or {}).items()}


def arm_config(experiment: Any, arm: ArmConfig, *, source: str = "(object)") -> Any:
    """The experiment config as ``arm`` changes it (augmentation); model and schedule are set per run.

    Raises:
        ConfigError: an augment field that does not exist or is invalid, naming the arm.
    """
    from medtl.config import load_config

    try:
        return load_config(experiment.to_dict(), arm_overrides(arm))
    except ConfigError as exc:
        raise ConfigError(
            f"arm {arm.name!r} in {source}: {exc}", fix="see `medtl config show` for the fields"
        ) from None


# --------------------------------------------------------------------------------------------- arms


def default_arms(experiment: Any, offers: list[Any] | None = None) -> list[ArmConfig]:
    """The arms of a comparison whose config names none: every registered weight source that fits the data (dims,
    modality) and is its family's default arm, each with its own architecture when it is made for one (else
    ``model.arch``), plus scratch. :mod:`medtl.comparison.arm_offers` holds the rules; ``medtl weights list --for
    CONFIG`` shows them applied.

    Args:
        experiment: the experiment config.
        offers: :func:`~medtl.comparison.arm_offers.arm_offers` of it, when already made.
    """
    from medtl.comparison.arm_offers import arm_offers, offered

    offers = arm_offers(experiment) if offers is None else offers
    arms = [ArmConfig(name=o.source, model=ArmModel(arch=o.arch, weights=o.source)) for o in offered(offers)]
    return [*arms, ArmConfig(name="scratch", model=ArmModel(arch=experiment.model.arch, weights="scratch"))]


def arm_spec(arm: ArmConfig, experiment: Any) -> Arm:
    from medtl.weights import get_weight_source
    from medtl.weights.sources import single_arch_of

    weights = arm.model.weights
    arch = arm.model.arch or single_arch_of(weights) or experiment.model.arch
    schedule = arm.schedule if arm.schedule != "auto" else ("one_cycle" if weights == "scratch" else "fine_tune")
    try:  # what the source says; each run adds the file it really loaded and its hash (_merge_provenance)
        src = get_weight_source(weights)
        provenance: dict[str, Any] = {
            "source": src.name,
            "description": src.description,
            "license": src.license,
            "restriction": src.restriction,
            "citation": src.citation,
        }
    except MedtlError as exc:  # an unknown source fails in its runs, with the error recorded there
        provenance = {"source": weights, "error": str(exc)}
    return Arm(
        name=arm.name,
        arch=arch,
        weights=weights,
        schedule=schedule,
        mode=arm.mode or experiment.data.mode,
        in_channels=arm.model.in_channels if arm.model.in_channels is not None else experiment.model.in_channels,
        label=arm.label or _default_label(arm.name, arch, weights),
        provenance=provenance,
        overrides=arm_overrides(arm),
    )


def _default_label(name: str, arch: str, weights: str) -> str:
    if weights == "scratch":
        return "scratch" if name == "scratch" else name
    return f"{arch} {name}" if name == weights else name


# ------------------------------------------------------------------------------------------- splits
