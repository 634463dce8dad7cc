"""Plots of a comparison (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medtl.comparison.results import CompareResults
from medtl.comparison.summary import Summary, fraction_words
from medtl.metric_specs import metric_spec

__all__ = ["plot_label_efficiency", "plot_learning_curves", "plot_roc_curves", "ROC_LEGEND_AUROC"]

#: what the ROC plot's legend calls its AUROC: that of the scores averaged over seeds, which differs from the mean of
#: the per-seed AUROCs the tables show (averaging scores first smooths each seed's errors)
ROC_LEGEND_AUROC = "AUROC of the seed-averaged scores"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _text(label: str) -> str:
    """A user label as matplotlib prints it literally: ``$`` would otherwise start mathtext (and can raise)."""
    return str(label).replace("$", r"\$")


def _colors(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def plot_label_efficiency(results: CompareResults, summary: Summary, path: str | Path) -> Path:
    """Test primary metric vs label fraction: one line per arm (mean over seeds) with its 95% CI band; with a single
    label fraction there is no curve to draw, so one dot per arm with its interval as error bars
    (:func:`_plot_one_fraction`)."""
    if len(results.fractions) == 1:
        return _plot_one_fraction(results, summary, path)
    plt = _plt()
    metric = summary.primary_metric
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for arm, color in zip(results.arms, _colors(len(results.arms)), strict=True):
        xs, mean, low, high = [], [], [], []
        for f in results.fractions:
            row = summary.row(arm.name, f)
            if row is None or metric not in row.metrics or not np.isfinite(row.metrics[metric].mean):
                continue
            ci = row.metrics[metric]
            xs.append(f * 100)
            mean.append(ci.mean)
            low.append(ci.low if np.isfinite(ci.low) else ci.mean)
            high.append(ci.high if np.isfinite(ci.high) else ci.mean)
        if not xs:
            continue
        ax.plot(xs, mean, marker="o", color=color, label=_text(arm.display))
        ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([f * 100 for f in results.fractions])
    ax.set_xticklabels([f"{f * 100:g}%" for f in results.fractions])
    ax.set_xlabel("training labels used")
    ax.set_ylabel(_text(f"test {summary.spec.label}"))
    n_seeds = len(results.seeds)
    ax.set_title(f"Label efficiency (mean of {n_seeds} seeds, 95% CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small" if len(results.arms) > 3 else None)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _plot_one_fraction(results: CompareResults, summary: Summary, path: str | Path) -> Path:
    """The test primary metric of each arm at the comparison's only label fraction: a dot (mean over seeds) with its
    95% CI over seeds as an error bar, one column per arm (a line through single points would suggest a curve)."""
    plt = _plt()
    metric = summary.primary_metric
    fraction = results.fractions[0]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(results.arms) + 2), 4), dpi=100)
    names = []
    for arm, color in zip(results.arms, _colors(len(results.arms)), strict=True):
        row = summary.row(arm.name, fraction)
        names.append(_text(arm.display))
        if row is None or metric not in row.metrics or not np.isfinite(row.metrics[metric].mean):
            continue
        ci = row.metrics[metric]
        x = len(names) - 1
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            yerr = [[ci.mean - ci.low], [ci.high - ci.mean]]
            ax.errorbar([x], [ci.mean], yerr=yerr, fmt="o", color=color, capsize=6, markersize=7)
        else:  # one seed: no interval
            ax.plot([x], [ci.mean], marker="o", linestyle="none", color=color, markersize=7)
    ax.set_xticks(range(len(names)))
    many = len(names) > 3  # the zoo's default arms: long labels, slanted so they do not run into each other
    ax.set_xticklabels(names, rotation=30 if many else 0, ha="right" if many else "center")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(_text(f"test {summary.spec.label}"))
    ax.set_title(
        f"Test {_text(summary.spec.words)} {fraction_words(fraction)}\n(mean of {len(results.seeds)} seeds, "
        "95% CI over seeds; one label fraction, so no curve)"
    )
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_learning_curves(results: CompareResults, path: str | Path) -> Path:
    """Validation primary metric per epoch: one panel per label fraction, one colour per arm, a line per seed."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    metric = results.primary_metric
    key = f"val_{metric}"
    n = max(1, len(results.fractions))
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.5), dpi=100, squeeze=False, sharey=True)
    colors = dict(zip([a.name for a in results.arms], _colors(len(results.arms)), strict=True))
    for ax, f in zip(axes[0], results.fractions, strict=True):
        for arm in results.arms:
            labelled = False
            for r in results.runs:
                if r.arm != arm.name or abs(r.fraction - f) > 1e-9 or not r.ok or not r.curve:
                    continue
                pts = [(c["epoch"], c[key]) for c in r.curve if key in c and math.isfinite(c[key])]
                if not pts:
                    continue
                x, y = zip(*pts, strict=True)
                ax.plot(
                    x, y, marker=".", color=colors[arm.name], alpha=0.8, label=None if labelled else _text(arm.display)
                )
                labelled = True
        ax.set_title(f"{f * 100:g}% of labels")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(_text(f"validation {metric_spec(metric).label}"))
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize="small")
    fig.suptitle("Validation learning curves (one line per seed)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_roc_curves(results: CompareResults, path: str | Path) -> Path | None:
    """ROC curves per arm at the largest label fraction, from seed-averaged per-patient probabilities.

    Returns ``None`` (no file) when the task is not binary or no run has predictions.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(results.classes) != 2:
        return None
    plt = _plt()
    f = max(results.fractions)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    drawn = False
    for arm, color in zip(results.arms, _colors(len(results.arms)), strict=True):
        preds = [
            r.predictions
            for r in results.runs
            if r.arm == arm.name and abs(r.fraction - f) < 1e-9 and r.ok and r.predictions is not None
        ]
        if not preds:
            continue
        ref = preds[0]
        aligned = [ref.align(p)[1] for p in preds]
        y = ref.align(preds[-1])[0].labels if len(preds) > 1 else ref.labels
        scores = np.mean([p.scores for p in aligned], axis=0)
        if len(set(y.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, scores)
        auc = roc_auc_score(y, scores)
        ax.plot(fpr, tpr, color=color, label=f"{_text(arm.display)} ({ROC_LEGEND_AUROC} {auc:.3f})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    # the legend's AUROC is of the seed-averaged scores; the summary table's is the mean of the per-seed AUROCs
    ax.set_title(
        f"Test ROC, {f * 100:g}% of labels, probabilities averaged over seeds\n(legend: AUROC of those averaged "
        "scores; the tables show the mean of each seed's AUROC)",
        fontsize="medium",
    )
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
