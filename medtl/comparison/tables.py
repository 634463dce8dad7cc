"""The summary table of a comparison, exactly as every output prints it: report.md, report.html and the terminal.

One row per arm and label fraction: the primary metric over seeds, the paired difference against the reference
arm with its interval, p-value, seed SD, patient SE and DeLong's p, and convergence. Numbers carry the metric's
digits and unit (HD95 in mm; :mod:`medtl.metric_specs`).
"""

from __future__ import annotations

import math

from medtl.comparison.results import CompareResults
from medtl.comparison.stats import PairedDifference
from medtl.comparison.summary import ArmFractionSummary, Summary
from medtl.metric_specs import metric_spec

__all__ = ["summary_table", "print_summary", "fmt", "fmt_p", "ci_text"]


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


def _diff_cells(d: PairedDifference | None) -> list[str]:
    """difference, its CI, p, seed SD, patient SE and DeLong's p, as the summary table prints them.

    DeLong's test is about two-class AUROC: on any other metric it does not apply and the cell says "n/a".
    """
    if d is None:
        return [""] * 6
    digits = metric_spec(d.metric).digits
    if d.estimable:
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
    header = [
        "arm",
        "labels",
        "runs",
        f"test {spec.label} (mean)",
        f"{pct} CI over seeds",
        f"difference vs {ref}{unit}",
        f"{pct} CI (seeds and patients)",
        "p",
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
                    *_diff_cells(r.vs_reference),
                    conv,
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
    for r in summary.rows:
        if r.sentence:
            console.print(f"- {escape(r.sentence)}", highlight=False)
    for w in summary.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False)
