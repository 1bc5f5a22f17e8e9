"""ONNX -> the lite engine's graph: what `ferry export lite` writes and the optimizer's constant folding
evaluates with (the lite kernels). Below both, so that neither imports the other."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ferry.lite.fusion import fuse_attention
from ferry.lite.graph import Graph, Node, Value
from ferry.package.graph import fixed_size


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
