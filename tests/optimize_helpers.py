"""Small ONNX graphs for the optimizer's pass tests (`tests/passes/`, one module per pass), and `apply`:
run one pass on a copy, check it changed the graph and that ONNX Runtime (its own optimisations off) gives
the same outputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ferry.optimize.passes import patterns

rng = np.random.default_rng(0)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def model_of(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [vi(n, TensorProto.FLOAT, s) for n, s in inputs], [], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    # Output types come from shape inference, as an exporter would write them.
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.value_info}
    model.graph.output.extend([known[n] for n in outputs])
    return model


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def apply(run, model: onnx.ModelProto, feeds: dict) -> tuple[onnx.ModelProto, Counter]:
    """Run one pass on a copy; check it changed the graph, still runs in ONNX Runtime, and agrees."""
    before = run_ort(model, feeds)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    assert run(out).changed
    assert not run(out).changed or run is patterns.run  # a second run finds nothing left to do
    onnx.checker.check_model(out)
    for want, got in zip(before, run_ort(out, feeds)):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    return out, Counter(n.op_type for n in out.graph.node)


def x(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv_bn_relu(activation: str = "Relu", extra=()) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"]),
        helper.make_node(activation, ["n", *extra], ["y"]),
    ]
    inits = [const("w", x(4, 3, 3, 3)), const("b", x(4)), const("g", x(4)), const("beta", x(4)),
             const("mean", x(4)), const("var", rng.random(4) + 0.5)]  # fmt: skip
    if extra:
        inits += [const("lo", 0.0), const("hi", 6.0)]
    return model_of(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)
