"""Options and helpers several commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ferry.inference.backends import BACKEND_NAMES

DEMO_ROOT = Path(__file__).resolve().parents[1] / "demo"


def demo_option(help: str) -> Callable[..., Any]:
    """`--demo` alone for the bundled digits model, `--demo ocr` for PP-OCR as a pipeline."""
    return click.option("--demo", type=click.Choice(["digits", "ocr"]), is_flag=False, flag_value="digits",
                        default=None, help=help)  # fmt: skip


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True)(fn)
    fn = click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the engine.")(fn)
    fn = click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)(fn)
    return fn


def parse_dims(values: tuple[str, ...]) -> dict[str, str]:
    """`--dim old=new` pairs (or `input:axis=name`) as a mapping."""
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected OLD=NEW, e.g. DynamicDimension.0=batch")
        old, new = item.split("=", 1)
        out[old] = new
    return out
