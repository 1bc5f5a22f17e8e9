"""`ferry convert SOURCE -o OUT`."""

from __future__ import annotations

from pathlib import Path

import click

from ferry.cli._options import parse_dims


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Package folder to write.")
@click.option("--name", default=None, help="Model name (default: from the source).")
@click.option("--version", "model_version", default="1", show_default=True)
@click.option("--opset", type=int, default=None, help="ONNX opset for converters that take one.")
@click.option("--outputs", default=None, help="Comma-separated outputs to keep; the graph is pruned to them.")
@click.option(
    "--inputs", default=None, help="A frozen GraphDef's input tensors, comma-separated (default: its placeholders)."
)
@click.option("--signature", default=None, help="A SavedModel's or .tflite's signature (default: serving_default).")
@click.option("--dim", "dims", multiple=True, help="Name a dynamic dimension: OLD=NEW or INPUT:AXIS=NEW.")
@click.option("--labels", type=click.Path(exists=True, path_type=Path), help="Text file, one label per line.")
@click.option("--check/--no-check", default=True, show_default=True, help="Compare with the source numerically.")
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--rtol", type=float, default=1e-3, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--trust-pickle", is_flag=True, help="Read a .pkl/.joblib file: it runs code; only for files you trust.")
def convert(
    source,
    output,
    name,
    model_version,
    opset,
    outputs,
    inputs,
    signature,
    dims,
    labels,
    check,
    atol,
    rtol,
    overwrite,
    trust_pickle,
) -> None:
    """Convert an ONNX file, a PaddlePaddle inference model, a scikit-learn model (.skops, or a pickle
    with --trust-pickle), a Keras file (.keras, .h5) or a TensorFlow model (SavedModel folder, frozen
    GraphDef .pb, .tflite) into a package.

    PyTorch modules are Python objects: use ferry.export(module, example_inputs, path) from Python.
    """
    import ferry

    kwargs = {
        "name": name,
        "version": model_version,
        "check": check,
        "atol": atol,
        "rtol": rtol,
        "overwrite": overwrite,
    }
    if trust_pickle:
        kwargs["trust_pickle"] = True
    if outputs:
        kwargs["outputs"] = [o.strip() for o in outputs.split(",") if o.strip()]
    if inputs:
        kwargs["inputs"] = [i.strip() for i in inputs.split(",") if i.strip()]
    if signature:
        kwargs["signature"] = signature
    if dims:
        kwargs["dim_names"] = parse_dims(dims)
    if labels:
        kwargs["labels"] = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    if opset is not None:
        kwargs["opset"] = opset
    if name is None:
        kwargs.pop("name")
    result = ferry.convert(source, output, **kwargs)
    click.echo(str(result))
