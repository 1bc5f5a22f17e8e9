"""`ferry optimize`: run the graph passes on a package and write the optimised package."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Package to write.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def optimize(package: Path, out: Path, overwrite: bool) -> None:
    """Fold constants and BatchNorm, fuse activations, recognise LayerNorm/GELU, drop dead nodes; the result
    is checked against the original on random inputs before it is written."""
    import ferry
    from ferry.optimize import optimize_package

    report = optimize_package(ferry.load(package), out, overwrite=overwrite)
    click.echo(report)
