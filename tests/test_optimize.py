"""Each optimizer pass on a small graph, checked numerically in ONNX Runtime (its own optimisations off),
then the whole optimizer on a package through `ferry optimize`."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ferry.cli import main as cli
from ferry.optimize import optimize_model
from ferry.optimize.passes import (
    common_subexpressions,
    constant_folding,
    dead_code,
    fold_batchnorm,
    fuse_activation,
    fuse_bias_gelu,
    identity,
    patterns,
    reshape_dims,
    shape_inference,
    transpose_reshape,
)

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
    assert run(out) is True
    assert run(out) is False or run is patterns.run  # a second run finds nothing left to do
    onnx.checker.check_model(out)
    for want, got in zip(before, run_ort(out, feeds)):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    return out, Counter(n.op_type for n in out.graph.node)


def x(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_constant_folding_evaluates_constant_subgraphs():
    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Mul", ["ab", "ab"], ["sq"]),
        helper.make_node("Add", ["x", "sq"], ["y"]),
    ]
    model = model_of(nodes, [("x", [3])], ["y"], [const("a", [1, 2, 3]), const("b", [1, 1, 1])])
    out, ops = apply(constant_folding.run, model, {"x": x(3)})
    assert ops == {"Add": 1}
    folded = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    np.testing.assert_array_equal(folded["sq"], [4, 9, 16])


def test_dead_code_and_identity_removal():
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["i"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"]),
        helper.make_node("Sigmoid", ["x"], ["unused"]),
        helper.make_node("Identity", ["d"], ["y"]),  # a graph output: the producer takes its name
    ]
    model = model_of(nodes, [("x", [4])], ["y"], [const("orphan", [1.0])])
    out, ops = apply(identity.run, model, {"x": x(4)})
    assert ops == {"Relu": 1, "Sigmoid": 1}
    out, ops = apply(dead_code.run, out, {"x": x(4)})
    assert ops == {"Relu": 1} and not out.graph.initializer


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


def test_batchnorm_folds_into_conv():
    _, ops = apply(fold_batchnorm.run, conv_bn_relu(), {"x": x(1, 3, 8, 8)})
    assert ops == {"Conv": 1, "Relu": 1}


@pytest.mark.parametrize("activation, extra", [("Relu", ()), ("Clip", ("lo", "hi")), ("Sigmoid", ())])
def test_activation_fuses_into_conv(activation, extra):
    model = conv_bn_relu(activation, extra)
    folded, _ = apply(fold_batchnorm.run, model, {"x": x(1, 3, 8, 8)})
    out, ops = apply(fuse_activation.run, folded, {"x": x(1, 3, 8, 8)})
    assert ops == {"FusedConv": 1}
    assert next(a.s for a in out.graph.node[0].attribute if a.name == "activation") == activation.encode()


def test_matmul_add_becomes_gemm_and_takes_the_activation():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    model = model_of(nodes, [("x", [2, 5])], ["y"], [const("w", x(5, 3)), const("b", x(3))])
    _, ops = apply(fuse_activation.run, model, {"x": x(2, 5)})
    assert ops == {"FusedGemm": 1}


def decomposed_layernorm() -> onnx.ModelProto:
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["norm"]),
        helper.make_node("Mul", ["norm", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["y"]),
    ]
    inits = [const("two", 2.0), const("eps", 1e-5), const("gamma", x(16)), const("beta", x(16))]
    return model_of(nodes, [("x", [2, 7, 16])], ["y"], inits, opset=17)


def test_decomposed_layernorm_is_recognised():
    _, ops = apply(patterns.run, decomposed_layernorm(), {"x": x(2, 7, 16)})
    assert ops == {"LayerNormalization": 1}


@pytest.mark.parametrize("half_first", [True, False])
@pytest.mark.parametrize("opset", [17, 20])
def test_decomposed_gelu_is_recognised(half_first, opset):
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["s"]), helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["p"])]  # fmt: skip
    if half_first:
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "p"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "p"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = [const("sqrt2", math.sqrt(2)), const("one", 1.0), const("half", 0.5)]
    model = model_of(nodes, [("x", [3, 8])], ["y"], inits, opset=opset)
    out, ops = apply(patterns.run, model, {"x": x(3, 8)})
    assert ops == {"Gelu": 1}
    assert out.graph.node[0].domain == ("" if opset >= 20 else "com.microsoft")


def test_transposes_cancel_or_merge_and_reshapes_collapse():
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1]),  # cancels
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["t3"], ["t4"], perm=[0, 2, 1]),  # merges with the one before
        helper.make_node("Reshape", ["t4", "s1"], ["r1"]),
        helper.make_node("Reshape", ["r1", "s2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([4, 6], np.int64), "s1"),
             numpy_helper.from_array(np.array([24], np.int64), "s2")]  # fmt: skip
    _, ops = apply(transpose_reshape.run, model_of(nodes, [("x", [2, 3, 4])], ["y"], inits), {"x": x(2, 3, 4)})
    assert ops == {"Transpose": 1, "Reshape": 1}


def test_optimize_cli_checks_parity_and_reports(tmp_path, capsys):
    import ferry

    pkg = ferry.save(conv_bn_relu(), tmp_path / "cnn")
    assert cli(["optimize", str(pkg.root), "-o", str(tmp_path / "opt")]) == 0
    report = capsys.readouterr().out
    assert "3 -> 1 nodes" in report and "fold_batchnorm" in report and "max abs diff" in report
    optimized = ferry.load(tmp_path / "opt")
    assert [n.op_type for n in optimized.graph_proto().graph.node] == ["FusedConv"]


def test_whole_optimizer_keeps_graph_valid_and_equal():
    model = conv_bn_relu()
    out, applied = optimize_model(model)
    assert {"fold_batchnorm", "fuse_activation"} <= set(applied)
    feeds = {"x": x(1, 3, 8, 8)}
    np.testing.assert_allclose(run_ort(out, feeds)[0], run_ort(model, feeds)[0], atol=1e-4)


def test_residual_add_and_activation_fuse_into_the_conv():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),  # the block's skip connection
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits = [const("w1", x(4, 4, 3, 3)), const("b1", x(4)), const("w2", x(4, 4, 3, 3)), const("b2", x(4))]
    model = model_of(nodes, [("x", [1, 4, 6, 6])], ["y"], inits)
    onnx_model = onnx.ModelProto()
    onnx_model.CopyFrom(model)
    onnx_model = onnx.shape_inference.infer_shapes(onnx_model)  # the pass checks the residual's shape
    out, ops = apply(fuse_activation.run, onnx_model, {"x": x(1, 4, 6, 6)})
    assert ops == {"FusedConv": 2}
    assert [len(n.input) for n in out.graph.node] == [3, 4]  # the second carries the residual as Z


def _lite_agrees(model: onnx.ModelProto, feeds: dict) -> None:
    from ferry.exporters.lite import from_onnx
    from ferry.lite import Engine

    want = run_ort(model, feeds)
    got = Engine(from_onnx(model)).run(feeds)
    for w, name in zip(want, [o.name for o in model.graph.output]):
        np.testing.assert_allclose(got[name], w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gelu_domain", ["", "com.microsoft"])
def test_bias_add_and_gelu_become_bias_gelu(gelu_domain):
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["bias", "h"], ["hb"]),  # the bias first: either order is an Add
        helper.make_node("Gelu", ["hb"], ["y"]),
    ]
    inits = [const("w", x(16, 32)), const("bias", x(32))]
    model = model_of(nodes, [("x", [2, 5, 16])], ["y"], inits, opset=20)
    if gelu_domain:  # ORT's own Gelu, as older exports and ferry's pattern pass (below opset 20) write it
        model.graph.node[2].domain = gelu_domain
        model.opset_import.append(helper.make_opsetid(gelu_domain, 1))
    model = onnx.shape_inference.infer_shapes(model)  # the pass checks the bias against x's last axis
    out, ops = apply(fuse_bias_gelu.run, model, {"x": x(2, 5, 16)})
    assert ops == {"MatMul": 1, "BiasGelu": 1}
    _lite_agrees(out, {"x": x(2, 5, 16)})


def test_bias_gelu_is_left_alone_when_the_bias_would_broadcast():
    nodes = [helper.make_node("Add", ["x", "bias"], ["hb"]), helper.make_node("Gelu", ["hb"], ["y"])]
    model = model_of(nodes, [("x", [2, 5, 16])], ["y"], [const("bias", x(1))], opset=20)
    model = onnx.shape_inference.infer_shapes(model)
    assert fuse_bias_gelu.run(model) is False


def reshape_by_shape_of(source: str, dims: list[int], x_shape: list) -> onnx.ModelProto:
    """y = Reshape(x @ w, [those dims of `source`, 2, 4]), the dims read at run time as torch.onnx exports."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Shape", [source], ["s"])]
    inits = [const("w", x(8, 8)), numpy_helper.from_array(np.array([2, 4], np.int64), "tail"),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]  # fmt: skip
    for j, k in enumerate(dims):
        inits.append(numpy_helper.from_array(np.array(k, np.int64), f"k{j}"))
        nodes += [helper.make_node("Gather", ["s", f"k{j}"], [f"g{j}"], axis=0),
                  helper.make_node("Unsqueeze", [f"g{j}", "axes"], [f"u{j}"])]  # fmt: skip
    pieces = [f"u{j}" for j in range(len(dims))] + ["tail"]
    nodes += [
        helper.make_node("Concat", pieces, ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["y"]),
    ]
    model = model_of(nodes, [("x", x_shape)], ["y"], inits)
    shape_inference.run(model)
    return model


@pytest.mark.parametrize(
    ("source", "dims", "x_shape", "target"),
    [
        ("x", [0, 1], ["N", "S", 8], [0, 0, 2, 4]),  # the batch and sequence symbols flow from x to x @ w
        ("h", [0, 1], ["N", "S", 8], [0, 0, 2, 4]),  # the Reshape's own input
        ("x", [0, 1], [3, "S", 8], [3, 0, 2, 4]),  # a dimension known as a number is that number
    ],
)
def test_reshape_target_from_shapes_becomes_a_constant(source, dims, x_shape, target):
    model = reshape_by_shape_of(source, dims, x_shape)
    feeds = {"x": x(3, 5, 8)}
    out, _ = apply(reshape_dims.run, model, feeds)
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    assert list(numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == reshape.input[1]))) == target
    dead_code.run(out)
    assert Counter(n.op_type for n in out.graph.node) == {"MatMul": 1, "Reshape": 1}  # the chain is gone
    if x_shape[0] == "N":  # other batch and sequence sizes still agree
        other = {"x": x(2, 7, 8)}
        np.testing.assert_allclose(run_ort(out, other)[0], run_ort(model, other)[0], atol=1e-5)


def test_reshape_target_is_left_alone_when_dims_may_differ():
    """Swapped dims, [S, N, ...], are not "keep dimension j": position 0 would copy N, not S."""
    for source in ("x", "h"):
        model = reshape_by_shape_of(source, [1, 0], ["N", "S", 8])
        assert reshape_dims.run(model) is False


def test_repeated_work_and_equal_constants_are_merged():
    """Per-layer copies of the same mask bias (equal constants under different names) and of Shape(x)."""
    n = helper.make_node
    nodes = [
        n("Greater", ["x", "zero_a"], ["mask"]),
        n("Where", ["mask", "zero_a", "ninf_a"], ["bias_a"]),
        n("Where", ["mask", "zero_b", "ninf_b"], ["bias_b"]),  # the same, from constants of its own
        n("Add", ["bias_a", "bias_b"], ["s"]),
        n("Shape", ["x"], ["shape_a"]),
        n("Shape", ["x"], ["shape_b"]),
        n("Reshape", ["s", "shape_a"], ["r"]),
        n("Reshape", ["r", "shape_b"], ["y"]),
        n("Relu", ["x"], ["out_a"]),
        n("Relu", ["x"], ["out_b"]),  # both graph outputs: their names stay
    ]
    inits = [const("zero_a", 0.0), const("zero_b", 0.0), const("ninf_a", -np.inf), const("ninf_b", -np.inf)]
    out, ops = apply(common_subexpressions.run, model_of(nodes, [("x", [2, 3])], ["y", "out_a", "out_b"], inits),
                     {"x": x(2, 3)})  # fmt: skip
    assert ops == {"Greater": 1, "Where": 1, "Add": 1, "Shape": 1, "Reshape": 2, "Relu": 2}
    assert sorted(t.name for t in out.graph.initializer) == ["ninf_a", "zero_a"]


def test_random_ops_and_parameters_are_never_merged():
    n = helper.make_node
    nodes = [
        n("RandomUniformLike", ["x"], ["r1"]),
        n("RandomUniformLike", ["x"], ["r2"]),
        n("Sub", ["r1", "r2"], ["d"]),  # not all zeros: two draws
        n("Gemm", ["x", "w1", "b1"], ["g1"]),
        n("Gemm", ["x", "w2", "b2"], ["g2"]),
        n("Add", ["g1", "g2"], ["y"]),
    ]
    inits = [const("w1", x(3, 3)), const("w2", x(3, 3)), const("b1", np.zeros(3)), const("b2", np.zeros(3))]
    model = model_of(nodes, [("x", [2, 3])], ["d", "y"], inits)
    assert common_subexpressions.run(model) is False  # pruning rewrites b1 and b2 in place, apart
    assert Counter(node.op_type for node in model.graph.node)["RandomUniformLike"] == 2


@pytest.mark.parametrize(("k", "folds"), [(-1, True), (2, True), (0, False)])
def test_a_dimension_read_from_a_shape_becomes_a_constant_when_known(k, folds):
    """y = x / sqrt(dimension k of x): the scale torch.onnx computes at run time from the head size."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "k"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["df"], ["root"]),
        helper.make_node("Div", ["x", "root"], ["y"]),
    ]
    model = model_of(nodes, [("x", ["N", 3, 8])], ["y"], [numpy_helper.from_array(np.array(k, np.int64), "k")])
    shape_inference.run(model)
    if not folds:  # dimension 0 is the symbol N: nothing to do
        assert reshape_dims.run(model) is False
        return
    out, ops = apply(reshape_dims.run, model, {"x": x(2, 3, 8)})
    assert "Gather" not in ops
    dead_code.run(out)
    assert "Shape" not in Counter(node.op_type for node in out.graph.node)


def test_a_shape_read_through_a_transpose_reads_the_input_instead():
    """Shape(Transpose(x, perm))[k] is Shape(x)[perm[k]]: the transposed tensor's value is not needed for it."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["t"], ["s"]),
        helper.make_node("Gather", ["s", "k"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t", "df"], ["y"]),
    ]
    model = model_of(nodes, [("x", ["N", "S", "C"])], ["y"], [numpy_helper.from_array(np.array(1, np.int64), "k")])
    shape_inference.run(model)
    out, _ = apply(reshape_dims.run, model, {"x": x(2, 3, 4)})
    shape = next(node for node in out.graph.node if node.op_type == "Shape")
    gather = next(node for node in out.graph.node if node.op_type == "Gather")
    index = next(t for t in out.graph.initializer if t.name == gather.input[1])
    assert shape.input[0] == "x" and int(numpy_helper.to_array(index)) == 2
    np.testing.assert_allclose(run_ort(out, {"x": x(5, 1, 4)})[0].shape, (5, 4, 1))
