"""External validation: a run's report on a manifest from elsewhere, and a comparison's verdict repeated there.

``medtl evaluate RUN manifest.csv --report DIR`` scores one run (:func:`medtl.train.scoring.evaluate`: each metric
with a 95% patient-bootstrap interval, per site when the manifest has a ``site`` column) and
:func:`write_evaluation_report` writes ``DIR/report.html`` (self-contained: plots embedded), ``report.md``,
``evaluation.json`` and the plots.

``medtl evaluate COMPARE_DIR manifest.csv`` (:func:`evaluate_comparison`) has every finished run of a comparison
predict the manifest, turns each run's predictions into per-patient units as the comparison did with its own test
patients, and runs the comparison's statistics on them (:func:`medtl.comparison.summary.summarize`: per arm and
label fraction the mean over seeds or folds with its interval, the paired difference to the reference arm with the
seed-and-patient interval, the verdict). It writes ``external_report.html``, ``external_report.md``,
``results_external.json`` and ``results_external.csv`` into ``<compare dir>/external-<name>/`` (or ``--out``), never
over the comparison's own files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medtl.comparison.render import Block, render_html, render_md
from medtl.comparison.results import CompareResults, RunRecord
from medtl.comparison.summary import Summary, summarize
from medtl.comparison.tables import fmt, summary_table
from medtl.errors import ConfigError, ManifestError, MedtlError, TrainingError
from medtl.metric_specs import METRIC_SPECS, metric_spec
from medtl.utils import atomic_write_bytes

__all__ = [
    "REPORT_FILES",
    "EXTERNAL_FILES",
    "ExternalComparison",
    "check_report_dir",
    "evaluate_run",
    "write_evaluation_report",
    "is_comparison_dir",
    "external_dir",
    "evaluate_comparison",
]

#: what ``--report DIR`` writes for one run
REPORT_FILES = ("report.html", "report.md", "evaluation.json", "plots")
#: what :func:`evaluate_comparison` writes (its folder holds nothing else of the comparison's)
EXTERNAL_FILES = (
    "external_report.html",
    "external_report.md",
    "results_external.json",
    "results_external.csv",
    "plots",
)
#: the prefix of the one kind of folder an external evaluation may write inside a comparison folder
EXTERNAL_PREFIX = "external-"


# --------------------------------------------------------------------------------------------- one run


def evaluate_run(
    run_dir: str | Path,
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    allow_seen: bool = False,
    grid: str = "native",
    report: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`medtl.train.scoring.evaluate` with its report: ``medtl evaluate RUN manifest.csv [--report DIR]``.

    ``report``, checked before any scan is scored (:func:`check_report_dir`), receives what
    :func:`write_evaluation_report` writes; ``result["report"]`` is its ``report.html``.
    """
    from medtl.train.predict import load_run
    from medtl.train.scoring import evaluate_loaded

    loaded = load_run(run_dir)
    if report is not None:
        check_report_dir(Path(report), manifest, loaded.run.path)
    result = evaluate_loaded(loaded, manifest, out=out, allow_seen=allow_seen, grid=grid)
    if report is not None:
        result["report"] = str(write_evaluation_report(result, loaded.run.path, manifest, Path(report)))
    return result


def check_report_dir(report: Path, manifest: str | Path, run_dir: Path) -> None:
    """Refuse, before any scan is scored, a ``--report`` folder whose files would be the manifest or lie inside the
    run folder being evaluated.

    Raises:
        MedtlError: naming the file and what it would overwrite.
    """
    from medtl.io.output import check_not_an_input

    if report.exists() and not report.is_dir():
        raise MedtlError(
            f"--report {report} is a file; the report is a folder (report.html, report.md, evaluation.json, plots/)",
            path=str(report),
            fix="give a folder name as --report",
        )
    named = [(report / name, f"--report {report} ({name})") for name in REPORT_FILES]
    check_not_an_input(named, [Path(manifest)], run_dir=run_dir, fix="give another folder as --report")


def _amount(name: str, value: Any, unit: str | None = None) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return metric_spec(name, unit=unit).amount(float(value))


def _ci(name: str, bounds: Any, unit: str | None = None) -> str:
    if not bounds or any(not isinstance(b, int | float) or not math.isfinite(b) for b in bounds):
        return "n/a"
    return f"{_amount(name, bounds[0], unit)} to {_amount(name, bounds[1], unit)}"


def _metrics_table(result: dict[str, Any], unit: str | None) -> Block:
    """Metric | per patient | 95% CI | per scan, one row per metric of the per-patient units."""
    rows = []
    for m, value in (result.get("patient_metrics") or {}).items():
        per_scan = result.get(m)
        rows.append(
            [
                metric_spec(m, unit=unit).label,
                _amount(m, value, unit),
                _ci(m, result["ci"].get(m), unit),
                _amount(m, per_scan, unit) if isinstance(per_scan, int | float) else "",
            ]
        )
    return Block("table", header=["metric", "per patient", "95% CI (patients)", "per scan"], rows=rows)


def _sites_table(result: dict[str, Any], unit: str | None) -> Block:
    sites = result.get("sites") or {}
    names = [m for m in (result.get("patient_metrics") or {}) if m in METRIC_SPECS]
    header = ["site", "patients", "scans", *[f"{metric_spec(m, unit=unit).label} (95% CI)" for m in names]]
    rows = []
    for site, values in sites.items():
        cells = [
            f"{_amount(m, values['patient_metrics'].get(m), unit)} ({_ci(m, values['ci'].get(m), unit)})" for m in names
        ]
        rows.append([site or "(no site)", str(values.get("n_patients", "")), str(values.get("n", "")), *cells])
    return Block("table", header=header, rows=rows)


def _run_blocks(run_dir: Path, task: str, unit: str | None) -> list[Block]:
    """The run evaluated: its architecture, weights and training, and its own validation and test metrics."""
    from medtl.metric_specs import metrics_for_task
    from medtl.rundir import RunDir

    run = RunDir(run_dir)
    try:
        res = run.read_result()
    except MedtlError:
        res = {}
    weights = res.get("weights") or {}
    facts = [
        ["run folder", str(run_dir)],
        ["task", task],
        ["architecture", str(res.get("arch", ""))],
        ["weights", str(weights.get("weights") or weights.get("source") or "")],
        ["weights file sha256", str(weights.get("sha256") or "n/a")],
        ["schedule", str(res.get("schedule", ""))],
        ["epochs run (tested checkpoint)", f"{res.get('epochs_run', '')} (epoch {res.get('best_epoch', '')})"],
        ["patients (train / val / test)", " / ".join(str(v) for v in (res.get("n_patients") or {}).values())],
    ]
    b = [Block("h2", "The run evaluated"), Block("table", header=["", ""], rows=facts)]
    own = res.get("metrics") or {}
    names = [m for m in metrics_for_task(task, comparable=False) if m != "loss"]
    rows = [[split, *[_amount(m, (own.get(split) or {}).get(m), unit) for m in names]] for split in own]
    if rows:
        b.append(Block("p", "The run's own metrics on its validation and test patients (per scan), for reference:"))
        b.append(Block("table", header=["split", *[metric_spec(m, unit=unit).label for m in names]], rows=rows))
    return b


def write_evaluation_report(result: dict[str, Any], run_dir: str | Path, manifest: str | Path, out_dir: Path) -> Path:
    """Write the report of one evaluation (``medtl evaluate RUN manifest.csv --report DIR``).

    ``DIR/report.html`` is one self-contained page (the plots embedded as base64 PNG), ``report.md`` the same blocks
    in Markdown, ``evaluation.json`` the result, ``plots/`` the task's plots
    (:meth:`medtl.tasks.base.Task.evaluation_plots`: for classification the ROC curve, a reliability diagram and
    the confusion matrix). The report shows the metrics with their patient-bootstrap intervals, each site's
    (``site`` column), the run evaluated with its own validation and test metrics, and the rows of patients the run
    saw, scored apart.

    Args:
        result: :func:`medtl.train.scoring.evaluate`'s result.
        run_dir: the run evaluated.
        manifest: the manifest evaluated.
        out_dir: the report folder (created).

    Returns:
        The path of report.html.
    """
    from medtl.rundir import json_clean
    from medtl.tasks import task_class

    out = Path(out_dir)
    pdir = out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    task = str(result.get("task") or "classification")
    task_cls = task_class(task)
    unit = result.get("unit") or None
    units = task_cls.units_from_dict(result["units"]) if result.get("units") else None
    images = task_cls.evaluation_plots(result, units, pdir) if units is not None else {}
    n_scans = sum(1 for r in result.get("scans") or [] if r.get("split") not in ("train", "val")) or result.get("n")
    b = [Block("h1", f"External validation: {Path(run_dir).name}")]
    b.append(
        Block(
            "p",
            f"Run {run_dir} evaluated on {manifest}: {n_scans} scan(s) of {result.get('n_patients', 0)} patient(s) "
            "the run never trained or validated on.",
        )
    )
    seen = result.get("seen") or {}
    if seen:
        counts = ", ".join(f"{split}: {m.get('n', 0)} scan(s)" for split, m in seen.items())
        b.append(
            Block(
                "p",
                f"The manifest also holds rows of patients the run trained or validated on ({counts}); they are "
                "scored apart (last section) and are in none of the numbers above it.",
            )
        )
    b.append(Block("h2", "Metrics"))
    if result.get("ci"):
        b.append(_metrics_table(result, unit))
        b.append(
            Block(
                "p",
                "Per patient: each patient's scans are aggregated into one unit as a comparison aggregates its test "
                f"predictions, and the metric is computed over the patients. 95% CI: the {result.get('ci_method')}: "
                "it covers the sampling of patients, not the training of the model (for that, evaluate every run of "
                "a comparison: medtl evaluate COMPARE_DIR manifest.csv). Per scan: the metric over the scans, as "
                "medtl evaluate prints it.",
            )
        )
    else:
        b.append(Block("p", "No scan of a patient the run never saw: nothing to score."))
    if result.get("sites"):
        b.append(Block("h2", "By site"))
        b.append(_sites_table(result, unit))
    for title, path in images.values():
        b.append(Block("h2", title))
        b.append(Block("img", text=title, path=path))
    b.extend(_run_blocks(Path(run_dir), task, unit))
    if seen:
        from medtl.metric_specs import metrics_for_task

        names = [m for m in metrics_for_task(task, comparable=False) if m != "loss"]
        b.append(Block("h2", "Patients the run saw (not in the metrics above)"))
        rows = [[split, str(m.get("n", 0)), *[_amount(k, m.get(k), unit) for k in names]] for split, m in seen.items()]
        b.append(
            Block("table", header=["split", "scans", *[metric_spec(k, unit=unit).label for k in names]], rows=rows)
        )
    md, htm = out / "report.md", out / "report.html"
    atomic_write_bytes(md, render_md(b, out).encode())
    atomic_write_bytes(htm, render_html(b).encode())
    saved = {k: v for k, v in result.items() if k != "report"}
    atomic_write_bytes(out / "evaluation.json", (json.dumps(json_clean(saved), indent=1) + "\n").encode())
    return htm


# ------------------------------------------------------------------------------------- a comparison


def is_comparison_dir(path: str | Path) -> bool:
    """Whether ``path`` is a comparison folder (``results.json`` and ``runs/``), not a run folder."""
    p = Path(path)
    return (p / "results.json").is_file() and (p / "runs").is_dir() and not (p / "config.yaml").is_file()


def _manifest_name(manifest: Path) -> str:
    """``external-<name>``'s name: the manifest's stem (its folder's name for a file called manifest.csv)."""
    stem = manifest.stem if manifest.stem.lower() != "manifest" else manifest.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9_.+=@,-]+", "_", stem) or "manifest"


def external_dir(compare_dir: str | Path, manifest: str | Path, out: str | Path | None = None) -> Path:
    """Where :func:`evaluate_comparison` writes: ``out``, else ``<compare dir>/external-<manifest name>/``.

    Inside the comparison folder only a direct subfolder named ``external-<name>`` may be written, so none of the
    comparison's own files (results.json, report.html, runs, splits) is ever overwritten.

    Raises:
        ConfigError: ``out`` lies inside the comparison folder elsewhere than in an ``external-<name>/`` subfolder.
    """
    cdir = Path(compare_dir).expanduser().resolve()
    name = EXTERNAL_PREFIX + _manifest_name(Path(manifest))
    target = (cdir / name) if out is None else Path(out).expanduser().resolve()
    if target == cdir or target.is_relative_to(cdir):
        if target.parent != cdir or not target.name.startswith(EXTERNAL_PREFIX) or target.name == EXTERNAL_PREFIX:
            raise ConfigError(
                f"--out {out}: inside the comparison folder {cdir} an external evaluation writes only into a "
                f"subfolder {EXTERNAL_PREFIX}<name>/ (the comparison's own files are never overwritten)",
                path=str(out),
                fix=f"leave --out out ({cdir / name}), or give {cdir / name} or a folder outside the comparison",
            )
    return target


@dataclass
class ExternalComparison:
    """What :func:`evaluate_comparison` returns: the runs' external predictions, their summary, the files."""

    results: CompareResults
    summary: Summary
    out_dir: Path
    report_html: Path
    report_md: Path
    results_json: Path
    results_csv: Path
    #: the comparison's own verdict sentences (on its test patients)
    original: list[str]

    def sentences(self) -> list[str]:
        return [r.sentence for r in self.summary.rows if r.sentence]


def evaluate_comparison(
    compare_dir: str | Path,
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    allow_seen: bool = False,
    grid: str = "native",
    n_resamples: int | None = None,
    on_event: Callable[[str], None] | None = None,
) -> ExternalComparison:
    """Every finished run of a comparison on an external manifest, and the comparison's verdict repeated there.

    Each run predicts the manifest (:func:`medtl.train.scoring.evaluate`, which refuses rows of the patients the run
    trained or validated on unless ``allow_seen``, and then leaves them out); its predictions become per-patient
    units as the comparison's test predictions did (:meth:`~medtl.tasks.base.Task.evaluation_units`); and the
    comparison's statistics run on them unchanged (:func:`~medtl.comparison.summary.summarize`): per arm and label
    fraction, the mean over seeds (or folds) with its interval, the paired difference to the reference arm over seeds
    and the external patients (:func:`~medtl.comparison.stats.paired_difference`, with the comparison's own
    ``compare.repeat``), the verdict sentence.

    Args:
        compare_dir: a comparison folder (``results.json``, ``runs/``).
        manifest: a labelled manifest of other patients.
        out: the output folder (default ``<compare dir>/external-<manifest name>/``; see :func:`external_dir`).
        allow_seen: score rows of the runs' own training/validation patients apart instead of refusing.
        grid: segmentation: ``native`` or ``preprocessed`` (:func:`medtl.train.scoring.evaluate_segmentation`).
        n_resamples: patient bootstrap resamples (default: the comparison's ``compare.n_resamples``).
        on_event: called with a line as each run is evaluated.

    Returns:
        An :class:`ExternalComparison`; its files are in ``out_dir``.

    Raises:
        ConfigError: ``compare_dir`` is not a comparison folder, or ``out`` is not allowed.
        TrainingError: the manifest holds rows of the runs' training/validation patients (without ``allow_seen``)
            or no rows.
    """
    from medtl.io.output import check_not_an_input
    from medtl.rundir import json_clean
    from medtl.tasks import task_class
    from medtl.train.scoring import evaluate

    say = on_event or (lambda msg: None)
    cdir = Path(compare_dir).expanduser().resolve()
    if not is_comparison_dir(cdir):
        raise ConfigError(
            f"{compare_dir} is not a comparison folder (results.json and runs/)",
            path=str(compare_dir),
            fix="give a folder medtl compare wrote, or a run folder",
        )
    original = CompareResults.from_dict(json.loads((cdir / "results.json").read_text()))
    try:
        old_rows = json.loads((cdir / "results.json").read_text()).get("summary", {}).get("rows") or []
    except (OSError, ValueError, AttributeError):
        old_rows = []
    target = external_dir(cdir, manifest, out)
    check_not_an_input(
        [(target / name, f"the external report file {target / name}") for name in EXTERNAL_FILES],
        [Path(manifest)],
        fix="give another folder as --out",
    )
    task_cls = task_class(original.task)
    resamples = n_resamples or int((original.config.get("compare") or {}).get("n_resamples") or 2000)
    runs: list[RunRecord] = []
    ok = [r for r in original.runs if r.ok and r.run_dir]
    n_patients = 0
    for i, rec in enumerate(ok):
        tag = f"[{i + 1}/{len(ok)}] {rec.arm} seed {rec.seed}{'' if rec.fold is None else f' fold {rec.fold}'}"
        try:
            res = evaluate(rec.run_dir, manifest, allow_seen=allow_seen, grid=grid)
        except (TrainingError, ManifestError, ConfigError):
            raise  # the manifest's (or the settings') problem: every run would repeat it
        except MedtlError as exc:  # this run's own problem (a damaged folder): recorded, the others go on
            runs.append(replace(rec, status="failed", error=f"{type(exc).__name__}: {exc}", curve=[], predictions=None))
            say(f"{tag}: FAILED: {exc}")
            continue
        units = task_cls.units_from_dict(res["units"]) if res.get("units") else None
        n_patients = max(n_patients, int(res.get("n_patients") or 0))
        runs.append(
            replace(
                rec,
                test_metrics={m: units.metric(m) for m in units.metric_names} if units is not None else {},
                predictions=units,
                curve=[],  # the validation curves are the comparison's: no convergence on external patients
            )
        )
        spec = metric_spec(original.primary_metric)
        value = runs[-1].test_metrics.get(original.primary_metric, math.nan)
        say(f"{tag}: external {original.primary_metric} per patient {spec.amount(value)}")
    runs += [replace(r, curve=[], predictions=None) for r in original.runs if not (r.ok and r.run_dir)]
    ext = replace(original, runs=runs, compare_dir=str(target), summary=None, overlays={})
    summary = summarize(ext, n_resamples=resamples)
    ext.summary = summary
    target.mkdir(parents=True, exist_ok=True)
    pdir = target / "plots"
    pdir.mkdir(exist_ok=True)
    images = _comparison_plots(ext, summary, pdir)
    blocks = _comparison_blocks(ext, summary, cdir, Path(manifest), n_patients, old_rows, images)
    md, htm = target / "external_report.md", target / "external_report.html"
    atomic_write_bytes(md, render_md(blocks, target).encode())
    atomic_write_bytes(htm, render_html(blocks).encode())
    from medtl.comparison.launch import file_sha256

    saved = ext.to_dict() | {
        "external": {
            "manifest": str(Path(manifest).resolve()),
            "manifest_sha256": file_sha256(manifest),
            "comparison": str(cdir),
            "n_patients": n_patients,
        }
    }
    rj = target / "results_external.json"
    atomic_write_bytes(rj, json.dumps(json_clean(saved), indent=1, allow_nan=False).encode())
    rc = ext.write_csv(target / "results_external.csv")
    original_sentences = [str(r.get("sentence")) for r in old_rows if isinstance(r, dict) and r.get("sentence")]
    return ExternalComparison(ext, summary, target, htm, md, rj, rc, original_sentences)


def _comparison_plots(results: CompareResults, summary: Summary, pdir: Path) -> dict[str, tuple[str, Path]]:
    from medtl.comparison.plots import plot_label_efficiency

    if not any(r.ok for r in results.runs):
        return {}
    images = {
        "label_efficiency": (
            "Label efficiency (external patients)",
            plot_label_efficiency(results, summary, pdir / "label_efficiency.png"),
        )
    }
    for key, (title, path) in results.task_class.report_plots(results, pdir).items():
        images[key] = (f"{title} (external patients)", path)
    return images


def _comparison_blocks(
    results: CompareResults,
    summary: Summary,
    compare_dir: Path,
    manifest: Path,
    n_patients: int,
    old_rows: list[Any],
    images: dict[str, tuple[str, Path]],
) -> list[Block]:
    n_ok = sum(r.ok for r in results.runs)
    reps = f"{len(results.seeds)} seed(s)" + (f" x {len(results.folds)} folds" if results.folds else "")
    b = [Block("h1", "External validation of a comparison")]
    b.append(
        Block(
            "p",
            f"The {n_ok} finished run(s) of the comparison in {compare_dir} ({len(results.arms)} arm(s) x {reps} x "
            f"{len(results.fractions)} label fraction(s)) predicted {manifest}: {n_patients} patient(s) none of the "
            "runs trained or validated on. "
            + results.task_class.describe_primary(results, summary, "on the same external patients for every run"),
        )
    )
    b.append(Block("h2", "Verdict on the external patients"))
    sentences = [r.sentence for r in summary.rows if r.sentence]
    b.append(Block("ul", items=sentences or ["No paired comparison was possible (see the runs below)."]))
    if summary.warnings:
        b.append(Block("p", "Warnings:"))
        b.append(Block("ul", items=summary.warnings))
    old = [str(r.get("sentence")) for r in old_rows if isinstance(r, dict) and r.get("sentence")]
    if old:
        b.append(Block("h2", "The comparison's own verdict (its test patients), for reference"))
        b.append(Block("ul", items=old))
    b.append(Block("h2", "Summary (external patients)"))
    header, rows = summary_table(results, summary)
    b.append(Block("table", header=header[:-1], rows=[r[:-1] for r in rows]))  # no learning curves here
    pct = f"{summary.confidence * 100:.0f}%"
    folds = (
        f" The runs repeat over cross-validation folds (compare.repeat), so the intervals over them are Nadeau and "
        f"Bengio's corrected resampled t (fold variance times 1/k + {results.fold_ratio:.3g}): 'seed' in the table "
        "means a run."
        if results.folds
        else ""
    )
    b.append(
        Block(
            "p",
            "Every number is computed as in the comparison's report, with the external patients in place of its test "
            f"patients: '{pct} CI over seeds' is a t-interval of the mean over the runs; the difference to "
            f"{results.arm(summary.reference).display} is the mean of the paired per-run differences, its interval "
            f"combines the spread over runs with the patient variance they share (a bootstrap of "
            f"{summary.n_resamples} resamples of {results.task_class.bootstrap_units()}), and a verdict needs at least "
            f"{summary.min_seeds} runs per arm." + folds,
        )
    )
    for title, path in images.values():
        b.append(Block("h2", title))
        b.append(Block("img", text=title, path=path))
    spec = summary.spec
    b.append(Block("h2", "Runs"))
    header = ["arm", "seed", *(["fold"] if results.folds else []), "labels", "status"]
    header += [f"external {spec.label}", "run folder"]
    rows2 = []
    for r in sorted(results.runs, key=lambda r: (r.fraction, r.arm, r.repetition)):
        value = r.test_metrics.get(summary.primary_metric) if r.ok else None
        rows2.append(
            [
                r.arm,
                str(r.seed),
                *([str(r.fold)] if results.folds else []),
                f"{r.fraction * 100:g}%",
                r.status if r.ok else f"{r.status}: {r.error or ''}",
                fmt(value, spec.digits),
                r.run_dir or "",
            ]
        )
    b.append(Block("table", header=header, rows=rows2))
    return b
