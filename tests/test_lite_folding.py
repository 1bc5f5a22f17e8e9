"""Shape folding in the lite engine: steps fixed by the weights and the input shapes run once per set of
input shapes; everything that depends on input values, data-dependent shapes or randomness runs every time."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ferry.exporters.onnx_to_lite import from_onnx
from ferry.lite import Engine


def model(nodes, inputs, outputs, weights):
    graph = helper.make_graph(
        nodes,
        "folding",
        [helper.make_tensor_value_info(name, dtype, shape) for name, dtype, shape in inputs],
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in weights.items()],
    )  # fmt: skip
    return Engine(from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)))


def reshape_by_own_shape() -> Engine:
    """y = Reshape(x, [len(x), 2, 3]) * w, with the target computed from Shape(x) as torch.onnx exports it;
    the target is an output too."""
    n = helper.make_node
    return model(
        [
            n("Shape", ["x"], ["shape"]),
            n("Gather", ["shape", "zero"], ["rows"], axis=0),
            n("Unsqueeze", ["rows", "axes"], ["rows1"]),
            n("Concat", ["rows1", "tail"], ["target"], axis=0),
            n("Reshape", ["x", "target"], ["r"]),
            n("Mul", ["r", "w"], ["y"]),
        ],
        [("x", TensorProto.FLOAT, ["N", 6])],
        [("y", TensorProto.FLOAT), ("target", TensorProto.INT64)],
        {
            "zero": np.array(0, np.int64),
            "axes": np.array([0], np.int64),
            "tail": np.array([2, 3], np.int64),
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        },
    )


def test_static_steps_are_the_shape_chain_and_nothing_else():
    engine = reshape_by_own_shape()
    static = {step.node.op for step, fixed in zip(engine.program.steps, engine.static) if fixed}
    assert static == {"Shape", "Gather", "Unsqueeze", "Concat"}


@pytest.mark.parametrize("memory", ["arena", "free", "keep"])
def test_folded_results_follow_the_input_shapes(memory):
    engine = reshape_by_own_shape()
    engine.memory = memory
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    rng = np.random.default_rng(0)
    for rows in (2, 5, 2, 5, 1):
        x = rng.standard_normal((rows, 6)).astype(np.float32)
        np.testing.assert_array_equal(engine.run({"x": x})["y"], x.reshape(rows, 2, 3) * w)
    assert len(engine.folded) == 3  # one set of folded results per input shape
    for results in engine.folded.values():
        assert list(results["target"][1:]) == [2, 3]
        assert not results["target"].flags.writeable  # a kernel writing into it would fail, not corrupt it


def test_later_runs_skip_the_static_steps():
    engine = reshape_by_own_shape()
    calls = []
    for step in engine.program.steps:
        step.fn = (lambda fn, op: lambda *a, **k: (calls.append(op), fn(*a, **k))[1])(step.fn, step.node.op)
    x = np.ones((4, 6), np.float32)
    engine.run({"x": x})
    assert calls == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Mul"]
    calls.clear()
    engine.run({"x": x})
    assert calls == ["Reshape", "Mul"]
    calls.clear()
    engine.run({"x": np.ones((3, 6), np.float32)})  # new shapes: the chain runs again, once
    assert calls[:4] == ["Shape", "Gather", "Unsqueeze", "Concat"]


def test_shapes_that_depend_on_values_are_not_folded():
    """NonZero's output shape depends on x's values: Shape of it must run on every call."""
    n = helper.make_node
    engine = model(
        [
            n("NonZero", ["x"], ["where"]),
            n("Shape", ["where"], ["shape"]),
            n("ReduceProd", ["shape"], ["count"], keepdims=0),
        ],
        [("x", TensorProto.FLOAT, [5])],
        [("count", TensorProto.INT64)],
        {},
    )
    assert not any(engine.static)
    for x in ([0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]):
        assert int(engine.run({"x": np.array(x, np.float32)})["count"]) == sum(x)


def test_random_ops_are_never_folded():
    """Dropout in training mode over a weight has only static inputs, but must draw a new mask each run."""
    n = helper.make_node
    engine = model(
        [n("Dropout", ["w", "ratio", "training"], ["dropped"]), n("Add", ["dropped", "x"], ["y"])],
        [("x", TensorProto.FLOAT, [256])],
        [("y", TensorProto.FLOAT)],
        {"w": np.ones(256, np.float32), "ratio": np.array(0.5, np.float32), "training": np.array(True)},
    )
    assert not engine.static[0]
    x = np.zeros(256, np.float32)
    first, second = engine.run({"x": x})["y"], engine.run({"x": x})["y"]
    assert set(np.unique(first)) <= {0.0, 2.0} and not np.array_equal(first, second)


def test_outputs_that_are_folded_are_the_callers_to_change():
    engine = reshape_by_own_shape()
    x = np.ones((2, 6), np.float32)
    for _ in range(2):  # the second run takes the target from the folded results
        target = engine.run({"x": x})["target"]
        target[0] = 99  # a graph output is the caller's array, never the cached one
    assert list(engine.run({"x": x})["target"]) == [2, 2, 3]


def test_an_engine_keeps_a_bounded_number_of_input_shapes():
    """Plans, folded results and arenas are kept per set of input shapes, at most SHAPES_KEPT of them, the
    least recently used going first; a shape seen again is planned again and still right."""
    from ferry.lite import engine as engine_module

    engine = reshape_by_own_shape()
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    kept = engine_module.SHAPES_KEPT
    for rows in [*range(1, kept + 6), 1, 3]:
        x = np.full((rows, 6), rows, np.float32)
        for _ in range(2):  # the second run is the one in the arena
            np.testing.assert_array_equal(engine.run({"x": x})["y"], x.reshape(rows, 2, 3) * w)
        assert len(engine.plans) <= kept and len(engine.folded) <= kept
        assert len(engine._local.arenas) <= kept
    assert engine.plan_for({"x": np.ones((3, 6), np.float32)}) is not None  # just used: kept
    assert engine.plan_for({"x": np.ones((6, 6), np.float32)}) is None  # least recently used: gone
