"""``medtl compare`` and ``medtl demo``: pretrained vs scratch, with confidence intervals."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from medtl.cli.early import loading
from medtl.errors import ConfigError

__all__ = ["register"]


def _fractions(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"--fractions {text!r}: give numbers in (0, 1] separated by commas, e.g. 0.1,0.5,1") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise ConfigError(f"--fractions {text!r}: every fraction must be in (0, 1], e.g. 0.1,0.5,1")
    return values


def _finish(result, started: float) -> None:
    from rich.console import Console

    from medtl.comparison.report import print_summary

    # a log file or a pipe gets a table wide enough to read, not rich's 80-column default
    console = Console() if sys.stdout.isatty() else Console(width=140)
    print_summary(result.results, result.summary, console)
    minutes = (time.perf_counter() - started) / 60
    console.print(
        f"\nreport: {result.files.report_html.resolve()}  (also {result.files.report_md.name}, "
        f"results.csv, results.json in {result.compare_dir})  [{minutes:.1f} min]",
        highlight=False,
    )


def compare_cmd(
    config: Path = typer.Argument(..., help="Experiment YAML with a `compare` section (arms, seeds, fractions)."),
    seeds: int | None = typer.Option(None, "--seeds", min=1, help="Seeds per arm and fraction (default 3)."),
    fractions: str | None = typer.Option(
        None, "--fractions", help="Label fractions, comma separated (default 0.1,0.25,0.5,1)."
    ),
    arms: str | None = typer.Option(None, "--arms", help="Only these arms (comma separated names)."),
    out: Path | None = typer.Option(None, "--out", help="Comparison folder (default <output.dir>/compare-<name>)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs per run, the same for every arm."),
    devices: int | None = typer.Option(None, "--devices", min=1, help="Devices per run."),
    resamples: int | None = typer.Option(None, "--resamples", min=100, help="Bootstrap resamples (default 2000)."),
    parallel: int = typer.Option(
        1, "--parallel", min=1, help="Runs at once on this machine, each with its own GPU if there are enough."
    ),
    slurm_partition: str | None = typer.Option(
        None,
        "--slurm-partition",
        # rich markup would read [slurm] as a style tag and print "medtl": the bracket is escaped
        help="Submit each run as a SLURM job to this partition (needs the extra: pip install 'medtl\\[slurm]').",
    ),
    slurm_time: int = typer.Option(120, "--slurm-time", min=1, help="SLURM: time limit of a run's job, minutes."),
    slurm_gpus: int = typer.Option(1, "--slurm-gpus", min=0, help="SLURM: GPUs per run's job."),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="The folder holds runs made with other settings: move them, the splits and the report to "
        "<folder>/superseded/<UTC time>/ and train the changed runs again (default: refuse, changing nothing).",
    ),
) -> None:
    """Train every arm x seed x label fraction on the same patients and report whether pretraining helped.

    compare.primary_metric: one of the metrics of the config's task (`medtl metrics --task TASK` lists them and
    their defaults: auroc for classification and multi-label, mae for regression, dice for segmentation).

    Every run is kept. Run again on the same folder, finished runs made with the same settings are reused and
    unfinished ones trained again. If finished runs or the splits were made with other settings (config, manifest
    content, splits, pseudonym secret, weights file), compare refuses before touching anything and names what
    changed: pass --out NEW_DIR for a new comparison beside it, or --replace to move the old runs, splits and report
    to <folder>/superseded/<UTC time>/ and retrain. A second compare on a folder in use is refused (its .lock).
    Failed runs are recorded and the others go on.
    """
    from medtl.comparison.compare_config import compare_overrides, load_compare_config

    started = time.perf_counter()
    overrides = {"train.epochs": epochs, "train.devices": devices, "compare.n_resamples": resamples}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fraction_list = _fractions(fractions)
    # a config mistake: one line, before the imports
    load_compare_config(config, compare_overrides(overrides, seeds, fraction_list))
    loading("compare", config)
    from medtl.comparison.compare import compare, slurm_executor

    launcher = "local"
    if slurm_partition:
        folder = (out or Path(".")) / "slurm-logs"
        launcher = slurm_executor(
            folder,
            slurm_partition=slurm_partition,
            timeout_min=slurm_time,
            gpus_per_node=slurm_gpus,
            cpus_per_task=8,
            tasks_per_node=1,
        )
    result = compare(
        config,
        out_dir=out,
        seeds=seeds,
        fractions=fraction_list,
        arms=[a.strip() for a in arms.split(",") if a.strip()] if arms else None,
        overrides=overrides,
        on_event=lambda msg: print(msg, flush=True),
        parallel=parallel,
        launcher=launcher,
        replace=replace,
    )
    _finish(result, started)


def demo_cmd(
    full: bool = typer.Option(False, "--full", help="label fractions 10/25/50/100%, 10 epochs, 96 px (much longer)."),
    out: Path | None = typer.Option(None, "--out", help="Comparison folder (default runs/demo)."),
) -> None:
    """Compare ImageNet-pretrained MobileNetV2 with training from scratch on the sample radiographs (CPU, offline)."""
    from medtl.comparison.demo import run_demo

    started = time.perf_counter()
    print(
        "medtl demo: MobileNetV2 ImageNet vs scratch on 800 generated radiographs" + (" (full)" if full else ""),
        flush=True,
    )
    result = run_demo(full=full, out_dir=out, on_event=lambda msg: print(msg, flush=True))
    _finish(result, started)


def register(app: typer.Typer) -> None:
    """Add ``compare`` and ``demo`` to ``app``."""
    app.command("compare")(compare_cmd)
    app.command("demo")(demo_cmd)
