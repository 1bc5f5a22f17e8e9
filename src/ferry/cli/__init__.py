"""The `ferry` command. Errors print one line and exit non-zero; `FERRY_DEBUG=1` shows tracebacks."""

from __future__ import annotations

import logging
import os
import sys

import click

from ferry.cli.bench import bench
from ferry.cli.compress import convert_precision, eval_command, prune, quantize
from ferry.cli.convert import convert
from ferry.cli.deploy import deploy
from ferry.cli.export import export, serve_web
from ferry.cli.inspect import inspect
from ferry.cli.optimize import optimize
from ferry.cli.predict import predict
from ferry.cli.serve import serve
from ferry.errors import FerryError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ferry")
@click.option("-v", "--verbose", is_flag=True, help="Log what ferry decides (backend chosen, parity, ...).")
def cli(verbose: bool) -> None:
    """Carry a trained model into production: convert, inspect, optimize, quantize, export, predict, serve."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


for command in (
    convert,
    inspect,
    optimize,
    export,
    predict,
    bench,
    serve,
    eval_command,
    quantize,
    prune,
    convert_precision,
    deploy,
    serve_web,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="ferry", standalone_mode=False)
    except FerryError as exc:
        if os.environ.get("FERRY_DEBUG"):
            raise
        click.echo(f"error: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except OSError as exc:
        if os.environ.get("FERRY_DEBUG"):
            raise
        click.echo(f"error: {exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
