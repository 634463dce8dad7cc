"""The comparison report: report.md, a self-contained report.html, results.csv, results.json, plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and rendered to
Markdown and HTML from the same blocks (:mod:`medtl.comparison.render`), so the two never disagree; every
number in them is formatted from the :class:`~medtl.comparison.summary.Summary` also written to
``results.json``. A segmentation comparison adds the patients left out of HD95 and, per arm, example overlays
(predicted masks over test scans) copied into the comparison folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.comparison.plots import plot_label_efficiency, plot_learning_curves
from medtl.comparison.render import Block, md_escape, render_html, render_md
from medtl.comparison.results import CompareResults
from medtl.comparison.summary import (
    ArmFractionSummary,
    Summary,
    fraction_words,
    not_estimable_reason,
    repetitions,
    summarize,
)
from medtl.comparison.tables import (
    also_table,
    ci_text,
    fmt,
    fmt_p,
    print_summary,
    ranking_table,
    summary_table,
)

__all__ = ["write_report", "summary_table", "print_summary", "fmt", "fmt_p", "md_escape", "ReportFiles"]


# ------------------------------------------------------------------------------------------ blocks


def _power_note(summary: Summary, n_patients: int) -> str:
    """What differences this comparison could resolve: the typical half-width of its paired intervals.

    With fewer seeds than a verdict needs the half-width is not a usable measure: with 2 seeds the training noise
    has 1 degree of freedom, the interval's t critical value is about 12.7 instead of about 2, and the half-width
    (easily several times the metric's whole range) says nothing about what more seeds would resolve.
    """
    from scipy import stats as sps

    spec = summary.spec
    diffs = [r.vs_reference for r in summary.rows if r.vs_reference is not None]
    estimable = [d for d in diffs if d.estimable]
    halves = [(d.high - d.low) / 2 for d in estimable]
    seeds = max((d.n_seeds for d in diffs), default=0)
    if not diffs:
        return ""
    noun = summary.repetition
    reps = repetitions(seeds, noun)
    more = {"seed": "seeds", "fold": "folds", "seed x fold": "seeds, folds"}[noun]
    size = f"{n_patients} test patients and {reps} per arm"
    pct = f"{summary.confidence * 100:.0f}%"
    need = (
        f"At least {summary.min_seeds} seeds per arm are needed for a verdict (compare.seeds)"
        if noun == "seed"
        else f"At least {summary.min_seeds} folds (or seeds x folds) per arm are needed for a verdict "
        "(splits.folds, compare.seeds)"
    )
    if seeds < summary.min_seeds:
        if not halves:
            return f"Power: with {size} no interval for the paired difference could be computed. {need}."
        tcrit = float(np.median([sps.t.ppf(0.5 + summary.confidence / 2, d.df) for d in estimable]))
        return (
            f"Power: with {size}, the paired {pct} intervals cannot be estimated usefully with {reps}: the "
            f"training noise is measured from {reps} ({seeds - 1} degree{'s' if seeds != 2 else ''} of "
            f"freedom), so each interval reaches about {tcrit:.1f} standard errors either side of the difference "
            f"(about 2 with many {more.replace(', ', ' or ')}) and says little about the differences this comparison "
            "could resolve. "
            f"{need}."
        )
    if not halves:
        why = not_estimable_reason(diffs[0], noun)
        return f"Power: with {size} no interval for the paired difference could be computed: {why}."
    half = float(np.median(halves))
    unit = f" {spec.unit}" if spec.unit else ""
    low, high = spec.bounds
    if np.isfinite(high - low) and half >= high - low:
        text = (
            f"Power: with {size}, the paired {pct} intervals are wider than the whole range of {spec.words} "
            f"({low:g} to {high:g}), so this comparison cannot resolve any difference; add {more} or test patients."
        )
    else:
        text = (
            f"Power: with {size}, the paired {pct} intervals are about "
            f"±{half:.{spec.digits}f}{unit} {spec.words} wide (median half-width), so a real difference smaller "
            f"than about {half:.{max(spec.digits - 1, 1)}f}{unit} is likely to be reported as no significant "
            "difference."
        )
    if n_patients and n_patients < 30:
        text += f" Only {n_patients} test patients: a small real difference cannot be ruled in or out."
    return text


def _count(n: int, noun: str) -> str:
    """``1 label fraction``, ``4 label fractions``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _intro(results: CompareResults, summary: Summary, n_patients: int) -> str:
    n_ok = sum(r.ok for r in results.runs)
    n_failed = sum(r.status == "failed" for r in results.runs)
    folds = f" x {_count(len(results.folds), 'cross-validation fold')}" if results.folds else ""
    head = (
        f"{_count(len(results.arms), 'arm')} x {_count(len(results.seeds), 'seed')}{folds} x "
        f"{_count(len(results.fractions), 'label fraction')}: {_count(n_ok, 'run')} finished, {n_failed} failed. "
    )
    same = f"on the same {n_patients or 'n/a'} test patients for every arm"
    train = results.config.get("train") or {}
    if train.get("select") == "last":
        head += "Each run was tested with the weights of its last epoch. "
    elif train.get("monitor"):
        head += f"Each run was tested with its checkpoint best on {train['monitor']} (validation patients). "
    return head + results.task_class.describe_primary(results, summary, same)


def _method(results: CompareResults, summary: Summary) -> str:
    """How the summary table's intervals, verdicts and convergence column are made."""
    spec = summary.spec
    m = spec.words
    ref = results.arm(summary.reference).display
    pct = f"{summary.confidence * 100:.0f}%"
    tol = summary.tolerance_text
    if spec.higher_is_better:
        target = f"the lower of the arm's and {ref}'s plateaus minus {tol}"
    else:
        target = f"the higher of the arm's and {ref}'s plateaus plus {tol} (lower is better: reached from above)"
    with_delong = any(r.vs_reference is not None and r.vs_reference.delong is not None for r in summary.rows)
    delong = (
        "DeLong's test compares the two arms' seed-averaged scores over patients only (two-class AUROC): "
        "a second opinion that ignores training noise."
        if with_delong
        else f"DeLong's test is about two-class AUROC and does not apply to {m} (n/a)."
    )
    folds = (
        f" The runs repeat over {len(results.folds)} cross-validation folds (compare.repeat), each fold's model "
        "tested on the same held-out test patients, and 'seed' in the tables means such a run. Two folds share "
        f"{len(results.folds) - 2} of the {len(results.folds) - 1} parts each trains on, so their results are "
        "correlated and the variance over runs divided by their number would be too small: every interval over "
        "runs is Nadeau and Bengio's corrected resampled t (Machine Learning 52, 2003), the variance over runs "
        f"times 1/k + n_left_out/n_train (here 1/k + {results.fold_ratio:.3g}), with the shared patient variance "
        "added as below. It is calibrated when the fold-to-fold spread is mostly training noise rather than which "
        "patients trained the model (README: Cross-validation)."
        if results.folds
        else ""
    )
    return (
        f"'{pct} CI over seeds' is a t-interval of the mean over seeds. 'difference vs {ref}' is the mean "
        f"over seeds of the paired difference in test {m} on the same patients. Its uncertainty has two "
        "sources, both shown: training noise ('seed SD', the SD of the per-seed differences) and the "
        f"sampling of test patients ('patient SE', from a bootstrap of {summary.n_resamples} resamples of "
        f"{results.task_class.bootstrap_units()}). They are combined into one standard "
        "error (seed variance / number of seeds + the patient variance shared by all seeds; the part of the "
        "patient noise that differs between seeds already shows in the seed SD; where every seed gave exactly "
        "the same difference, the patient SE), and the interval is a "
        "t-interval with Welch-Satterthwaite degrees of freedom; the p-value is the t-test of the same "
        f"estimate, so the interval excludes 0 exactly when p is below {1 - summary.confidence:.2g}. A "
        f"verdict ('beat', 'did worse') needs at least {summary.min_seeds} seeds per arm: with fewer, training "
        f"noise cannot be separated from an effect. {delong} The last column: per seed, each run's validation "
        f"{m} is smoothed over {summary.convergence_window} epochs, its plateau is the mean of the last third of "
        f"the smoothed curve, and the target is {target}, a level both reach; the median is the epoch by which "
        "half the seeds had reached it (a seed that never did counts as not yet, so 'not reached' means fewer "
        "than half did)." + folds
    )


def _family_note(results: CompareResults, summary: Summary) -> str:
    """How the verdicts of many arms keep a family-wise error of 5%: Holm's step-down over each label fraction's
    tests, shown with Bonferroni's simultaneous intervals ("" with one test per fraction)."""
    m = summary.family_size()
    if m <= 1:
        return ""
    ref = results.arm(summary.reference).display
    others = [results.arm(a).display for a in summary.also_against]
    against = ref + "".join(f" and with {o}" for o in others)
    alpha = 1 - summary.confidence
    pct = f"{summary.confidence * 100:.0f}%"
    level = f"{(1 - alpha / m) * 100:.4g}%"
    return (
        f"Many arms, one family of tests per label fraction: at each fraction every arm is compared with {against} "
        f"on the same patients ({m} tests at most). A verdict ('beat', 'did worse') needs Holm's step-down "
        f"adjusted p-value below {alpha:.2g}, which keeps the chance of any false verdict among them at or under "
        f"{alpha * 100:.0f}% whatever their dependence (checked by simulation: tests/comparison/"
        f"test_calibration_multi.py). The intervals shown with them are Bonferroni's simultaneous {pct} intervals "
        f"(each at {level} with {m} tests), which together cover every true difference with at least {pct} "
        "probability; an interval excludes 0 only when Holm also rejects, and Holm can reject where it still holds "
        "0 (the sentence then says so). The label fractions are separate questions and are not adjusted for one "
        "another; the unadjusted p-values are in results.json."
    )


def _ranking_note(summary: Summary) -> str:
    """What the ranking orders by and what its columns mean."""
    fraction = summary.ranking_fraction if summary.ranking_fraction is not None else 1.0
    return (
        f"Arms ordered by mean test {summary.spec.words} {fraction_words(fraction)}. The order of the means is not "
        "itself a test: only the verdicts beside each arm (Holm-adjusted p) say which differences are real. "
        "Parameters: the arm's network as trained, head included (its runs' result.json). Seconds per epoch: "
        "wall-clock, validation included, from the runs' metrics.csv, on the machine that ran them."
    )


#: headings of the plots every comparison draws (a task adds its own: :meth:`medtl.tasks.base.Task.report_plots`)
PLOT_TITLES = {"label_efficiency": "Label efficiency", "learning_curves": "Validation learning curves"}


def _blocks(
    results: CompareResults, summary: Summary, images: dict[str, Path], out: Path, titles: dict[str, str]
) -> list[Block]:
    n_patients = max((r.vs_reference.n_patients for r in summary.rows if r.vs_reference), default=0)
    b: list[Block] = [Block("h1", "Does pretraining help? medtl comparison report")]
    b.append(Block("p", _intro(results, summary, n_patients)))
    b.append(Block("h2", "Verdict"))
    sentences = summary.sentences()
    b.append(Block("ul", items=sentences or ["No paired comparison was possible (see failed runs below)."]))
    if summary.warnings:
        b.append(Block("p", "Warnings:"))
        b.append(Block("ul", items=summary.warnings))
    power = _power_note(summary, n_patients)
    if power:
        b.append(Block("p", power))
    if summary.ranking:
        b.append(Block("h2", "Ranking"))
        header, rows = ranking_table(results, summary)
        b.append(Block("table", header=header, rows=rows))
        b.append(Block("p", _ranking_note(summary)))
    b.append(Block("h2", "Summary"))
    header, rows = summary_table(results, summary)
    b.append(Block("table", header=header, rows=rows))
    b.append(Block("p", _method(results, summary)))
    family = _family_note(results, summary)
    if family:
        b.append(Block("p", family))
    for against in summary.also_against:
        header, rows = also_table(results, summary, against)
        if rows:
            b.append(Block("h2", f"Against {results.arm(against).display}"))
            b.append(Block("table", header=header, rows=rows))
    for key, title in titles.items():
        if key in images:
            b.append(Block("h2", title))
            b.append(Block("img", text=title, path=images[key]))
    b.extend(results.task_class.report_blocks(results, summary, out))
    b.append(Block("h2", "Other test metrics (mean over seeds, 95% CI)"))
    names = {k for r in summary.rows for k in r.metrics}
    other = [k for k in results.metric_names() if k in names] + sorted(names - set(results.metric_names()))
    specs = {k: summary.metric_spec(k) for k in other}
    rows2 = []
    for f in results.fractions:
        for arm in results.arms:
            r = summary.row(arm.name, f)
            if r is None:
                continue
            rows2.append(
                [arm.display, f"{f * 100:g}%"]
                + [_mean_cell(r, k, specs[k].digits) if k in r.metrics else "" for k in other]
                + [fmt(r.seconds, 0)]
            )
    header2 = [f"{k} ({specs[k].unit})" if specs[k].unit else k for k in other]
    b.append(Block("table", header=["arm", "labels", *header2, "seconds per run"], rows=rows2))
    b.extend(_secondary_blocks(results, summary))
    b.extend(_saliency_blocks(results, out))
    b.append(Block("h2", "Arms and where their weights come from"))
    arm_rows = []
    for a in results.arms:
        p = a.provenance or {}
        arm_rows.append(
            [
                a.display,
                a.arch,
                a.weights,
                "random initialisation" if a.is_scratch else (p.get("description", "") or ""),
                a.schedule,
                a.mode or "",
                (p.get("license", "") or ("n/a" if a.is_scratch else ""))
                + (f"; RESTRICTED: {p['restriction']}" if p.get("restriction") else ""),
                p.get("citation", "") or "",
                _sha256_cell(p, a.is_scratch),
            ]
        )
    b.append(
        Block(
            "table",
            header=["arm", "architecture", "weights", "origin", "schedule", "mode", "licence", "citation", "sha256"],
            rows=arm_rows,
        )
    )
    for a in results.arms:
        if a.load_report:
            b.append(Block("p", f"Load report, {a.display}:"))
            b.append(Block("pre", a.load_report))
    failed = [r for r in results.runs if r.status == "failed"]
    if failed:
        b.append(Block("h2", "Failed runs"))
        b.append(
            Block(
                "table",
                header=["arm", "seed", "labels", "error", "run folder"],
                rows=[[r.arm, str(r.seed), f"{r.fraction * 100:g}%", r.error or "", r.run_dir or ""] for r in failed],
            )
        )
    b.append(Block("h2", "Runs"))
    b.append(
        Block(
            "p",
            "Every run is a normal medtl run folder (config, splits, metrics.csv, checkpoints, model card); "
            "results.csv lists them with all their test metrics, and results.json holds everything in this "
            "report, including per-patient test predictions (hashed patient IDs).",
        )
    )
    header, rows = _runs_table(results, summary)
    b.append(Block("table", header=header, rows=rows))
    return b


def _secondary_blocks(results: CompareResults, summary: Summary) -> list[Block]:
    """``compare.secondary_metrics``: each arm's paired difference to the reference in each of them, with the interval
    and p-value made as the primary metric's (no verdict is drawn from them)."""
    from medtl.comparison.summary import secondary_metrics

    names = secondary_metrics(results)
    rows = []
    for r in summary.rows:
        for name in names:
            d = r.secondary.get(name)
            if d is None:
                continue
            spec = summary.metric_spec(name)
            better = "lower is better" if not spec.higher_is_better else "higher is better"
            rows.append(
                [
                    results.arm(r.arm).display,
                    f"{r.fraction * 100:g}%",
                    f"{spec.label} ({better})",
                    fmt(d.value_a, spec.digits),
                    fmt(d.value_b, spec.digits),
                    spec.amount(d.difference, sign=True),
                    ci_text(d.low, d.high, spec.digits),
                    fmt_p(d.p_value),
                    str(d.n_seeds),
                ]
            )
    if not rows:
        return []
    ref = results.arm(summary.reference).display
    pct = f"{summary.confidence * 100:.0f}%"
    return [
        Block("h2", "Secondary metrics (paired difference vs " + ref + ")"),
        Block(
            "table",
            header=[
                "arm",
                "labels",
                "metric",
                "value",
                f"{ref} value",
                f"difference vs {ref}",
                f"{pct} CI",
                "p",
                "seeds",
            ],
            rows=rows,
        ),
        Block(
            "p",
            f"compare.secondary_metrics, each computed per patient and paired with {ref} on the same patients and "
            f"seeds as the primary metric: the mean over seeds of the per-seed differences, its {pct} interval and "
            "p-value from the same seed variance and patient bootstrap (see above). They describe the arms; the "
            "verdict is the primary metric's, and these intervals are not adjusted for being several.",
        ),
    ]


def _saliency_blocks(results: CompareResults, out: Path) -> list[Block]:
    """The section "Where the models look": each arm's saliency maps of the same test patients side by side (from its
    first finished run at the largest label fraction, copied into ``saliency/<arm>/``); nothing when no run drew
    maps."""
    from medtl.comparison.overlays import SALIENCY_DIR, collect_saliency
    from medtl.comparison.plots import plot_png_grid

    found = collect_saliency(results, out)
    if not any(found.values()):
        return []
    (out / "plots").mkdir(exist_ok=True)
    grid = plot_png_grid(
        {results.arm(a).display: [out / p for p in paths] for a, paths in found.items()},
        out / "plots" / "saliency.png",
    )
    if grid is None:
        return []
    f = max(results.fractions)
    return [
        Block("h2", "Where the models look"),
        Block(
            "p",
            f"Grad-CAM of each arm's predicted class on the same test patients (rows: arms; columns: scans), from its "
            f"first finished run with {f * 100:g}% of the labels, at the architecture's last stage; red is where the "
            "prediction leans most, each map scaled to its own range. A map is a hint of what drove one prediction, "
            "not proof of what the model learnt; arms that look at the same place can still differ in how well "
            f"they predict. The maps themselves are in {SALIENCY_DIR}/<arm>/ (`medtl predict RUN SCANS --saliency "
            "gradcam` draws them for other scans).",
        ),
        Block("img", text="Where the models look", path=grid),
    ]


def _runs_table(results: CompareResults, summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Every run of the comparison: arm, seed, label fraction, status, test primary metric and run folder."""
    spec = summary.spec
    header = ["arm", "seed", "labels", "status", f"test {spec.label}", "run folder"]
    rows = []
    for r in sorted(results.runs, key=lambda r: (r.fraction, r.arm, r.seed)):
        try:
            display = results.arm(r.arm).display
        except KeyError:  # a run of an arm no longer in the config
            display = r.arm
        value = r.test_metrics.get(summary.primary_metric) if r.ok else None
        rows.append(
            [display, str(r.seed), f"{r.fraction * 100:g}%", r.status, fmt(value, spec.digits), r.run_dir or ""]
        )
    return header, rows


def _mean_cell(r: ArmFractionSummary, k: str, digits: int) -> str:
    ci = r.metrics[k]
    return f"{fmt(ci.mean, digits)} ({ci_text(ci.low, ci.high, digits)})"


@dataclass
class ReportFiles:
    """Paths of everything :func:`write_report` wrote."""

    report_md: Path
    report_html: Path
    results_json: Path
    results_csv: Path
    plots: dict[str, Path]


def write_report(
    results: CompareResults,
    out_dir: str | Path,
    *,
    summary: Summary | None = None,
    n_resamples: int = 2000,
    plots: bool = True,
) -> ReportFiles:
    """Compute the summary (unless given) and write report.md, report.html, results.csv, results.json and plots.

    Args:
        results: the runs of a comparison.
        out_dir: the comparison folder.
        summary: a precomputed summary (else :func:`summarize` is run).
        n_resamples: bootstrap resamples for the paired differences.
        plots: draw the figures (the Markdown links them, the HTML embeds them).

    A segmentation comparison also copies each arm's example overlays into ``<out_dir>/overlays/<arm>/``
    (:func:`~medtl.comparison.overlays.collect_overlays`), which both reports show.
    """
    from medtl.utils import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(results, n_resamples=n_resamples)
    results.summary = summary
    images: dict[str, Path] = {}
    titles = dict(PLOT_TITLES)
    if plots and any(r.ok for r in results.runs):
        pdir = out / "plots"
        pdir.mkdir(exist_ok=True)
        images["label_efficiency"] = plot_label_efficiency(results, summary, pdir / "label_efficiency.png")
        images["learning_curves"] = plot_learning_curves(results, pdir / "learning_curves.png")
        for key, (title, path) in results.task_class.report_plots(results, pdir).items():
            images[key] = path
            titles[key] = title
    blocks = _blocks(results, summary, images, out, titles)
    md, htm = out / "report.md", out / "report.html"
    atomic_write_bytes(md, render_md(blocks, out).encode())
    atomic_write_bytes(htm, render_html(blocks).encode())
    rj = results.write_json(out / "results.json")
    rc = results.write_csv(out / "results.csv")
    return ReportFiles(md, htm, rj, rc, images)


def _sha256_cell(provenance: dict, scratch: bool) -> str:
    """The loaded file's SHA-256, marked when no pinned hash confirmed it; "n/a" for an arm that loads no file."""
    if scratch:
        return "n/a"
    sha = provenance.get("sha256", "") or ""
    return sha + (" (unverified)" if provenance.get("verified") is False else "")
