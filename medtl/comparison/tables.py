"""The summary table of a comparison, exactly as every output prints it: report.md, report.html and the terminal.

One row per arm and label fraction: the primary metric over seeds, the paired difference against the reference
arm with its interval, p-value, seed SD, patient SE and DeLong's p, and convergence. Numbers carry the metric's
digits and unit (HD95 in mm; :mod:`medtl.metric_specs`). With several tests per label fraction the interval is
Bonferroni's simultaneous one and the p-value Holm's adjusted one (:class:`~medtl.comparison.summary.PairTest`);
:func:`also_table` gives the same against each ``also_against`` arm (ImageNet), :func:`ranking_table` the arms in
order with what each costs and where its weights come from.
"""

from __future__ import annotations

import math

from medtl.comparison.results import CompareResults
from medtl.comparison.stats import PairedDifference
from medtl.comparison.summary import ArmFractionSummary, PairTest, Summary
from medtl.metric_specs import metric_spec

__all__ = ["summary_table", "also_table", "ranking_table", "print_summary", "fmt", "fmt_p", "ci_text", "fmt_count"]


def fmt(v: float | None, digits: int = 3) -> str:
    """A number as the report prints it ('n/a' for missing)."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value as the report prints it ('<0.001' for small ones)."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_count(n: int | None) -> str:
    """A parameter count as the report prints it: ``5.7 M``, ``850 k``, ``n/a``."""
    if n is None:
        return "n/a"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def ci_text(low: float, high: float, digits: int = 3) -> str:
    """'low to high', or 'n/a' when the interval is not known."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{fmt(low, digits)} to {fmt(high, digits)}"


def _labels_cell(r: ArmFractionSummary) -> str:
    """'10%', or '10% (16.7% used)' when the runs used another share of the training patients."""
    text = f"{r.fraction * 100:g}%"
    used = r.fraction_used
    if used is not None and math.isfinite(used) and abs(used - r.fraction) >= 0.005:
        text += f" ({used * 100:.1f}% used)"
    return text


def _diff_cells(d: PairedDifference | None, test: PairTest | None = None) -> list[str]:
    """difference, its CI, p, seed SD, patient SE and DeLong's p, as the summary table prints them; in a family of
    several tests (``test``), the simultaneous interval and the Holm-adjusted p.

    DeLong's test is about two-class AUROC: on any other metric it does not apply and the cell says "n/a".
    """
    if d is None:
        return [""] * 6
    digits = metric_spec(d.metric).digits
    if d.estimable and test is not None and test.family_size > 1:
        ci, p = ci_text(test.low, test.high, digits), fmt_p(test.p_holm)
    elif d.estimable:
        ci, p = ci_text(d.low, d.high, digits), fmt_p(d.p_value)
    elif d.n_seeds < 2:
        ci = p = f"n/a ({d.n_seeds} seed)"
    else:
        ci = p = "not estimable"
    if d.delong is None:
        dl = "n/a"
    else:
        dl = fmt_p(d.delong.p_value) if d.delong.estimable else ("not estimable" if d.delong.se == 0 else "n/a")
    return [
        f"{d.difference:+.{digits}f}" if math.isfinite(d.difference) else "n/a",
        ci,
        p,
        fmt(d.seed_sd, digits),
        fmt(d.patient_se, digits),
        dl,
    ]


def _convergence_cell(c: dict) -> str:
    """'epoch 3 (12 s) vs 5 (20 s); 3/3 vs 3/3 seeds': median epoch to the target, arm vs reference."""
    if not c.get("n"):
        return "n/a"

    def one(epoch: float | None, seconds: float | None) -> str:
        if epoch is None:
            return "not reached"
        return f"{epoch:g}" + (f" ({seconds:.0f} s)" if seconds is not None else "")

    arm = one(c["median_epoch"], c["median_seconds"])
    ref = one(c["reference_median_epoch"], c["reference_median_seconds"])
    prefix = "epoch " if c["median_epoch"] is not None else ""
    return f"{prefix}{arm} vs {ref}; {c['n_reached']}/{c['n']} vs {c['n_reference_reached']}/{c['n']} seeds"


def summary_table(results: CompareResults, summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (strings, exactly as printed in every output)."""
    spec = summary.spec
    ref = results.arm(summary.reference).display
    pct = f"{summary.confidence * 100:.0f}%"
    unit = f" ({spec.unit})" if spec.unit else ""
    plateau = f"{'-' if spec.higher_is_better else '+'} {summary.tolerance_text}"
    family = summary.family_size() > 1
    header = [
        "arm",
        "labels",
        "runs",
        f"test {spec.label} (mean)",
        f"{pct} CI over seeds",
        f"difference vs {ref}{unit}",
        f"{pct} simultaneous CI (seeds and patients; Bonferroni)" if family else f"{pct} CI (seeds and patients)",
        "p (Holm-adjusted)" if family else "p",
        "seed SD of difference",
        "patient SE of difference",
        "p DeLong (seed-averaged scores)",
        f"epochs to the common plateau {plateau} (median, arm vs {ref})",
    ]
    digits = spec.digits
    rows = []
    for f in results.fractions:
        for arm in results.arms:
            r = summary.row(arm.name, f)
            if r is None:
                continue
            ci = r.metrics.get(summary.primary_metric)
            runs = f"{r.n_ok}" + (f" ({r.n_failed} failed)" if r.n_failed else "")
            conv = "(reference)" if arm.name == summary.reference else _convergence_cell(r.convergence)
            rows.append(
                [
                    arm.display,
                    _labels_cell(r),
                    runs,
                    fmt(ci.mean, digits) if ci else "n/a",
                    ci_text(ci.low, ci.high, digits) if ci else "n/a",
                    *_diff_cells(r.vs_reference, summary.test(arm.name, summary.reference, f)),
                    conv,
                ]
            )
    return header, rows


def also_table(results: CompareResults, summary: Summary, against: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table of every other arm against ``against`` (an ``also_against`` arm: ImageNet),
    per label fraction: the paired difference with the interval and p-value of its family, seed SD, patient SE and
    the verdict."""
    spec = summary.spec
    name = results.arm(against).display
    pct = f"{summary.confidence * 100:.0f}%"
    unit = f" ({spec.unit})" if spec.unit else ""
    family = summary.family_size() > 1
    header = [
        "arm",
        "labels",
        f"difference vs {name}{unit}",
        f"{pct} simultaneous CI (seeds and patients; Bonferroni)" if family else f"{pct} CI (seeds and patients)",
        "p (Holm-adjusted)" if family else "p",
        "seed SD of difference",
        "patient SE of difference",
        "verdict",
    ]
    rows = []
    for f in results.fractions:
        for arm in results.arms:
            r = summary.row(arm.name, f)
            d = r.vs_also.get(against) if r is not None else None
            if d is None:
                continue
            test = summary.test(arm.name, against, f)
            cells = _diff_cells(d, test)
            rows.append([arm.display, _labels_cell(r), *cells[:5], test.verdict if test else "n/a"])
    return header, rows


def ranking_table(results: CompareResults, summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ranking: the arms by mean primary metric at :attr:`Summary.ranking_fraction`, each with
    its interval, its verdicts against the reference and the ``also_against`` arms (Holm-adjusted p), its network's
    parameters, seconds per epoch, pretraining data and licence (a restricted one flagged)."""
    spec = summary.spec
    pct = f"{summary.confidence * 100:.0f}%"
    against = [summary.reference, *summary.also_against]
    header = [
        "rank",
        "arm",
        f"test {spec.label} (mean, {pct} CI over seeds)",
        *(f"vs {results.arm(a).display}" for a in against),
        "parameters",
        "seconds per epoch",
        "pretraining data",
        "licence",
    ]
    rows = []
    for entry in summary.ranking:
        arm = results.arm(entry.arm)
        p = arm.provenance or {}
        ci = entry.mean
        value = "n/a" if ci is None else f"{fmt(ci.mean, spec.digits)} ({ci_text(ci.low, ci.high, spec.digits)})"
        licence = "n/a" if arm.is_scratch else (p.get("license") or "")
        if p.get("restriction"):
            licence += f"; RESTRICTED: {p['restriction']}"
        rows.append(
            [
                "-" if entry.rank is None else str(entry.rank),
                arm.display,
                value,
                *(entry.verdicts.get(a, "n/a") for a in against),
                fmt_count(entry.n_parameters),
                fmt(entry.seconds_per_epoch, 1),
                "none (random initialisation)" if arm.is_scratch else (p.get("description") or ""),
                licence,
            ]
        )
    return header, rows


def print_summary(results: CompareResults, summary: Summary, console=None) -> None:
    """The summary table and the verdicts in the terminal (rich)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    header, rows = summary_table(results, summary)
    # the report's columns, with each value and its interval in one cell so the table fits a terminal;
    # every cell is escaped, so a label such as "[red]" prints as written instead of as rich markup
    ref = escape(results.arm(summary.reference).display)
    table = Table(title=f"pretrained vs {ref}", show_lines=False)
    m = escape(summary.spec.label)
    pct = f"{summary.confidence * 100:.0f}%"
    for h in (
        "arm",
        "labels",
        "runs",
        f"test {m} \\[{pct} CI, seeds]",
        f"vs {ref} \\[{pct} CI, seeds+patients]",
        "p",
        "seed SD / patient SE",
        "p DeLong",
        "epochs to common plateau",
    ):
        table.add_column(h, overflow="fold")
    for r in rows:
        cells = [
            r[0],
            r[1],
            r[2],
            f"{r[3]} [{r[4]}]",
            f"{r[5]} [{r[6]}]" if r[5] else "",
            r[7],
            f"{r[8]} / {r[9]}" if r[5] else "",
            r[10],
            r[11],
        ]
        table.add_row(*(escape(c) for c in cells))
    console.print(table)
    for sentence in summary.sentences():
        console.print(f"- {escape(sentence)}", highlight=False)
    if len(summary.ranking) > 2 and summary.ranking_fraction is not None:
        words = f"{summary.ranking_fraction * 100:g}% of the labels"
        digits = summary.spec.digits
        order = ", ".join(
            f"{e.rank or '-'}. {escape(results.arm(e.arm).display)} {fmt(e.mean.mean if e.mean else None, digits)}"
            for e in summary.ranking
        )
        console.print(f"ranking by mean test {escape(summary.spec.label)} with {words}: {order}", highlight=False)
    for w in summary.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False)
