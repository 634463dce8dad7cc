"""``medtl export``: a finished run as ONNX, TorchScript or a MONAI bundle that runs without medtl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "export_cmd"]


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="A new or empty folder, outside the run folder, that receives the export."),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx (model.onnx, checked with onnxruntime), torchscript (model.ts, traced) or monai-bundle "
            "(configs/inference.json, configs/metadata.json, models/model.ts, models/model.pt, docs/README.md, "
            "LICENSE). Each also writes input.json: the input record, task, outputs and preprocessing.",
        ),
    ] = "onnx",
    sample: Annotated[
        Path | None,
        typer.Option("--sample", help="The scan the export is checked on (default: a scan of the run's test split)."),
    ] = None,
    license: Annotated[
        str | None,
        typer.Option("--license", help="monai-bundle: the model's licence (an SPDX identifier, e.g. cc-by-nc-4.0)."),
    ] = None,
) -> None:
    """Export a run as a model that runs without medtl, checked against PyTorch (max abs difference <= 1e-4)."""
    from medtl.export import export_run

    result = export_run(run_dir, out, format=format, sample=sample, license=license)
    for f in result.files:
        typer.echo(f"wrote {f}")
    typer.echo(f"checked on {result.checked_on}: max abs difference from PyTorch {result.max_abs_diff:.3g} "
               f"(allowed {result.tolerance:g})")  # fmt: skip
    if result.preprocessing_diff is not None:
        typer.echo(
            "the MONAI transforms of input.json vs the run's own preprocessing: max abs difference "
            f"{result.preprocessing_diff:.3g}"
        )


def register(app: typer.Typer) -> None:
    """Add ``medtl export`` to ``app``."""
    app.command("export")(export_cmd)
