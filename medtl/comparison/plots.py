"""Plots of a comparison (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medtl.comparison.results import CompareResults
from medtl.comparison.summary import Summary, fraction_words
from medtl.metric_specs import metric_spec

__all__ = [
    "plot_label_efficiency",
    "plot_learning_curves",
    "plot_roc_curves",
    "plot_png_grid",
    "ROC_LEGEND_AUROC",
    "plot_roc",
    "plot_reliability",
    "reliability_bins",
    "plot_confusion",
]

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


def plot_png_grid(
    rows: dict[str, list[Path]], path: str | Path, *, columns: list[str] | None = None, cell: float = 2.8
) -> Path | None:
    """PNGs side by side in one figure: one row per key of ``rows`` (its label on the left), one column per file name
    (the same scan in every row: an arm's saliency maps of the comparison's first test patients), titled by
    ``columns`` or by the file names. Returns None (no file) when there is no PNG."""
    drawn = {label: {Path(p).name: Path(p) for p in pngs} for label, pngs in rows.items() if pngs}
    names = list(dict.fromkeys(name for files in drawn.values() for name in files))
    if not names:
        return None
    titles = columns or [n.removesuffix(".png").removesuffix("_saliency") for n in names]
    plt = _plt()
    fig, axes = plt.subplots(
        len(drawn), len(names), figsize=(cell * len(names), cell * len(drawn)), dpi=100, squeeze=False
    )
    for i, (label, files) in enumerate(drawn.items()):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if name in files:
                ax.imshow(plt.imread(files[name]))
            else:
                ax.text(0.5, 0.5, "no picture", ha="center", va="center", transform=ax.transAxes)
            if j == 0 and label:
                ax.set_ylabel(_text(label), fontsize="small")
            if i == 0:
                ax.set_title(_text(titles[j]), fontsize="small")
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


# ------------------------------------------------------------------------ one model's predictions (evaluate)


def plot_roc(
    y: np.ndarray, probs: np.ndarray, classes: list[str], path: str | Path, *, title: str = "ROC"
) -> Path | None:
    """ROC curve of one model's predictions: the last class against the others for two classes, one curve per class
    (one-vs-rest) for more, each with its AUROC in the legend.

    Args:
        y: the true class index of each row (a scan, or a patient).
        probs: ``(n, n_classes)`` class probabilities.
        classes: the class names, in index order.
        path: the PNG to write.
        title: the plot's title.

    Returns:
        ``path``, or ``None`` (no file) when no class has both positive and negative rows.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=float).reshape(len(y), -1)
    shown = [len(classes) - 1] if len(classes) == 2 else list(range(len(classes)))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    drawn = False
    for c, color in zip(shown, _colors(len(shown)), strict=True):
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, c])
        auc = roc_auc_score(positive, probs[:, c])
        name = _text(classes[c]) if len(classes) == 2 else f"{_text(classes[c])} vs rest"
        ax.plot(fpr, tpr, color=color, label=f"{name} (AUROC {auc:.3f})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(_text(title), fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def reliability_bins(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins of predicted probability for a reliability diagram.

    ``p`` of shape ``(n,)`` is the probability of the positive class and ``y`` 0/1 (or a class index, 1 the positive
    class); ``p`` of shape ``(n, n_classes)`` is read as the top class's probability (confidence) against whether
    that class is ``y`` (the multi-class form).

    Returns:
        Per non-empty bin: the mean predicted probability, the observed frequency, the count, and the bin's lower
        edge.
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if p.ndim == 2:
        hit = (np.argmax(p, axis=1) == y.astype(int)).astype(float)
        p = p.max(axis=1)
    else:
        hit = (y.astype(float) > 0).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    ok = counts > 0
    mean_p = np.bincount(idx, weights=p, minlength=n_bins)[ok] / counts[ok]
    freq = np.bincount(idx, weights=hit, minlength=n_bins)[ok] / counts[ok]
    return mean_p, freq, counts[ok], edges[:-1][ok]


def plot_reliability(
    y: np.ndarray, p: np.ndarray, path: str | Path, *, n_bins: int = 10, title: str = "Reliability diagram"
) -> Path:
    """A reliability diagram: the observed frequency against the mean predicted probability in equal-width bins
    (:func:`reliability_bins`), the diagonal of perfect calibration, and below it how many predictions fall in each
    bin.

    Args:
        y: the true labels: 0/1 with ``p`` the positive class's probability, or class indices with ``p`` an
            ``(n, n_classes)`` array (then the top class's probability against whether it is right).
        p: predicted probabilities, as for ``y``.
        path: the PNG to write.
        n_bins: equal-width bins over [0, 1].
        title: the plot's title.
    """
    mean_p, freq, counts, lower = reliability_bins(y, p, n_bins)
    multi = np.asarray(p).ndim == 2 and np.asarray(p).shape[1] > 2
    plt = _plt()
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
    ax.plot(mean_p, freq, marker="o", color=_colors(1)[0], label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency of the top class being right" if multi else "observed frequency of positives")
    ax.set_title(_text(title), fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    width = 1.0 / n_bins
    hist.bar(lower + width / 2, counts, width=width * 0.9, color="grey")
    hist.set_xlabel("predicted probability of the top class" if multi else "predicted probability")
    hist.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_confusion(
    matrix: np.ndarray | list[list[int]], classes: list[str], path: str | Path, *, title: str = "Confusion matrix"
) -> Path:
    """A confusion matrix as a grid of counts: rows the true class, columns the predicted one."""
    m = np.asarray(matrix, dtype=int)
    plt = _plt()
    size = max(3.5, 0.9 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(m, cmap="Blues")
    high = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > high / 2 else "black")
    names = [_text(c) for c in classes]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_text(title), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
