"""The lite engine's attention fusion: the decomposed softmax(a @ b * scale + bias) @ v of torch.onnx and
of eager-mode exports becomes one SoftmaxAttention node, which gives what ONNX Runtime gives for the original."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ferry.exporters.onnx_to_lite import from_onnx
from ferry.lite import Engine
from ferry.lite.ops.attention import SoftmaxAttention

n = helper.make_node
B, H, S, D = 2, 3, 5, 4


def attention_model(style: str, probs_is_output: bool = False, axis: int = -1):
    """q, k, v: (B, S, H, D), split into heads by Transposes as exporters do; mask: (B, 1, 1, S) booleans,
    True = may attend."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(name, f, [B, S, H, D]) for name in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [B, 1, 1, S]))
    weights = {"half": np.array(D**-0.25, np.float32), "zero": np.array([0.0], np.float32),
               "ninf": np.array([-np.inf], np.float32), "root": np.array(D**0.5, np.float32)}  # fmt: skip
    nodes = [
        n("Transpose", ["q"], ["qh"], perm=[0, 2, 1, 3]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v"], ["vh"], perm=[0, 2, 1, 3]),
        n("Where", ["mask", "zero", "ninf"], ["bias"]),
    ]
    if style == "sdpa":  # torch.onnx: the scale split over q and k, NaN rows set to 0
        nodes += [
            n("Mul", ["qh", "half"], ["qs"]),
            n("Mul", ["kt", "half"], ["ks"]),
            n("MatMul", ["qs", "ks"], ["scores"]),
            n("Add", ["scores", "bias"], ["biased"]),
            n("Softmax", ["biased"], ["probs"], axis=axis),
            n("IsNaN", ["probs"], ["nan"]),
            n("Where", ["nan", "zero", "probs"], ["safe"]),
            n("MatMul", ["safe", "vh"], ["y"]),
        ]
    else:  # eager: scores divided by sqrt(d), the bias added first
        nodes += [
            n("MatMul", ["qh", "kt"], ["scores"]),
            n("Div", ["scores", "root"], ["scaled"]),
            n("Add", ["bias", "scaled"], ["biased"]),
            n("Softmax", ["biased"], ["probs"], axis=axis),
            n("MatMul", ["probs", "vh"], ["y"]),
        ]
    outputs = [helper.make_tensor_value_info("y", f, None)]
    if probs_is_output:
        outputs.append(helper.make_tensor_value_info("probs", f, None))
    inits = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def feeds(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {name: rng.standard_normal((B, S, H, D)).astype(np.float32) for name in ("q", "k", "v")}
    mask = rng.random((B, 1, 1, S)) > 0.3
    mask[1] = False  # the second entry may attend to nothing: every row of its scores is -inf
    mask[0, ..., 0] = True
    out["mask"] = mask
    return out


@pytest.mark.parametrize("style", ["sdpa", "eager"])
def test_decomposed_attention_becomes_one_node_and_agrees_with_onnxruntime(style):
    model = attention_model(style)
    graph = from_onnx(model)
    ops = [node.op for node in graph.nodes]
    assert ops == ["Where", "SoftmaxAttention"]  # the heads' transposes and q's and k's scales too
    engine = Engine(graph)
    for seed in (0, 1):
        x = feeds(seed)
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
        for _ in range(2):  # traced, then in the arena
            got = engine.run(x)["y"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    if style == "sdpa":
        assert not np.isnan(got).any() and np.all(got[1] == 0)  # fully masked rows: zeros, as the Where says


def test_no_fusion_where_an_intermediate_is_needed_or_the_axis_differs():
    for model in (attention_model("sdpa", probs_is_output=True), attention_model("eager", axis=2)):
        graph = from_onnx(model)
        assert "SoftmaxAttention" not in [node.op for node in graph.nodes]
        x = feeds()
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
        got = Engine(graph).run(x)
        np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-5, equal_nan=True)


def test_kernel_takes_a_bias_larger_than_the_scores():
    """Scores (1, H, S, S) against a bias per batch entry (B, H, S, S): broadcast as a whole."""
    rng = np.random.default_rng(3)
    a, b, v = rng.standard_normal((1, H, S, D)), rng.standard_normal((1, H, D, S)), rng.standard_normal((1, H, S, D))
    bias = rng.standard_normal((B, H, S, S))
    scores = a @ b * 0.5 + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    want = probs / probs.sum(-1, keepdims=True) @ v
    np.testing.assert_allclose(SoftmaxAttention(a, b, v, bias, scale=0.5), want, rtol=1e-10)
