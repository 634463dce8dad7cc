"""The comparison report: report.md, a self-contained report.html, results.csv, results.json, plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and rendered to
Markdown and HTML from the same blocks, so the two never disagree; every number in them is formatted
from the :class:`~medtl.evaluate.results.Summary` also written to ``results.json``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from medtl.evaluate.plots import plot_label_efficiency, plot_learning_curves, plot_roc_curves
from medtl.evaluate.results import METRIC_WORDS, CompareResults, Summary, summarize

__all__ = ["write_report", "summary_table", "print_summary", "fmt", "ReportFiles"]


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


def summary_table(results: CompareResults, summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (strings, exactly as printed in every output)."""
    m = METRIC_WORDS.get(summary.primary_metric, summary.primary_metric)
    header = [
        "arm",
        "labels",
        "runs",
        f"test {m} (mean)",
        "95% CI over seeds",
        f"difference vs {results.arm(summary.reference).display}",
        "95% CI over patients",
        "p (bootstrap)",
        "p (DeLong)",
        f"reached {results.arm(summary.reference).display}'s best val",
    ]
    rows = []
    for f in results.fractions:
        for arm in results.arms:
            r = summary.row(arm.name, f)
            if r is None:
                continue
            ci = r.metrics.get(summary.primary_metric)
            d = r.vs_reference
            runs = f"{r.n_ok}" + (f" ({r.n_failed} failed)" if r.n_failed else "")
            if arm.name == summary.reference:
                conv = "(reference)"
            elif r.convergence.get("n"):
                c = r.convergence
                conv = (
                    f"never (0/{c['n']} seeds)"
                    if not c["n_reached"]
                    else f"epoch {c['median_epoch']:g}, {c['median_seconds']:.0f} s ({c['n_reached']}/{c['n']} seeds)"
                )
            else:
                conv = "n/a"
            rows.append(
                [
                    arm.display,
                    f"{f * 100:g}%",
                    runs,
                    fmt(ci.mean) if ci else "n/a",
                    _ci(ci.low, ci.high) if ci else "n/a",
                    "" if d is None else f"{d.difference:+.3f}",
                    "" if d is None else _ci(d.low, d.high),
                    "" if d is None else fmt_p(d.p_value),
                    "" if d is None or d.delong is None else fmt_p(d.delong.p_value),
                    conv,
                ]
            )
    return header, rows


def print_summary(results: CompareResults, summary: Summary, console=None) -> None:
    """The summary table and the verdicts in the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    header, rows = summary_table(results, summary)
    # the report's columns, with each value and its interval in one cell so the table fits a terminal
    table = Table(title=f"pretrained vs {results.arm(summary.reference).display}", show_lines=False)
    m = METRIC_WORDS.get(summary.primary_metric, summary.primary_metric)
    ref = results.arm(summary.reference).display
    for h in (
        "arm",
        "labels",
        "runs",
        f"test {m} [95% CI, seeds]",
        f"vs {ref} [95% CI, patients]",
        "p",
        "p DeLong",
        f"matched {ref}'s best val",
    ):
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(r[0], r[1], r[2], f"{r[3]} [{r[4]}]", f"{r[5]} [{r[6]}]" if r[5] else "", r[7], r[8], r[9])
    console.print(table)
    for r in summary.rows:
        if r.sentence:
            console.print(f"- {r.sentence}", highlight=False)
    for w in summary.warnings:
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False)


# ------------------------------------------------------------------------------------------ blocks


@dataclass
class _Block:
    kind: str  # "h1" | "h2" | "p" | "ul" | "table" | "img" | "pre"
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


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
    if n_patients and n_patients < 30:
        b.append(
            _Block(
                "p",
                f"Caution: only {n_patients} test patients. Intervals this wide mean a small real difference "
                "cannot be ruled in or out.",
            )
        )
    b.append(_Block("h2", "Summary"))
    header, rows = summary_table(results, summary)
    b.append(_Block("table", header=header, rows=rows))
    b.append(
        _Block(
            "p",
            f"'95% CI over seeds' is a t-interval of the mean over seeds. 'difference vs {ref}' is the mean "
            f"over seeds of the paired difference in test {m} on the same patients; its interval comes "
            f"from a stratified bootstrap over test patients ({summary.n_resamples} resamples; patients, "
            "not images, are resampled) and the p-value from the same bootstrap. DeLong's test compares "
            "the two arms' seed-averaged scores (binary AUROC only). The last column is the epoch (median "
            f"over seeds) and wall-clock time at which the arm first matched {ref}'s best validation "
            f"{m} in the same seed and fraction, or 'never' within the epoch budget.",
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
                a.schedule,
                a.mode or "",
                p.get("license", "") or ("n/a" if a.is_scratch else ""),
                p.get("citation", "") or ("random initialisation" if a.is_scratch else ""),
                p.get("sha256", "") or "",
            ]
        )
    b.append(
        _Block(
            "table",
            header=["arm", "architecture", "weights", "schedule", "mode", "licence", "citation", "sha256"],
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


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _render_md(blocks: list[_Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}\n")
        elif b.kind == "h2":
            out.append(f"## {b.text}\n")
        elif b.kind == "p":
            out.append(f"{b.text}\n")
        elif b.kind == "ul":
            out.append("\n".join(f"- {i}" for i in b.items) + "\n")
        elif b.kind == "pre":
            out.append("```\n" + b.text.rstrip() + "\n```\n")
        elif b.kind == "table":
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows)
            out.append("")
        elif b.kind == "img" and b.path is not None:
            out.append(f"![{b.text}]({b.path.relative_to(base).as_posix()})\n")
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
