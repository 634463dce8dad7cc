"""The comparison report: report.md, a self-contained report.html, results.csv, results.json, plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and rendered to
Markdown and HTML from the same blocks, so the two never disagree; every number in them is formatted
from the :class:`~medtl.comparison.summary.Summary` also written to ``results.json``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtl.comparison.plots import plot_label_efficiency, plot_learning_curves, plot_roc_curves
from medtl.comparison.results import CompareResults
from medtl.comparison.stats import PairedDifference
from medtl.comparison.summary import METRIC_WORDS, ArmFractionSummary, Summary, summarize

__all__ = ["write_report", "summary_table", "print_summary", "fmt", "fmt_p", "md_escape", "ReportFiles"]


def fmt(v: float | None, digits: int = 3) -> str:
    """A number as the report prints it ('n/a' for missing)."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _ci(low: float, high: float) -> str:
    return "n/a" if not (math.isfinite(low) and math.isfinite(high)) else f"{fmt(low)} to {fmt(high)}"


def _labels_cell(r: ArmFractionSummary) -> str:
    """'10%', or '10% (16.7% used)' when the runs used another share of the training patients."""
    text = f"{r.fraction * 100:g}%"
    used = r.fraction_used
    if used is not None and math.isfinite(used) and abs(used - r.fraction) >= 0.005:
        text += f" ({used * 100:.1f}% used)"
    return text


def _diff_cells(d: PairedDifference | None) -> list[str]:
    """difference, its CI, p, seed SD, patient SE and DeLong's p, as the summary table prints them."""
    if d is None:
        return [""] * 6
    if d.estimable:
        ci, p = _ci(d.low, d.high), fmt_p(d.p_value)
    elif d.n_seeds < 2:
        ci = p = f"n/a ({d.n_seeds} seed)"
    else:
        ci = p = "not estimable"
    if d.delong is None:
        dl = ""
    else:
        dl = fmt_p(d.delong.p_value) if d.delong.estimable else ("not estimable" if d.delong.se == 0 else "n/a")
    return [
        f"{d.difference:+.3f}" if math.isfinite(d.difference) else "n/a",
        ci,
        p,
        fmt(d.seed_sd),
        fmt(d.patient_se),
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
    m = METRIC_WORDS.get(summary.primary_metric, summary.primary_metric)
    ref = results.arm(summary.reference).display
    pct = f"{summary.confidence * 100:.0f}%"
    header = [
        "arm",
        "labels",
        "runs",
        f"test {m} (mean)",
        f"{pct} CI over seeds",
        f"difference vs {ref}",
        f"{pct} CI (seeds and patients)",
        "p",
        "seed SD of difference",
        "patient SE of difference",
        "p DeLong (seed-averaged scores)",
        f"epochs to the common plateau - {summary.convergence_tolerance:g} (median, arm vs {ref})",
    ]
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
                    fmt(ci.mean) if ci else "n/a",
                    _ci(ci.low, ci.high) if ci else "n/a",
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
    m = METRIC_WORDS.get(summary.primary_metric, summary.primary_metric)
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


# ------------------------------------------------------------------------------------------ blocks


@dataclass
class _Block:
    kind: str  # "h1" | "h2" | "p" | "ul" | "table" | "img" | "pre"
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


def _power_note(summary: Summary, metric_words: str, n_patients: int) -> str:
    """What differences this comparison could resolve: the typical half-width of its paired intervals."""
    diffs = [r.vs_reference for r in summary.rows if r.vs_reference is not None]
    halves = [(d.high - d.low) / 2 for d in diffs if d.estimable]
    seeds = max((d.n_seeds for d in diffs), default=0)
    if not diffs:
        return ""
    size = f"{n_patients} test patients and {seeds} seed{'s' if seeds != 1 else ''} per arm"
    if not halves:
        return (
            f"Power: with {size} no interval for the paired difference could be computed; "
            f"at least {summary.min_seeds} seeds per arm are needed for a verdict."
        )
    half = float(np.median(halves))
    text = (
        f"Power: with {size}, the paired {summary.confidence * 100:.0f}% intervals are about "
        f"±{half:.3f} {metric_words} wide (median half-width), so a real difference smaller than about "
        f"{half:.2f} is likely to be reported as no significant difference."
    )
    if n_patients and n_patients < 30:
        text += f" Only {n_patients} test patients: a small real difference cannot be ruled in or out."
    return text


def _blocks(results: CompareResults, summary: Summary, images: dict[str, Path]) -> list[_Block]:
    m = METRIC_WORDS.get(summary.primary_metric, summary.primary_metric)
    ref = results.arm(summary.reference).display
    b: list[_Block] = [_Block("h1", "Does pretraining help? medtl comparison report")]
    n_ok = sum(r.ok for r in results.runs)
    n_failed = sum(r.status == "failed" for r in results.runs)
    n_patients = max((r.vs_reference.n_patients for r in summary.rows if r.vs_reference), default=0)
    b.append(
        _Block(
            "p",
            f"{len(results.arms)} arms x {len(results.seeds)} seeds x {len(results.fractions)} label fractions: "
            f"{n_ok} runs finished, {n_failed} failed. Primary metric: test {m}, computed per patient "
            f"(each patient's scan probabilities averaged) on the same {n_patients or 'n/a'} test patients for "
            f"every arm. Classes: {', '.join(results.classes)}.",
        )
    )
    b.append(_Block("h2", "Verdict"))
    sentences = [r.sentence for r in summary.rows if r.sentence]
    b.append(_Block("ul", items=sentences or ["No paired comparison was possible (see failed runs below)."]))
    if summary.warnings:
        b.append(_Block("p", "Warnings:"))
        b.append(_Block("ul", items=summary.warnings))
    power = _power_note(summary, m, n_patients)
    if power:
        b.append(_Block("p", power))
    b.append(_Block("h2", "Summary"))
    header, rows = summary_table(results, summary)
    b.append(_Block("table", header=header, rows=rows))
    pct = f"{summary.confidence * 100:.0f}%"
    b.append(
        _Block(
            "p",
            f"'{pct} CI over seeds' is a t-interval of the mean over seeds. 'difference vs {ref}' is the mean "
            f"over seeds of the paired difference in test {m} on the same patients. Its uncertainty has two "
            "sources, both shown: training noise ('seed SD', the SD of the per-seed differences) and the "
            f"sampling of test patients ('patient SE', from a bootstrap of {summary.n_resamples} resamples of "
            "patients, not images, stratified by class). They are combined into one standard error (seed "
            "variance / number of seeds + the patient variance shared by all seeds; the part of the patient "
            "noise that differs between seeds already shows in the seed SD), and the interval is a "
            "t-interval with Welch-Satterthwaite degrees of freedom; the p-value is the t-test of the same "
            f"estimate, so the interval excludes 0 exactly when p is below {1 - summary.confidence:.2g}. A "
            "verdict ('beat', 'did "
            f"worse') needs at least {summary.min_seeds} seeds per arm: with fewer, training noise cannot be "
            "separated from an effect. DeLong's test compares the two arms' seed-averaged scores over "
            "patients only (two-class AUROC): a second opinion that ignores training noise. The last column: "
            f"per seed, each run's validation {m} is smoothed over {summary.convergence_window} epochs, its "
            "plateau is the mean of the last third of the smoothed curve, and the target is the lower of "
            f"the arm's and {ref}'s plateaus minus {summary.convergence_tolerance:g}, a level both reach; the "
            "median is the epoch by which half the seeds had reached it (a seed that never did counts as not "
            "yet, so 'not reached' means fewer than half did).",
        )
    )
    titles = {
        "label_efficiency": "Label efficiency",
        "learning_curves": "Validation learning curves",
        "roc": "ROC curves with all the labels",
    }
    for key, title in titles.items():
        if key in images:
            b.append(_Block("h2", title))
            b.append(_Block("img", text=title, path=images[key]))
    b.append(_Block("h2", "Other test metrics (mean over seeds, 95% CI)"))
    other = sorted({k for r in summary.rows for k in r.metrics})
    rows2 = []
    for f in results.fractions:
        for arm in results.arms:
            r = summary.row(arm.name, f)
            if r is None:
                continue
            rows2.append(
                [arm.display, f"{f * 100:g}%"]
                + [
                    f"{fmt(r.metrics[k].mean)} ({_ci(r.metrics[k].low, r.metrics[k].high)})" if k in r.metrics else ""
                    for k in other
                ]
                + [fmt(r.seconds, 0)]
            )
    b.append(_Block("table", header=["arm", "labels", *other, "seconds per run"], rows=rows2))
    b.append(_Block("h2", "Arms and where their weights come from"))
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
                p.get("license", "") or ("n/a" if a.is_scratch else ""),
                p.get("citation", "") or "",
                (p.get("sha256", "") or "") + (" (unverified)" if p.get("verified") is False else ""),
            ]
        )
    b.append(
        _Block(
            "table",
            header=["arm", "architecture", "weights", "origin", "schedule", "mode", "licence", "citation", "sha256"],
            rows=arm_rows,
        )
    )
    for a in results.arms:
        if a.load_report:
            b.append(_Block("p", f"Load report, {a.display}:"))
            b.append(_Block("pre", a.load_report))
    failed = [r for r in results.runs if r.status == "failed"]
    if failed:
        b.append(_Block("h2", "Failed runs"))
        b.append(
            _Block(
                "table",
                header=["arm", "seed", "labels", "error", "run folder"],
                rows=[[r.arm, str(r.seed), f"{r.fraction * 100:g}%", r.error or "", r.run_dir or ""] for r in failed],
            )
        )
    b.append(_Block("h2", "Runs"))
    b.append(
        _Block(
            "p",
            "Every run is a normal medtl run folder (config, splits, metrics.csv, checkpoints, model card); "
            "results.csv lists them with their test metrics, and results.json holds everything in this "
            "report, including per-patient test predictions (hashed patient IDs).",
        )
    )
    return b


_MD_INLINE = re.compile(r"([\\`*_\[\]|~$])")
_MD_MARKER = re.compile(r"^(\s*)([#+-])(?=\s|$)")
_MD_NUMBERED = re.compile(r"^(\s*\d+)([.)])(?=\s|$)")


def md_escape(text: str, *, block: bool = True) -> str:
    """Text as Markdown shows it literally: what report.html does with ``html.escape``, for report.md.

    ``&``, ``<`` and ``>`` become entities (so ``<script>`` is text, not HTML); Markdown's inline
    punctuation (backslash, backtick, ``*``, ``_``, brackets, ``|``, ``~``, and ``$`` which starts math on
    GitHub) is backslash-escaped and line breaks become spaces. With ``block`` (text that starts a line:
    a paragraph, a list item, a heading), a leading ``#``, ``+``, ``-`` or ``1.`` marker is escaped too,
    so user text cannot open a heading or a list; table cells need no such escape.
    """
    s = html.escape(str(text), quote=False)
    s = _MD_INLINE.sub(r"\\\1", s)
    s = re.sub(r"\s*[\r\n]+\s*", " ", s)
    if block:
        s = _MD_NUMBERED.sub(r"\1\\\2", _MD_MARKER.sub(r"\1\\\2", s))
    return s


def _md_fence(text: str) -> str:
    """A code fence longer than any run of backticks inside ``text``, so the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _render_md(blocks: list[_Block], base: Path) -> str:
    e = md_escape
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {e(b.text)}\n")
        elif b.kind == "h2":
            out.append(f"## {e(b.text)}\n")
        elif b.kind == "p":
            out.append(f"{e(b.text)}\n")
        elif b.kind == "ul":
            out.append("\n".join(f"- {e(i)}" for i in b.items) + "\n")
        elif b.kind == "pre":
            fence = _md_fence(b.text)
            out.append(f"{fence}\n" + b.text.rstrip() + f"\n{fence}\n")
        elif b.kind == "table":
            out.append("| " + " | ".join(e(h, block=False) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(e(c, block=False) for c in row) + " |" for row in b.rows)
            out.append("")
        elif b.kind == "img" and b.path is not None:
            out.append(f"![{e(b.text)}]({b.path.relative_to(base).as_posix()})\n")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}"
    "pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}li{margin:0.3em 0}"
)


def _render_html(blocks: list[_Block]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<style>{_CSS}</style>"]
    title = next((b.text for b in blocks if b.kind == "h1"), "medtl report")
    out.append(f"<title>{e(title)}</title></head><body>")
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "pre":
            out.append(f"<pre>{e(b.text)}</pre>")
        elif b.kind == "table":
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr></thead><tbody>")
            out.extend("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append("</tbody></table>")
        elif b.kind == "img" and b.path is not None:
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(f'<p><img alt="{e(b.text)}" src="data:image/png;base64,{data}"></p>')
    out.append("</body></html>")
    return "\n".join(out)


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
    """
    from medtl.utils import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(results, n_resamples=n_resamples)
    results.summary = summary
    images: dict[str, Path] = {}
    if plots and any(r.ok for r in results.runs):
        pdir = out / "plots"
        pdir.mkdir(exist_ok=True)
        images["label_efficiency"] = plot_label_efficiency(results, summary, pdir / "label_efficiency.png")
        images["learning_curves"] = plot_learning_curves(results, pdir / "learning_curves.png")
        roc = plot_roc_curves(results, pdir / "roc.png")
        if roc is not None:
            images["roc"] = roc
    blocks = _blocks(results, summary, images)
    md, htm = out / "report.md", out / "report.html"
    atomic_write_bytes(md, _render_md(blocks, out).encode())
    atomic_write_bytes(htm, _render_html(blocks).encode())
    rj = results.write_json(out / "results.json")
    rc = results.write_csv(out / "results.csv")
    return ReportFiles(md, htm, rj, rc, images)
