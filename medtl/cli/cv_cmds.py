"""``medtl cv``: k-fold cross-validation of one experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.early import loading

__all__ = ["register", "cv_cmd"]


def cv_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    folds: Annotated[
        int | None, typer.Option("--folds", min=2, help="Number of folds (default: the config's splits.folds).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Cross-validation folder (default <output.dir>/cv-<output.name or arch>)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override train.epochs.")] = None,
    parallel: Annotated[
        int,
        typer.Option(
            "--parallel",
            min=1,
            help="Folds trained at once on this machine, each with its own GPU if there are enough.",
        ),
    ] = 1,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Any field: --set train.patience=3 (YAML value); repeatable.")
    ] = None,
) -> None:
    """Train every cross-validation fold (a stratified test set held out first, the other patients dealt into the
    folds) and report the mean over folds: the validation-fold metric with a t-interval over folds (uncorrected and
    Nadeau-Bengio corrected), and each fold's model on the held-out test patients with its mean and interval.

    Each fold is a run folder <out>/fold<k>/; running cv again reuses finished folds made with the same settings and
    refuses, changing nothing, when a finished fold would change. Writes cv_report.md, cv_report.html,
    cv_results.json and cv_results.csv.
    """
    from medtl.cli.train_cmds import _overrides
    from medtl.config import load_config

    overrides = _overrides(epochs=epochs, sets=sets)
    load_config(config, overrides)  # a config mistake: one line, before the imports
    loading("cv", config)
    from medtl.comparison.cv import cross_validate

    result = cross_validate(
        config,
        folds=folds,
        out_dir=out,
        overrides=overrides,
        on_event=lambda msg: print(msg, flush=True),
        parallel=parallel,
    )
    for line in result.lines():
        typer.echo(line)
    typer.echo(
        f"report: {result.report_html}  (also {result.report_md.name}, {result.results_json.name}, "
        f"{result.results_csv.name} in {result.cv_dir})"
    )


def register(app: typer.Typer) -> None:
    """Add ``cv`` to ``app``."""
    app.command("cv")(cv_cmd)
