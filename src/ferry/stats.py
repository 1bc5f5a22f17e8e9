"""What `ferry inspect` reports: signature, op histogram, parameters, a FLOPs estimate, file sizes.

FLOPs are counted for the ops that dominate (Conv, ConvTranspose, MatMul, Gemm, attention-free
transformers included) from shapes inferred with every dynamic dimension set to 1 unless given;
elementwise ops count one per output element. It is an estimate, and says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from ferry.package import ModelPackage
from ferry.package.graph import fixed_size, op_histogram


def parameter_count(model: onnx.ModelProto) -> int:
    """Initializer elements, float Constant nodes (paddle2onnx and PP-OCR's files keep weights there: the
    zoo counted 0 parameters for them), and the numbers that ai.onnx.ml ops (scikit-learn's trees, linear
    models, SVMs) keep in their attributes instead."""
    total = sum(math.prod(t.dims) for t in model.graph.initializer)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            total += sum(math.prod(a.t.dims) for a in node.attribute if a.name == "value" and a.t.data_type in floats)
        if node.domain == "ai.onnx.ml":
            for a in node.attribute:
                total += len(a.floats) + len(a.ints) + (math.prod(a.t.dims) if a.HasField("t") else 0)
    return total


def _ml_flops(node: onnx.NodeProto, rows: int) -> int | None:
    """FLOPs of one ai.onnx.ml op for `rows` rows (a comparison or a multiply-add counts two), or None."""
    values = {a.name: a for a in node.attribute}
    if node.op_type in ("LinearClassifier", "LinearRegressor") and "coefficients" in values:
        return 2 * len(values["coefficients"].floats) * rows
    if node.op_type in ("SVMClassifier", "SVMRegressor") and "support_vectors" in values:
        return 2 * len(values["support_vectors"].floats) * rows
    if node.op_type.startswith("TreeEnsemble") and "nodes_treeids" in values:
        sizes: dict[int, int] = {}
        for tree in values["nodes_treeids"].ints:
            sizes[tree] = sizes.get(tree, 0) + 1
        # One comparison per level on the way down a balanced tree of n nodes.
        return 2 * sum(max(1, math.ceil(math.log2(n + 1))) for n in sizes.values()) * rows
    return None


def _concrete(model: onnx.ModelProto, dims: dict[str, int]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in m.graph.input:
        for d in value.type.tensor_type.shape.dim:
            if fixed_size(d) is None:
                d.dim_value = dims.get(d.dim_param, 1)
    try:
        return onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        return m


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if all(fixed_size(d) is not None for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def estimate_flops(model: onnx.ModelProto, dims: dict[str, int] | None = None) -> int:
    """Multiply-adds count as two FLOPs. Nodes whose shapes stay unknown count zero."""
    inferred = _concrete(model, dims or {})
    shapes = _shapes(inferred)
    total = 0
    rows = (dims or {}).get("batch", 1)
    for node in inferred.graph.node:
        if node.domain == "ai.onnx.ml":
            ml = _ml_flops(node, rows)
            if ml is not None:
                total += ml
                continue
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in shapes:
            w = shapes[node.input[1]]
            per_output = 2 * math.prod(w[1:])  # (C_in / group) * kernel, times two
            total += per_output * math.prod(out)
        elif node.op_type in ("MatMul", "Gemm") and node.input[0] in shapes:
            a = shapes[node.input[0]]
            k = a[-1] if node.op_type == "MatMul" or not _attr(node, "transA") else a[-2]
            total += 2 * k * math.prod(out)
        else:
            total += math.prod(out)
    return int(total)


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def describe(package: ModelPackage, dims: dict[str, int] | None = None) -> dict[str, Any]:
    model = package.full_model()
    manifest = package.manifest
    sizes = {}
    if package.root is not None:
        sizes = {name: entry.size for name, entry in manifest.files.items()}
    else:
        sizes = {package.model_path.name: package.model_path.stat().st_size}
    return {
        "name": manifest.name,
        "version": manifest.version,
        "path": str(package.root or package.model_path),
        "signature": manifest.signature.to_dict(),
        "ops": op_histogram(model),
        "nodes": len(model.graph.node),
        "parameters": parameter_count(model),
        "flops_estimate": estimate_flops(model, dims),
        "flops_dims": dims or {},
        "files": sizes,
        "total_bytes": int(np.sum(list(sizes.values()))),
        "provenance": dict(vars(manifest.provenance)),
        "preprocessing": manifest.preprocessing,
        "postprocessing": manifest.postprocessing,
        "labels": manifest.labels,
        "tuning": manifest.tuning,
        "compression": manifest.compression,
    }
