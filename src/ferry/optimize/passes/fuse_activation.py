"""Fuse an activation into the Conv or Gemm before it (ONNX Runtime's com.microsoft FusedConv/FusedGemm,
which the lite engine also runs), and turn a 2-D MatMul followed by a bias Add into one Gemm."""

from __future__ import annotations

import onnx
from onnx import helper

from ferry.optimize.ir import Index, attr, ensure_domain, shapes
from ferry.optimize.manager import PassResult

MS = "com.microsoft"


def _activation(node: onnx.NodeProto, index: Index) -> tuple[str, list[float]] | None:
    """ORT's name and parameters for an activation node, when FusedConv/FusedGemm can carry it."""
    op = node.op_type
    if op in ("Relu", "Sigmoid", "Tanh"):
        return op, []
    if op == "LeakyRelu":
        return op, [attr(node, "alpha", 0.01)]
    if op == "HardSigmoid":
        return op, [attr(node, "alpha", 0.2), attr(node, "beta", 0.5)]
    if op == "Clip":
        if node.attribute:  # opset < 11: bounds as attributes
            return op, [attr(node, "min", -3.4e38), attr(node, "max", 3.4e38)]
        bounds = [index.const(n) if n else None for n in list(node.input[1:3]) + [""] * (3 - len(node.input))]
        if any(n and b is None for n, b in zip(list(node.input[1:3]), bounds)):
            return None
        lo = float(bounds[0]) if bounds[0] is not None else -3.4e38
        hi = float(bounds[1]) if len(bounds) > 1 and bounds[1] is not None else 3.4e38
        return op, [lo, hi]
    return None


def _fuse_activations(model: onnx.ModelProto, index: Index) -> int:
    count = 0
    for node in list(model.graph.node):
        if not index.alive(node) or node.op_type not in ("Conv", "Gemm") or node.domain not in ("", "ai.onnx"):
            continue
        act = index.sole_consumer(node.output[0])
        found = _activation(act, index) if act is not None else None
        if found is None:
            continue
        name, params = found
        fused = helper.make_node(
            "Fused" + node.op_type, list(node.input), [act.output[0]], name=(node.name or act.output[0]) + "_fused",
            domain=MS, activation=name, **({"activation_params": params} if params else {}),
        )  # fmt: skip
        fused.attribute.extend(node.attribute)
        index.replace([node, act], fused, where=node)
        ensure_domain(model, MS)
        count += 1
    return count


def _fuse_residuals(model: onnx.ModelProto, index: Index) -> int:
    """Conv -> Add(residual) -> activation becomes one FusedConv with the residual as its Z input (the
    ResNet block ending). The residual must have the conv output's exact shape: FusedConv does not
    broadcast Z."""
    dims = shapes(model)
    count = 0
    for conv in list(model.graph.node):
        if not index.alive(conv) or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        add = index.sole_consumer(conv.output[0])
        if add is None or add.op_type != "Add" or len(add.input) != 2 or add.input[0] == add.input[1]:
            continue
        residual = add.input[1] if add.input[0] == conv.output[0] else add.input[0]
        if dims.get(residual) is None or dims.get(residual) != dims.get(conv.output[0]):
            continue
        act = index.sole_consumer(add.output[0])
        found = _activation(act, index) if act is not None else None
        if found is None:
            continue
        name, params = found
        inputs = list(conv.input) + [""] * (3 - len(conv.input)) + [residual]
        fused = helper.make_node(
            "FusedConv", inputs, [act.output[0]], name=(conv.name or act.output[0]) + "_fused_residual",
            domain=MS, activation=name, **({"activation_params": params} if params else {}),
        )  # fmt: skip
        fused.attribute.extend(conv.attribute)
        # The residual may be computed after the conv: the fused node goes where the add was.
        index.replace([conv, add, act], fused, where=add)
        ensure_domain(model, MS)
        count += 1
    return count


def _matmul_add_to_gemm(model: onnx.ModelProto, index: Index) -> int:
    count = 0
    dims = shapes(model)
    for node in list(model.graph.node):
        if not index.alive(node) or node.op_type != "MatMul":
            continue
        add = index.sole_consumer(node.output[0])
        weight = index.const(node.input[1])
        if add is None or add.op_type != "Add" or weight is None or weight.ndim != 2:
            continue
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        bias = index.const(other)
        shape = dims.get(node.input[0])
        if bias is None or bias.ndim > 1 or shape is None or len(shape) != 2:
            continue  # Gemm needs a 2-D A and a bias that broadcasts along rows
        gemm = helper.make_node("Gemm", [node.input[0], node.input[1], other], [add.output[0]],
                                name=(node.name or add.output[0]) + "_gemm")  # fmt: skip
        index.replace([node, add], gemm, where=node)
        count += 1
    return count


def run(model: onnx.ModelProto) -> PassResult:
    index = Index(model.graph)
    gemm = _matmul_add_to_gemm(model, index)
    residual = _fuse_residuals(model, index)
    return PassResult(model, {"gemm": gemm, "residual": residual, "activation": _fuse_activations(model, index)})
