"""Recognise decomposed LayerNormalization and GELU and replace them with the single op.

LayerNorm:  mean = ReduceMean(x); d = x - mean; var = ReduceMean(d*d or d^2); y = d / Sqrt(var + eps)
            then * gamma + beta                               -> LayerNormalization(x, gamma, beta)
GELU:       x * 0.5 * (1 + Erf(x / sqrt(2)))  (either grouping)  -> Gelu (opset 20) or com.microsoft.Gelu
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from ferry.optimize.ir import Index, attr, ensure_domain, opset, position
from ferry.optimize.manager import PassResult


def _other(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _scalar(index: Index, name: str) -> float | None:
    value = index.const(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _last_axis_mean(node: onnx.NodeProto, index: Index) -> bool:
    if node is None or node.op_type != "ReduceMean" or not attr(node, "keepdims", 1):
        return False
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1:
        value = index.const(node.input[1])
        axes = None if value is None else value.reshape(-1).tolist()
    return axes is not None and list(axes) == [-1]


def _layernorm(model: onnx.ModelProto, index: Index) -> int:
    graph = model.graph
    if opset(model) < 17:
        return 0
    count = 0
    for mean in list(graph.node):
        if not index.alive(mean) or not _last_axis_mean(mean, index):
            continue
        x = mean.input[0]
        sub = next(
            (n for n in index.consumers[mean.output[0]] if n.op_type == "Sub" and n.input == [x, mean.output[0]]), None
        )
        if sub is None:
            continue
        d = sub.output[0]
        readers = index.consumers[d]
        sq = next((n for n in readers if (n.op_type == "Pow" and _scalar(index, n.input[1]) == 2.0)
                   or (n.op_type == "Mul" and n.input[0] == n.input[1] == d)), None)  # fmt: skip
        div = next((n for n in readers if n.op_type == "Div" and n.input[0] == d), None)
        if sq is None or div is None or len(readers) != 2:
            continue
        var = index.sole_consumer(sq.output[0])
        if not _last_axis_mean(var, index):
            continue
        add = index.sole_consumer(var.output[0])
        eps = _scalar(index, _other(add, var.output[0])) if add is not None and add.op_type == "Add" else None
        sqrt = index.sole_consumer(add.output[0]) if eps is not None else None
        if sqrt is None or sqrt.op_type != "Sqrt" or div.input[1] != sqrt.output[0]:
            continue
        mul = index.sole_consumer(div.output[0])
        gamma = _other(mul, div.output[0]) if mul is not None and mul.op_type == "Mul" else None
        if gamma is None or index.const(gamma) is None:
            continue
        bias_add = index.sole_consumer(mul.output[0])
        beta = _other(bias_add, mul.output[0]) if bias_add is not None and bias_add.op_type == "Add" else None
        if beta is not None and index.const(beta) is None:
            beta = None
        last = bias_add if beta is not None else mul
        inputs = [x, gamma] + ([beta] if beta else [])
        ln = helper.make_node("LayerNormalization", inputs, [last.output[0]], axis=-1, epsilon=eps,
                              name=(mean.name or last.output[0]) + "_layernorm")  # fmt: skip
        doomed = [mean, sub, sq, var, add, sqrt, div, mul] + ([bias_add] if beta else [])
        index.replace(doomed, ln, where=min(doomed, key=lambda n: position(graph, n)))
        count += 1
    return count


def _gelu(model: onnx.ModelProto, index: Index) -> int:
    graph = model.graph
    count = 0
    for erf in list(graph.node):
        if not index.alive(erf) or erf.op_type != "Erf":
            continue
        scale = index.producer.get(erf.input[0])
        if scale is None or scale.op_type not in ("Div", "Mul"):
            continue
        c = _scalar(index, scale.input[1])
        x = scale.input[0]
        if c is None or not (
            (scale.op_type == "Div" and abs(c - math.sqrt(2)) < 1e-3)
            or (scale.op_type == "Mul" and abs(c - 1 / math.sqrt(2)) < 1e-3)
        ):
            continue
        plus = index.sole_consumer(erf.output[0])
        if plus is None or plus.op_type != "Add" or _scalar(index, _other(plus, erf.output[0])) != 1.0:
            continue
        first = index.sole_consumer(plus.output[0])
        if first is None or first.op_type != "Mul":
            continue
        partner = _other(first, plus.output[0])
        doomed = [scale, erf, plus, first]
        if partner == x:  # (x * (1 + erf)) * 0.5
            half = index.sole_consumer(first.output[0])
            if half is None or half.op_type != "Mul" or _scalar(index, _other(half, first.output[0])) != 0.5:
                continue
            doomed.append(half)
            out = half.output[0]
        else:  # (x * 0.5) * (1 + erf)
            half = index.producer.get(partner)
            if half is None or half.op_type != "Mul" or x not in half.input:
                continue
            if _scalar(index, _other(half, x)) != 0.5 or index.sole_consumer(half.output[0]) is not first:
                continue
            doomed.append(half)
            out = first.output[0]
        if opset(model) >= 20:
            gelu = helper.make_node("Gelu", [x], [out], name=out + "_gelu")
        else:
            gelu = helper.make_node("Gelu", [x], [out], name=out + "_gelu", domain="com.microsoft")
            ensure_domain(model, "com.microsoft")
        index.replace(doomed, gelu, where=min(doomed, key=lambda n: position(graph, n)))
        count += 1
    return count


def run(model: onnx.ModelProto) -> PassResult:
    index = Index(model.graph)
    return PassResult(model, {"layernorm": _layernorm(model, index), "gelu": _gelu(model, index)})
