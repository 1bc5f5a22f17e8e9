"""Run a TensorFlow model in its own framework, for `ferry.converters.tensorflow`: in a child process.

`python -m ferry.converters.tensorflow_worker KIND SOURCE WORKDIR [--signature S] [--inputs A,B]
[--outputs C]` reads `WORKDIR/feeds.npz` when it exists (made-up inputs otherwise), runs the model, and
writes `WORKDIR/spec.json` (each input's and output's name, the tensor name tf2onnx gives it, dtype and
shape; -1 for a dynamic axis) and `WORKDIR/reference.npz` (the feeds, then the outputs). A model TensorFlow
cannot read, or a feed it refuses, exits 2 with one line on stderr.

TensorFlow stays out of ferry's own process: it takes 9 s and 600 MB to import (measured here, 2.21) and
brings its own protobuf and thread pools into a process that already holds torch and ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH = 2  # made-up inputs: a dynamic axis 0 gets 2 rows, so the check crosses rows


class WorkerError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry.converters.tensorflow_worker")
    parser.add_argument("kind", choices=["saved_model", "graphdef", "tflite"])
    parser.add_argument("source")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--inputs", default="")
    parser.add_argument("--outputs", default="")
    args = parser.parse_args(argv)
    feeds_path = args.workdir / "feeds.npz"
    given = dict(np.load(feeds_path, allow_pickle=False)) if feeds_path.exists() else None
    try:
        import tensorflow as tf

        run = {"saved_model": _saved_model, "graphdef": _graphdef, "tflite": _tflite}[args.kind]
        spec, feeds, outputs = run(tf, args, given)
    except WorkerError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except Exception as exc:  # TensorFlow's own errors: one line for the parent to quote
        print(
            f"TensorFlow: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}", file=sys.stderr
        )
        return 2
    (args.workdir / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    arrays = {f"in/{k}": v for k, v in feeds.items()} | {f"out/{k}": np.asarray(v) for k, v in outputs.items()}
    np.savez(args.workdir / "reference.npz", **arrays)
    return 0


def _entry(name: str, tensor: str, dtype: Any, shape: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tensor": tensor,
        "dtype": np.dtype(dtype).name,
        "shape": [-1 if d is None else int(d) for d in shape],
    }


def _made_up(entries: list[dict[str, Any]], given: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    if given is not None and "__single__" in given:
        if len(entries) != 1:
            raise WorkerError(f"the model takes {[e['name'] for e in entries]}: pass example_inputs as a dict")
        return {entries[0]["name"]: given["__single__"]}
    if given is not None:
        missing = [e["name"] for e in entries if e["name"] not in given]
        if missing:
            raise WorkerError(f"example_inputs lacks {missing}; the model takes {[e['name'] for e in entries]}")
        return {e["name"]: given[e["name"]] for e in entries}
    rng = np.random.default_rng(0)
    feeds = {}
    for e in entries:
        shape = [BATCH if d < 0 and axis == 0 else d for axis, d in enumerate(e["shape"])]
        if any(d < 0 for d in shape):
            raise WorkerError(
                f"input {e['name']!r} has dynamic dimensions besides the batch {e['shape']}: pass example_inputs"
            )
        dtype = np.dtype(e["dtype"])
        if dtype.kind == "f":
            feeds[e["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iub":
            feeds[e["name"]] = rng.integers(0, 2, shape).astype(dtype)
        else:
            raise WorkerError(f"input {e['name']!r} is {dtype}: pass example_inputs")
    return feeds


def _saved_model(tf: Any, args: argparse.Namespace, given: Any) -> tuple[list, dict, dict]:
    loaded = tf.saved_model.load(args.source)
    if args.signature not in loaded.signatures:
        raise WorkerError(f"no signature {args.signature!r}; it has {sorted(loaded.signatures)}")
    function = loaded.signatures[args.signature]
    specs = function.structured_input_signature[1]
    inputs = [_entry(n, n, s.dtype.as_numpy_dtype, s.shape.as_list()) for n, s in sorted(specs.items())]
    feeds = _made_up(inputs, given)
    result = function(**{n: tf.constant(v) for n, v in feeds.items()})
    outputs = {n: t.numpy() for n, t in result.items()}
    out = [_entry(n, n, v.dtype, function.structured_outputs[n].shape.as_list()) for n, v in outputs.items()]
    return {"inputs": inputs, "outputs": out}, feeds, outputs


def _graphdef(tf: Any, args: argparse.Namespace, given: Any) -> tuple[list, dict, dict]:
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(args.source).read_bytes())
    except Exception as exc:
        raise WorkerError(f"not a frozen TensorFlow GraphDef ({exc})") from None
    consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    input_tensors = _split(args.inputs) or [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"]
    output_tensors = _split(args.outputs) or [
        f"{n.name}:0"
        for n in graph_def.node
        if n.name not in consumed and n.op not in ("NoOp", "Const", "Placeholder", "Assert")
    ]
    if not input_tensors or not output_tensors:
        raise WorkerError(
            f"{args.source}: could not tell its inputs and outputs: pass inputs= and outputs= (tensor names)"
        )
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    try:
        ins = [graph.get_tensor_by_name(t) for t in input_tensors]
        outs = [graph.get_tensor_by_name(t) for t in output_tensors]
    except (KeyError, ValueError) as exc:
        raise WorkerError(f"{exc}") from None
    inputs = [_entry(_plain(t.name), t.name, t.dtype.as_numpy_dtype, _dims(t)) for t in ins]
    feeds = _made_up(inputs, given)
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run(outs, {t: feeds[e["name"]] for t, e in zip(ins, inputs)})
    outputs = {_plain(t.name): v for t, v in zip(outs, values)}
    out = [_entry(_plain(t.name), t.name, v.dtype, _dims(t)) for t, v in zip(outs, values)]
    return {"inputs": inputs, "outputs": out}, feeds, outputs


def _tflite(tf: Any, args: argparse.Namespace, given: Any) -> tuple[list, dict, dict]:
    interpreter = tf.lite.Interpreter(model_path=args.source)
    tensor_names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    signatures = interpreter.get_signature_list()
    if signatures:
        key = args.signature if args.signature in signatures else next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        in_details, out_details = runner.get_input_details(), runner.get_output_details()
    else:  # an old converter's file: plain tensor names
        interpreter.allocate_tensors()
        in_details = {d["name"]: d for d in interpreter.get_input_details()}
        out_details = {d["name"]: d for d in interpreter.get_output_details()}
        runner = None
    inputs = [
        _entry(n, tensor_names[d["index"]], d["dtype"], [x if x >= 0 else None for x in d["shape_signature"]])
        for n, d in in_details.items()
    ]
    feeds = _made_up(inputs, given)
    if runner is not None:
        outputs = {n: np.asarray(v) for n, v in runner(**feeds).items()}
    else:
        for name, d in in_details.items():
            interpreter.resize_tensor_input(d["index"], feeds[name].shape)
        interpreter.allocate_tensors()
        for name, d in in_details.items():
            interpreter.set_tensor(d["index"], feeds[name])
        interpreter.invoke()
        outputs = {n: interpreter.get_tensor(d["index"]) for n, d in out_details.items()}
    out = [
        _entry(n, tensor_names[d["index"]], outputs[n].dtype, [x if x >= 0 else None for x in d["shape_signature"]])
        for n, d in out_details.items()
    ]
    return {"inputs": inputs, "outputs": out}, feeds, outputs


def _split(names: str) -> list[str]:
    return [n.strip() if ":" in n else f"{n.strip()}:0" for n in names.split(",") if n.strip()]


def _plain(tensor: str) -> str:
    """`x:0` -> `x`; a node's second output `x:1` -> `x_1`."""
    node, _, index = tensor.rpartition(":")
    return node if index == "0" else f"{node}_{index}"


def _dims(tensor: Any) -> list[int | None]:
    return tensor.shape.as_list() if tensor.shape.rank is not None else []


if __name__ == "__main__":
    sys.exit(main())
