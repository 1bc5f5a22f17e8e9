"""`ferry export lite`: a package as one compact file (or a folder with the runtime) for numpy-only devices."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Export a package for another runtime."""


@export.command("lite")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="The .flite file to write (with --bundle: a folder).")  # fmt: skip
@click.option("--int8", is_flag=True, help="Store large float weights as per-channel int8 (about 4x smaller).")
@click.option("--bundle", is_flag=True, help="Write a folder: the model plus the runtime, runnable with numpy alone.")
@click.option("--no-optimize", is_flag=True, help="Skip the graph optimizer.")
@click.option(
    "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size the memory plan is made for."
)
def lite(package: Path, out: Path, int8: bool, bundle: bool, no_optimize: bool, batch: int) -> None:
    """Write PACKAGE as a lite model: graph in execution order, memory plan, memory-mapped weights."""
    from ferry.exporters.lite import export_lite

    result = export_lite(package, out, int8=int8, bundle=bundle, optimize=not no_optimize, batch=batch)
    click.echo(result.summary())
