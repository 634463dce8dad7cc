"""The model card of a run (model_card.md): data, weights provenance, preprocessing, training, metrics."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["model_card", "md_escape", "metrics_table", "fmt_metric"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md_escape(text: Any) -> str:
    """User text (labels, file names) safe inside Markdown and its tables: specials escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def model_card(exp: Any, result: dict[str, Any], load_report: dict[str, Any]) -> str:
    """Markdown text of a finished run's card.

    Args:
        exp: the :class:`~medtl.train.experiment.Experiment`.
        result: what result.json holds (metrics, provenance, best epoch, seconds...).
        load_report: the weights loader's report.
    """
    cfg = exp.config
    classes = exp.classes
    prov = result.get("weights", {})

    def split_line(name: str) -> str:
        recs = exp.splits[name]
        counts = md_escape(exp.task.describe_labels(recs)) if recs else ""
        return f"| {name} | {len({str(r['patient_id']) for r in recs})} | {len(recs)} | {counts} |"

    t = cfg.train
    frozen = t.freeze_epochs if result.get("schedule") == "fine_tune" else 0
    lines = [
        f"# Model card: {md_escape(cfg.model.arch)} ({md_escape(cfg.model.weights)}) on "
        f"{md_escape(Path(cfg.data.manifest).name)}",
        "",
        f"Run `{Path(result['run_dir']).name}`, trained {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{result['epochs_run']} epoch(s), {result['seconds']:.0f} s. Research use only: not a medical device.",
        "",
        "## Data",
        f"- Manifest: `{cfg.data.manifest}` ({len(exp.records)} scans, "
        f"{len({str(r['patient_id']) for r in exp.records})} patients; task {exp.task.name}, outputs "
        f"{', '.join(md_escape(c) for c in classes)})",
        f"- Modality {exp.modality}, mode {exp.mode}. Splits by patient (seed {cfg.splits.seed}); "
        f"label fraction {cfg.splits.label_fraction:g} of the training patients.",
        "",
        "| split | patients | scans | scans per label |",
        "|---|---|---|---|",
        *(split_line(s) for s in ("train", "val", "test")),
        "",
        "## Weights",
        f"- Architecture `{cfg.model.arch}`, weights `{md_escape(cfg.model.weights)}` (source `{prov.get('source')}`)",
        f"- Licence: {prov.get('license') or 'n/a'}"
        + (f"; RESTRICTED: {exp.source.restriction}" if getattr(exp.source, "restriction", None) else ""),
        f"- Citation: {prov.get('citation') or 'n/a'}",
        f"- File: {prov.get('file') or 'none'}; SHA-256 of the file loaded: {prov.get('sha256') or 'n/a'}"
        + ("" if prov.get("verified") in (None, True) or not prov.get("file") else " (unverified: no pinned hash)"),
        f"- Load report: {load_report.get('summary', 'n/a')}",
        "",
        "## Preprocessing",
        *(f"- {k}: {v}" for k, v in exp.pipeline.description.items()),
        "",
        "## Training",
        f"- Schedule {result.get('schedule')}: {t.epochs} epochs in all, the first {frozen} with the body frozen "
        f"(lr {t.lr_for(str(result.get('schedule'))):g}, lr_mult {t.lr_mult:g}), batch {t.batch_size}, "
        f"optimizer {t.optimizer}, precision "
        f"{result.get('precision')}, devices {t.devices}, seed {t.seed}, class balance {t.class_balance}.",
        f"- Tested weights: epoch {result.get('best_epoch')}, "
        + ("the last (train.select: last)" if t.select == "last" else f"the best by {t.monitor} (train.select: best)"),
        "",
        "## Metrics (per scan, the tested weights)",
        "",
    ]
    return "\n".join(lines + exp.task.card_metrics(cfg, result)) + "\n"


def fmt_metric(value: Any) -> str:
    """A metric in a card table: three decimals, ``-`` when undefined."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def metrics_table(result: dict[str, Any], metrics: list[tuple[str, str]]) -> list[str]:
    """Markdown rows of a run's validation and test metrics (``metrics``: (key, heading) pairs)."""
    lines = [
        "| split | n | " + " | ".join(h for _, h in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for name in ("val", "test"):
        m = result["metrics"].get(name) or {}
        lines.append(f"| {name} | {m.get('n', 0)} | " + " | ".join(fmt_metric(m.get(k)) for k, _ in metrics) + " |")
    return lines
