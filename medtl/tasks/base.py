"""The task protocol: everything the engine asks of a task, in one class.

A task says what the network outputs and how it learns (head, loss, target), how a manifest's labels become
targets and strata for the patient split, how outputs become per-scan scores and metrics, how predictions are
written and scored on new data, and what ``compare`` aggregates per patient and draws in its report. The engine
(:mod:`medtl.train`, :mod:`medtl.comparison`, pretraining's k-NN check) calls these methods and never asks which
task it holds.

:class:`Task` implements what every task that predicts one row of values per scan shares (classification,
multi-label, regression): a linear head on pooled features, validation by a forward pass, slices of a 2.5D scan
averaged, a predictions CSV, ``evaluate`` on a labelled manifest, per-patient units for the comparison.
Segmentation overrides what differs (a decoder, sliding-window validation, masks written as files).

The class-level methods work from a config before any run exists; an instance is the task of one experiment
(its classes or findings, its loss weights, its target scaling: :meth:`state`, restored by :meth:`from_state`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from medtl.metric_specs import LOSS, metric_spec, metrics_for_task

if TYPE_CHECKING:
    from medtl.config import ExperimentConfig
    from medtl.data import Manifest

__all__ = ["Task", "Batch", "EvalRows"]

Batch = dict[str, Any]
#: what :meth:`Task.evaluate_batch` returns: ``(scores, targets, scan_ids, per-sample losses)``
EvalRows = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class Task:
    """What the engine needs to know about a task (see the module docstring).

    Attributes:
        name: the registry name (``classification``, ``segmentation``...).
        classes: the names of the outputs: class names, findings, or the predicted quantity.
    """

    name: ClassVar[str] = ""
    #: what ``medtl predict`` writes by default: a CSV file, or a folder of masks
    default_output: ClassVar[str] = "predictions.csv"
    #: options of ``predict`` only this task understands (``dicom_seg`` for segmentation)
    predict_options: ClassVar[tuple[str, ...]] = ()
    #: what ``train.calibrate`` may be in a run of this task (:meth:`calibrate`)
    calibrations: ClassVar[tuple[str, ...]] = ("none",)

    classes: list[str]

    # ------------------------------------------------------------------ config, manifest, split (class level)
    @classmethod
    def read_manifest(cls, config: ExperimentConfig, *, check_files: bool = True) -> Manifest:
        """The experiment's manifest, read and checked for this task's labels."""
        raise NotImplementedError

    @classmethod
    def records(cls, config: ExperimentConfig, manifest: Manifest) -> list[dict[str, Any]]:
        """The manifest's rows as the dicts datasets take, with the task's targets attached."""
        return manifest.to_dicts()

    @classmethod
    def build_pipeline(cls, config: ExperimentConfig, record: Any) -> Any:
        """The transforms of an experiment with this task (``record``: its
        :class:`~medtl.transforms.record.InputRecord`)."""
        from medtl.transforms.presets import build_pipeline

        return build_pipeline(config, record)

    @classmethod
    def output_names(cls, config: ExperimentConfig, manifest: Manifest) -> list[str]:
        """The names of the outputs (classes, findings...) a run of ``config`` on ``manifest`` will have."""
        return list(config.data.classes or manifest.classes)

    @classmethod
    def patient_strata(cls, records: Sequence[dict[str, Any]]) -> dict[str, int]:
        """One stratum per patient for the split and the label-fraction subsets (default: the patient's most
        frequent label; unlabelled records form one stratum)."""
        from medtl.data.splits import patient_labels

        return patient_labels(records)

    @classmethod
    def make_splits(cls, records: Sequence[dict[str, Any]], splits: Any) -> dict[str, str]:
        """Patient -> ``train``/``val``/``test``: a manifest's split column, else stratified by
        :meth:`patient_strata` (``splits``: the config's ``splits`` section)."""
        from medtl.data.splits import make_splits

        return make_splits(
            list(records),
            seed=splits.seed,
            val_fraction=splits.val_fraction,
            test_fraction=splits.test_fraction,
            folds=splits.folds,
            fold=splits.fold,
            strata=cls.patient_strata(records),
        )

    @classmethod
    def fraction_patients(
        cls, train_patients: Sequence[str], records: Sequence[dict[str, Any]], fraction: float, seed: int
    ) -> list[str]:
        """The training patients whose labels a run at label fraction ``fraction`` uses: stratified, and nested
        (the 10% patients are among the 25% ones)."""
        from medtl.data.splits import label_fraction_patients

        if fraction >= 1.0:
            return list(train_patients)
        return label_fraction_patients(list(train_patients), cls.patient_strata(records), fraction, seed)

    # ------------------------------------------------------------------ the task of an experiment
    @classmethod
    def from_experiment(cls, config: ExperimentConfig, manifest: Manifest, pipeline: Any) -> Task:
        """The task of an experiment (before its datasets exist)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, config: ExperimentConfig, state: dict[str, Any], pipeline: Any) -> Task:
        """The task of a finished run, from what :meth:`state` wrote into its ``preprocessing.json``."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What :meth:`from_state` needs to rebuild this task for inference (written to preprocessing.json)."""
        return {"task": self.name, "classes": list(self.classes)}

    def check_training_split(self, records: Sequence[dict[str, Any]], assignment: dict[str, str], where: str) -> None:
        """Refuse a split the task cannot learn from (a class with no training patient). Default: nothing."""

    @classmethod
    def split_label_text(cls, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Patient -> the label splits.csv shows for the patient (the name of the patient's stratum)."""
        names = {int(r["label"]): str(r.get("label_name", r["label"])) for r in records if r.get("label") is not None}
        return {p: names.get(s, str(s)) for p, s in cls.patient_strata(records).items()}

    def describe_labels(self, records: Sequence[dict[str, Any]]) -> str:
        """The labels of some records in a few words, for the model card (``normal: 12, abnormal: 9``)."""
        from collections import Counter

        counts = Counter(str(r.get("label_name", r.get("label", ""))) for r in records)
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))

    def fit(self, experiment: Any) -> None:
        """Learn what the task takes from the training split once the datasets exist (loss weights, target
        scaling). Default: nothing."""

    def learn_from_validation(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Learn what the task takes from the trained model's per-scan validation scores (:meth:`score_split`), before
        the final metrics are computed: decision thresholds, say. What it learns belongs in :meth:`state`: the run's
        preprocessing.json is written again after the final scoring. Default: nothing."""

    def dataset(self, records: list[dict[str, Any]], pipeline: Any, **options: Any):
        """The task's dataset class over ``records`` (scan-level tasks: a :class:`~medtl.data.dataset.SampleDataset`
        with the sample's label; a task whose samples carry other targets returns its subclass)."""
        from medtl.data.dataset import SampleDataset

        return SampleDataset(records, pipeline, **options)

    def make_dataset(self, experiment: Any, records: list[dict[str, Any]], *, train: bool, cache: str | None = None):
        """The dataset of ``records`` with the experiment's pipeline (scan-level tasks: slices of 2.5D scans); its disk
        cache is shared by every run that preprocesses alike (:func:`~medtl.data.loading.preprocessing_cache_dir`)."""
        from medtl.data.loading import preprocessing_cache_dir

        cfg = experiment.config
        return self.dataset(
            records,
            experiment.pipeline,
            train=train,
            cache=cache or cfg.train.cache,
            cache_dir=preprocessing_cache_dir(experiment),
            slices_per_scan=cfg.data.slices_per_scan,
            slice_margin=cfg.data.slice_margin,
            neighbor_slices=cfg.data.neighbor_slices,
            num_workers=cfg.train.num_workers,
            seed=cfg.train.seed,
        )

    def read_labelled(self, path: Path) -> list[dict[str, Any]]:
        """The rows of a labelled manifest given to a finished run (``predict``, ``evaluate``), with this task's
        targets: labels checked against the run's own classes."""
        from medtl.data import Manifest

        return Manifest.from_csv(path, classes=self.classes).to_dicts()

    def eval_dataset(self, config: ExperimentConfig, pipeline: Any, records: list[dict[str, Any]]):
        """A finished run's preprocessing over ``records``: no augmentation, no cache (predict, evaluate)."""
        return self.dataset(
            records,
            pipeline,
            train=False,
            cache="none",
            slices_per_scan=config.data.slices_per_scan,
            slice_margin=config.data.slice_margin,
            neighbor_slices=config.data.neighbor_slices,
        )

    # ------------------------------------------------------------------ the network and its training
    @property
    def num_outputs(self) -> int:
        """Channels of the network's output (the head size)."""
        return len(self.classes)

    def model_options(self, config: ExperimentConfig) -> dict[str, Any]:
        """Keyword arguments of :func:`medtl.create_model` beyond architecture, weights, channels and outputs."""
        return {}

    def check_model(self, model: nn.Module, pipeline: Any, config: ExperimentConfig) -> None:
        """Refuse a network the task cannot use with this input (a window the encoder cannot halve). Default: ok."""

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What validation logs as ``val_<name>``: the loss, then this task's metrics
        (:data:`medtl.metric_specs.METRICS`, in their order)."""
        return (LOSS.name, *metrics_for_task(self.name))

    def metric_spec(self, name: str) -> Any:
        """The record of one of this task's metrics (a regression error in the label's unit)."""
        return metric_spec(name)

    @property
    def eval_batch_size(self) -> int | None:
        """Batch size of validation and inference (None: the training batch size)."""
        return None

    def make_loss(self) -> nn.Module:
        """The training loss, called as ``loss(outputs, targets)``."""
        raise NotImplementedError

    def target(self, batch: Batch) -> torch.Tensor:
        """The training target in a batch."""
        return batch["label"]

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (the validation loss), unweighted."""
        raise NotImplementedError

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Network outputs to the scores that are aggregated per scan and written (probabilities, values)."""
        raise NotImplementedError

    def evaluate_batch(self, predictor: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> EvalRows:
        """Scores of one validation or inference batch: ``(scores, targets, scan ids, per-sample losses)``.

        Scan-level tasks: one forward pass; non-finite outputs are an error, never metrics.
        """
        outputs = predictor(batch["image"]).float()
        if not torch.isfinite(outputs).all():
            from medtl.errors import TrainingError

            raise TrainingError(
                "the model gives non-finite outputs (NaN or inf)",
                fix="check the weights (a checkpoint of NaNs) or train with a lower learning rate",
            )
        target = self.target(batch)
        losses = self.sample_losses(outputs, target.to(outputs.device)) if target is not None else None
        scans = torch.as_tensor(batch["scan"]).reshape(-1)
        if losses is None:
            losses = torch.full((outputs.shape[0],), math.nan)
        return self.outputs_to_scores(outputs), target, scans, losses

    def per_scan(
        self, scores: torch.Tensor, targets: torch.Tensor, scans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample rows to one row per scan, sorted by scan (the slices of a 2.5D scan averaged)."""
        from medtl.train.metrics import aggregate_by_scan

        return aggregate_by_scan(scores, targets, scans)

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Metrics of per-scan scores (NaN where undefined), keyed by :attr:`metric_names` (``loss`` aside)."""
        raise NotImplementedError

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        """The value logged as ``val_<key>`` (NaN counts as no improvement)."""
        return float(metrics[key])

    def headline(self, metrics: dict[str, Any]) -> str:
        """The primary metric in a few words, for the console: ``AUROC 0.912``."""
        from medtl.metric_specs import default_metric

        spec = self.metric_spec(default_metric(self.name))
        return f"{spec.words} {spec.amount(metrics.get(spec.name, math.nan))}"

    # ------------------------------------------------------------------ a finished run
    def score_split(self, experiment: Any, model: nn.Module, split: str, *, device: str, precision: str):
        """Per-scan ``(scores, targets, scan ids)`` of a split of the experiment with the trained model."""
        from medtl.train.inference import predict_dataset

        return predict_dataset(
            model,
            experiment.datasets[split],
            self,
            batch_size=experiment.config.train.batch_size,
            device=device,
            precision=precision,
        )

    def calibrate(self, experiment: Any, model: nn.Module, *, device: str, precision: str) -> None:
        """Fit what calibrates the trained model's scores (``train.calibrate``, one of :attr:`calibrations`) on the
        validation patients, before the final scoring: the validation and test metrics and predictions, and
        predict and evaluate later (through :meth:`state`), then use it. Default: nothing."""

    def result_extras(self) -> dict[str, Any]:
        """What the task adds to a run's result.json besides its metrics. Default: nothing."""
        return {}

    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        """Columns of a predictions CSV."""
        raise NotImplementedError

    def prediction_rows(
        self, records: Sequence[dict[str, Any]], scores: torch.Tensor, scan_ids: torch.Tensor, *, with_labels: bool
    ) -> list[dict[str, Any]]:
        """One dict per scan, keyed by :meth:`prediction_columns`."""
        raise NotImplementedError

    def saliency(self, explainer: Any, image: torch.Tensor, *, target: str | None = None) -> tuple[torch.Tensor, str]:
        """A saliency map of one scan (:mod:`medtl.train.saliency`): the task chooses the output to explain and calls
        ``explainer(image, index)``.

        Args:
            explainer: a :class:`~medtl.train.saliency.SaliencyExplainer` of the run's network.
            image: the scan's network input ``(1, C, *spatial)``.
            target: the name of the output to explain, or None for the task's default.

        Returns:
            The map ``(*spatial)`` and the name of the output it explains.

        Raises:
            TrainingError: by default: the task has no saliency maps.
        """
        from medtl.errors import TrainingError

        raise TrainingError(
            f"saliency maps are not available for a {self.name} run", fix="leave out --saliency (classification runs)"
        )

    def write_extras(self, run: Any, model: nn.Module, dataset: Any, records: Sequence[dict[str, Any]]) -> None:
        """Write what the task adds to a finished run folder besides the predictions (overlays). Default: nothing."""

    def export_spec(self, record: Any) -> dict[str, Any]:
        """What an exported network returns and how ``predict`` runs it (:mod:`medtl.export`).

        Scan-level tasks: one network call per scan, ending with :meth:`outputs_to_scores` (``dense`` False,
        ``scores`` the function, no window). A dense task (segmentation) returns logits per voxel of a window that
        slides over the whole scan: ``dense`` True, ``scores`` None and ``window`` (``roi_size``, ``overlap``,
        ``mode``, ``sw_batch_size``).
        """
        return {"dense": False, "scores": self.outputs_to_scores, "window": None}

    def card_metrics(self, config: ExperimentConfig, result: dict[str, Any]) -> list[str]:
        """The model card's metrics section (Markdown lines): one row per split of the run's metrics."""
        from medtl.train.card import metrics_table

        names = [m for m in self.metric_names if m != "loss"]
        return metrics_table(result, [(m, self.metric_spec(m).words) for m in names])

    # ------------------------------------------------------------------ predict and evaluate
    def predict(
        self,
        loaded: Any,
        inputs: list[str | Path],
        out: Path | None,
        *,
        batch_size: int | None = None,
        device: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions of a finished run (``loaded``: :class:`medtl.train.predict.LoadedRun`) for scans, folders or
        manifests; with ``out``, written as one CSV."""
        from medtl.train.predict import predict_rows

        return predict_rows(loaded, inputs, out, batch_size=batch_size, device=device, **(options or {}))

    def evaluate(
        self,
        loaded: Any,
        manifest: str | Path,
        *,
        out: Path | None = None,
        allow_seen: bool = False,
        device: str | None = None,
        grid: str = "native",
    ) -> dict[str, Any]:
        """The run's metrics on a labelled manifest (patients the run saw refused, or scored apart)."""
        from medtl.train.scoring import evaluate_rows

        return evaluate_rows(loaded, manifest, out=out, allow_seen=allow_seen, device=device)

    def evaluation_units(
        self,
        records: Sequence[dict[str, Any]],
        scores: torch.Tensor,
        scan_ids: torch.Tensor,
        *,
        run: Any = None,
    ) -> Any:
        """Per-patient units of scans ``evaluate`` scored, made as :meth:`patient_units` makes a run's test units for
        ``compare`` (so an external evaluation and a comparison compute their metrics and intervals one way).

        Default: the scans' :meth:`prediction_rows` are written as the ``predictions_test.csv`` of a temporary folder
        (beside a copy of ``run``'s ``preprocessing.json``, which :meth:`patient_units` may read: a multi-label run's
        thresholds) and read back by :meth:`patient_units`.

        Args:
            records: the evaluated manifest's rows.
            scores: per-scan scores (as :meth:`metrics` takes them), one row per entry of ``scan_ids``.
            scan_ids: each row's index into ``records``.
            run: the evaluated run's :class:`~medtl.rundir.RunDir`.
        """
        import shutil
        import tempfile

        from medtl.rundir import RunDir

        rows = self.prediction_rows(records, scores, scan_ids, with_labels=True)
        with tempfile.TemporaryDirectory(prefix="medtl-units-") as tmp:
            view = RunDir(tmp)
            view.write_predictions("test", self.prediction_columns(with_labels=True), rows)
            if run is not None and run.file(RunDir.PREPROCESSING).is_file():
                shutil.copy2(run.file(RunDir.PREPROCESSING), view.file(RunDir.PREPROCESSING))
            return type(self).patient_units(view, list(self.classes))

    @classmethod
    def evaluation_plots(cls, result: dict[str, Any], units: Any, plot_dir: Path) -> dict[str, tuple[str, Path]]:
        """Task-specific plots of ``medtl evaluate --report``: key -> (title, PNG written in ``plot_dir``).

        Args:
            result: :meth:`evaluate`'s result (``scans``: the per-scan rows with their ``split``; rows of patients
                the run trained or validated on are not the evaluation's).
            units: the per-patient units of the evaluated (unseen) scans (:meth:`evaluation_units`).
            plot_dir: where to write the PNGs.

        Default: none.
        """
        return {}

    @classmethod
    def describe_evaluation(cls, result: dict[str, Any]) -> list[str]:
        """What ``medtl evaluate`` prints for :meth:`evaluate`'s result."""
        names = [m for m in metrics_for_task(cls.name, comparable=False) if m != "loss"]

        def shown(m: dict[str, Any]) -> str:
            parts = [f"n {m.get('n', 0)}"]
            for k in names:
                v = m.get(k)
                if isinstance(v, float) and math.isfinite(v):
                    parts.append(f"{k} {v:.4f}")
            return "  ".join(parts)

        lines = [shown(result)]
        for split, sm in (result.get("seen") or {}).items():
            lines.append(f"patients the run saw in {split} (not in the metrics above): {shown(sm)}")
        return lines

    # ------------------------------------------------------------------ compare
    @classmethod
    def patient_units(cls, run: Any, classes: list[str]) -> Any:
        """A finished run's test predictions, one unit per patient, for the comparison's statistics
        (:class:`medtl.comparison.stats.PatientData`; ``run``: its :class:`~medtl.rundir.RunDir`, ``classes``: its
        outputs)."""
        raise NotImplementedError

    @classmethod
    def units_from_dict(cls, data: dict[str, Any]) -> Any:
        """Per-patient units as :meth:`patient_units` wrote them with ``to_dict`` (``results.json``)."""
        raise NotImplementedError

    @classmethod
    def describe_primary(cls, results: Any, summary: Any, same: str) -> str:
        """The report's sentence on how the primary metric is computed (``same``: "on the same N test patients")."""
        spec = summary.spec
        return f"Primary metric: test {spec.words}, computed per patient {same}."

    @classmethod
    def metric_unit(cls, config: Any) -> str:
        """The unit of this task's metrics whose unit is the label's (:attr:`MetricSpec.scale_unit
        <medtl.metric_specs.MetricSpec.scale_unit>`: a regression's MAE in years) in ``config`` (an
        :class:`~medtl.config.ExperimentConfig` or its dict, as a comparison keeps it). Default: none."""
        return ""

    @classmethod
    def bootstrap_units(cls) -> str:
        """What the patient bootstrap resamples, for the report's method paragraph."""
        return "patients"

    @classmethod
    def report_plots(cls, results: Any, plot_dir: Path) -> dict[str, tuple[str, Path]]:
        """Task-specific plots of the report: key -> (title, PNG). Default: none."""
        return {}

    @classmethod
    def report_blocks(cls, results: Any, summary: Any, out: Path) -> list[Any]:
        """Task-specific sections of the report (:class:`medtl.comparison.render.Block`). Default: none."""
        return []

    @classmethod
    def run_warnings(cls, results: Any, arm: Any, runs: list[Any]) -> list[str]:
        """Problems of an arm's runs a reader must know before trusting a verdict. Default: none."""
        return []

    @staticmethod
    def constant_probability_warning(arm: Any, runs: list[Any], what: str, why: str = "") -> list[str]:
        """The warning for runs whose model gave every test patient the same probabilities (``predictions.probs``).

        Args:
            arm: the arm (its ``display`` names it).
            runs: the arm's runs.
            what: what was the same, e.g. ``"probability"``.
            why: the usual cause, added to the message when given.
        """
        constant = [
            r for r in runs if len(r.predictions) > 1 and float(np.ptp(r.predictions.probs, axis=0).max()) < 1e-4
        ]
        if not constant:
            return []
        return [
            f"{arm.display}: in {len(constant)} of {len(runs)} runs the model gave every test patient the same "
            f"{what}, to within 0.0001 (it predicts nothing{f'; {why}' if why else ''}). Differences against this "
            "arm measure that failure, not the value of pretraining; train longer or with smaller batches."
        ]

    @classmethod
    def results_columns(cls, results: Any, record: Any) -> dict[str, Any]:
        """Columns the task adds to a row of ``results.csv`` (before ``run_dir``). Default: none."""
        return {}


def nan_mean(values: np.ndarray) -> float:
    """Mean of the finite values, NaN when there is none."""
    arr = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(arr)
    return float(arr[ok].mean()) if ok.any() else math.nan
