"""``medtl metrics``: the tasks medtl learns and the metrics of each (the metric registry as a table)."""

from __future__ import annotations

import json
import math

import typer

__all__ = ["register"]


def metrics_cmd(
    task: str | None = typer.Option(None, "--task", help="Only this task's metrics."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every metric: the tasks that compute it, its direction and unit, and the name train.monitor takes.

    compare.primary_metric takes a metric of the config's task; train.monitor takes val_<metric> or val_loss.
    """
    from medtl.metric_specs import METRICS, default_metric
    from medtl.tasks import TASK_NAMES
    from medtl.utils import look_up_option

    if task is not None:
        task = look_up_option(task, TASK_NAMES, what="task")
    rows = [
        {
            "metric": s.name,
            "tasks": [t for t in s.tasks if task in (None, t)],
            "default_for": list(s.default_for),
            "better": "higher" if s.higher_is_better else "lower",
            "unit": "the label's" if s.scale_unit else s.unit,
            "range": [None if math.isinf(b) else b for b in s.bounds],
            "monitor": s.monitor,
            "compare": s.comparable,
            "description": s.description,
        }
        for s in METRICS
        if task is None or task in s.tasks
    ]
    if json_out:
        typer.echo(json.dumps({"tasks": list(TASK_NAMES), "metrics": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "tasks", "better", "unit", "train.monitor", "what it is")
    for r in rows:
        defaults = [t for t in r["tasks"] if t in r["default_for"]]
        tasks = ", ".join(f"{t} (default)" if t in defaults else t for t in r["tasks"])
        name = r["metric"] + ("" if r["compare"] else " (monitor only)")
        table.add_row(name, tasks, r["better"], r["unit"] or "-", r["monitor"], r["description"])
    import sys

    Console(width=None if sys.stdout.isatty() else 160).print(table)
    shown = [t for t in TASK_NAMES if task in (None, t)]
    typer.echo("defaults: " + ", ".join(f"{t} {default_metric(t)}" for t in shown))


def register(app: typer.Typer) -> None:
    """Add ``metrics`` to ``app``."""
    app.command("metrics")(metrics_cmd)
