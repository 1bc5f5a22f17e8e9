"""`ferry eval`, `ferry quantize`, `ferry convert-precision`, `ferry prune`: the compression commands."""

from __future__ import annotations

from pathlib import Path

import click

from ferry.compress.metrics import METRICS

_data = click.Path(exists=True, path_type=Path)


@click.command("eval")
@click.argument("package", type=_data)
@click.option("--data", "data", type=_data, required=True, help=".npz, .jsonl, or a folder of images with labels.txt")
@click.option("--metric", type=click.Choice(METRICS), default="top1", show_default=True)
@click.option("--reference", type=_data, help="Package to compare against (agreement, cosine).")
@click.option("--backend", default="onnxruntime", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N samples.")
def eval_command(package, data, metric, reference, backend, batch, limit) -> None:
    """Score PACKAGE on a dataset: accuracy against labels, or agreement with a reference package."""
    from ferry.compress.evaluate import evaluate

    click.echo(str(evaluate(package, data, metric, reference, backend, batch, limit, progress=True)))


@click.command()
@click.argument("package", type=_data)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Package to write.")
@click.option("--calib", type=_data, help="Calibration data (.npz, .jsonl, image folder with labels.txt).")
@click.option("--mode", type=click.Choice(["static", "dynamic", "weight-only"]), default="static", show_default=True)
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse"]), default="minmax",
              show_default=True, help="Activation range calibration.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["auto", "qdq", "qoperator"]), default="auto", show_default=True)
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnxruntime", "openvino", "tensorrt"]),
    default="auto",
    show_default=True,
    help="The engine that will run it; auto picks OpenVINO (with NNCF) when installed.",
)
@click.option("--bits", type=click.Choice(["4", "8"]), default="8", show_default=True, help="For --mode weight-only.")
@click.option("--calib-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--eval", "eval_data", type=_data, help="Evaluation data for the report and the guard.")
@click.option("--metric", type=click.Choice(METRICS), default="top1", show_default=True)
@click.option("--max-drop", type=click.FloatRange(min=0), help="Largest accuracy drop accepted, in points.")
@click.option("--exclude", multiple=True, help="Node name to keep in float (repeat).")
@click.option("--overwrite", is_flag=True)
def quantize(package, out, calib, mode, method, fmt, backend, bits, calib_size, eval_data, metric, max_drop, exclude,
             overwrite) -> None:  # fmt: skip
    """Quantize PACKAGE to int8 (static with calibration, dynamic, or weight-only) and report size, latency
    and accuracy before and after; with --max-drop, keep the layers that hurt most in float."""
    from ferry.compress.quantize import quantize as run

    result = run(package, out, calib, mode=mode, method=method, fmt=fmt, backend=backend, bits=int(bits),
                 calib_size=calib_size, eval_data=eval_data, metric=metric, max_drop=max_drop,
                 exclude=list(exclude), overwrite=overwrite)  # fmt: skip
    click.echo(str(result))


@click.command("convert-precision")
@click.argument("package", type=_data)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Package to write.")
@click.option("--to", "to", type=click.Choice(["fp16", "bf16"]), required=True)
@click.option("--eval", "eval_data", type=_data, help="Evaluation data for parity and accuracy.")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True)
@click.option("--overwrite", is_flag=True)
def convert_precision(package, out, to, eval_data, metric, overwrite) -> None:
    """fp16 weights and compute (sensitive ops kept fp32), or bf16 run by OpenVINO; parity is reported."""
    from ferry.compress.precision import convert_precision as run

    click.echo(str(run(package, out, to, eval_data, metric, overwrite)))


@click.command()
@click.argument("package", type=_data)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Package to write.")
@click.option("--method", type=click.Choice(["structured", "magnitude"]), default="structured", show_default=True)
@click.option("--ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25, show_default=True,
              help="Share of channels (structured) or weights (magnitude) to remove.")  # fmt: skip
@click.option("--calib", type=_data, help="Data to refit the layers after pruned ones (structured).")
@click.option("--eval", "eval_data", type=_data, help="Evaluation data for the report and the guard.")
@click.option("--metric", type=click.Choice(METRICS), default="top1", show_default=True)
@click.option("--max-drop", type=click.FloatRange(min=0), help="Largest accuracy drop accepted, in points.")
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True, help="Batch for the timing.")
@click.option("--overwrite", is_flag=True)
def prune(package, out, method, ratio, calib, eval_data, metric, max_drop, batch, overwrite) -> None:
    """Remove channels (structured, faster) or zero small weights (magnitude, smaller when compressed)."""
    from ferry.compress.prune import prune as run

    result = run(package, out, method, ratio, eval_data, metric, max_drop, batch, overwrite, calib_data=calib)
    click.echo(str(result))
