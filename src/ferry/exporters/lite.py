"""ONNX -> the lite engine's graph (and on to the compact file). Runs on the build machine, with onnx."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ferry.converters.parity import random_feeds
from ferry.lite.engine import Engine, shape_key
from ferry.lite.errors import UnsupportedOpError
from ferry.lite.format import save
from ferry.lite.fusion import fuse_attention
from ferry.lite.graph import Graph, Node, Value
from ferry.lite.planner import Plan
from ferry.package.graph import fixed_size
from ferry.package.package import swap_in


def _dtype(elem_type: int) -> str | None:
    if elem_type == 0:
        return None
    if elem_type == onnx.TensorProto.STRING:
        return "object"
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _value(info: onnx.ValueInfoProto) -> Value:
    kind = info.type.WhichOneof("value")
    if kind == "tensor_type":
        t = info.type.tensor_type
        shape = None
        if t.HasField("shape"):
            shape = [fixed_size(d) or d.dim_param or None for d in t.shape.dim]
        return Value(info.name, _dtype(t.elem_type), shape)
    if kind == "sequence_type":
        return Value(info.name, "sequence")
    if kind == "optional_type":
        return Value(info.name, "optional")
    return Value(info.name)


def attribute_value(attr: onnx.AttributeProto, opsets: dict[str, int]) -> Any:
    A = onnx.AttributeProto
    if attr.type == A.GRAPH:
        return graph_from_onnx(attr.g, opsets)
    if attr.type == A.GRAPHS:
        return [graph_from_onnx(g, opsets) for g in attr.graphs]
    if attr.type == A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type == A.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    if attr.type == A.SPARSE_TENSOR:
        return _dense(attr.sparse_tensor)
    value = helper.get_attribute_value(attr)
    if attr.type == A.STRING:
        return value.decode("utf-8")
    if attr.type == A.STRINGS:
        return [v.decode("utf-8") for v in value]
    if attr.type in (A.INTS, A.FLOATS):
        return list(value)
    return value


def _dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def graph_from_onnx(g: onnx.GraphProto, opsets: dict[str, int]) -> Graph:
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    weights.update({s.values.name: _dense(s) for s in g.sparse_initializer})
    nodes = [
        Node(
            op=n.op_type,
            inputs=list(n.input),
            outputs=list(n.output),
            attrs={a.name: attribute_value(a, opsets) for a in n.attribute},
            domain="" if n.domain == "ai.onnx" else n.domain,
            name=n.name,
        )
        for n in g.node
    ]
    return Graph(
        nodes=nodes,
        inputs=[_value(v) for v in g.input if v.name not in weights],
        outputs=[_value(v) for v in g.output],
        weights=weights,
        opsets=dict(opsets),
        name=g.name or "model",
    )


def from_onnx(model: onnx.ModelProto | str) -> Graph:
    """The lite graph of an ONNX model (a path or a loaded ModelProto)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    graph = graph_from_onnx(model.graph, opsets)
    fuse_attention(graph)
    return graph


# --- export: package -> .flite (and a folder that runs with numpy alone) ------------------------------------


@dataclass
class LiteExport:
    path: Path
    bytes: int
    onnx_bytes: int
    int8: bool
    ops: dict[str, int]
    plan: Plan | None
    bundle: Path | None = None
    optimized: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # the bundle's example inputs, by input name

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} ({self.bytes / 2**20:.2f} MiB; the ONNX weights were {self.onnx_bytes / 2**20:.2f} MiB"
            + (", weights stored as per-channel int8: smaller, not faster)" if self.int8 else ")"),
            f"{sum(self.ops.values())} nodes, {len(self.ops)} op types",
        ]
        if self.optimized:
            lines.append("optimizer: " + ", ".join(self.optimized))
        if self.plan is not None:
            lines.append("memory plan: " + self.plan.summary())
        if self.bundle is not None:
            lines.append(f"bundle: {self.bundle} (run: cd {self.bundle} && {run_line(self.inputs, repeat=10)})")
        return "\n".join(lines)


def export_lite(
    package: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    bundle: bool = False,
    optimize: bool = True,
    batch: int = 1,
) -> LiteExport:
    """Write `package` as a compact lite model at `out` (a .flite file, or with `bundle` a folder holding the
    model and the runtime). Unsupported ops are refused here, all listed, before anything is written."""
    from ferry.errors import UnsupportedModelError
    from ferry.package import load

    pkg = load(package)
    model = pkg.full_model()
    passes: list[str] = []
    if optimize:
        from ferry.optimize import optimize_model

        model, passes = optimize_model(model)
    graph = from_onnx(model)
    graph.name = pkg.name
    try:
        engine = Engine(graph)
    except UnsupportedOpError as exc:
        raise UnsupportedModelError(f"model {pkg.name!r} cannot run on the lite engine: {exc}") from None
    feeds = random_feeds(pkg.signature, batch=batch)
    engine.run(feeds)  # the first run records tensor sizes and makes the memory plan
    plan = engine.plan_for(feeds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plans = {shape_key(feeds): plan} if plan else None
    if bundle:
        # The folder is built aside and moved in whole; a file is written whole by lite.format.save.
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            save(graph, staging / "model.flite", plans=plans, int8_min_elements=1024 if int8 else None)
            _copy_runtime(staging, feeds)
            swap_in(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        target = out / "model.flite"
    else:
        target = out
        save(graph, target, plans=plans, int8_min_elements=1024 if int8 else None)
    ops: dict[str, int] = {}
    for node in graph.nodes:
        ops[node.op] = ops.get(node.op, 0) + 1
    onnx_bytes = sum(a.nbytes for a in graph.weights.values())
    inputs = sorted(feeds) if bundle else []
    return LiteExport(
        target, target.stat().st_size, onnx_bytes, int8, ops, plan, out if bundle else None, passes, inputs
    )


def _copy_runtime(folder: Path, feeds: dict[str, np.ndarray]) -> None:
    """The lite runtime as a top-level package `ferry_lite` beside the model (numpy is all it needs), and
    the inputs the export ran with, so that the bundle's run line works as pasted."""
    import ferry.lite

    source = Path(ferry.lite.__file__).parent
    shutil.copytree(source, folder / "ferry_lite", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "example_inputs").mkdir()
    for name, array in feeds.items():
        np.save(folder / "example_inputs" / f"{_file_name(name)}.npy", array)
    (folder / "README.txt").write_text(
        "A ferry lite model and its runtime. Needs Python 3.10+ and numpy, nothing else.\n\n"
        f"    {run_line(sorted(feeds), output=True)}\n"
        "    python -c \"import ferry_lite; m = ferry_lite.load('model.flite'); print(m.input_names)\"\n",
        encoding="utf-8",
    )


def _file_name(input_name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in input_name)


def run_line(inputs: list[str], output: bool = False, repeat: int = 0) -> str:
    """The command that runs a bundle on its example inputs, from inside the bundle's folder."""
    parts = ["python -m ferry_lite model.flite"]
    parts += [f"--input {name}=example_inputs/{_file_name(name)}.npy" for name in inputs]
    if output:
        parts.append("--output out.npz")
    if repeat:
        parts.append(f"--repeat {repeat}")
    return " ".join(parts)
