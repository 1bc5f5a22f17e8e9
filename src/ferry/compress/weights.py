"""Store quantized weights as integers. Quantizers that simulate quantization (NNCF's ONNX backend) leave
float32 weights behind a QuantizeLinear -> DequantizeLinear pair; folding the QuantizeLinear into an int8
initializer keeps the same numbers and makes the file about 4x smaller."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ferry.optimize.ir import Index, remove


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """Replace constant-weight QuantizeLinear nodes by their integer result; returns how many were folded."""
    graph = model.graph
    folded = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear":
            continue
        index = Index(graph)
        w = index.const(node.input[0])
        scale = index.const(node.input[1])
        zp = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None or scale is None or w.dtype.kind != "f":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        target = zp.dtype if zp is not None else np.dtype(np.uint8)
        if target not in (np.dtype(np.int8), np.dtype(np.uint8)):
            continue
        shape = [1] * w.ndim
        if scale.size > 1:
            shape[axis % w.ndim] = -1
        s = scale.reshape(shape)
        z = 0 if zp is None else zp.astype(np.int64).reshape(shape)
        info = np.iinfo(target)
        q = np.clip(np.rint(w / s) + z, info.min, info.max).astype(target)
        name = node.output[0]
        graph.initializer.append(numpy_helper.from_array(q, name))
        remove(graph, [node])
        folded += 1
    if folded:
        from ferry.optimize.passes import dead_code

        dead_code.run(model)
    return folded


def int8_weights_for(model: onnx.ModelProto, nodes: list[str] | None = None) -> int:
    """Weight-only int8 for the named Conv/MatMul/Gemm nodes (default: every one whose weight is still
    float, whether the guard or the quantizer itself left it out of full int8):
    their activations stay float, their weights become per-output-channel symmetric int8 behind a
    DequantizeLinear. Weight rounding costs little accuracy next to activation quantization, and the file
    shrinks as if the layer were quantized. Returns how many weights were converted."""
    from onnx import helper

    graph = model.graph
    wanted = None if nodes is None else set(nodes)
    done = 0
    for node in list(graph.node):
        if wanted is not None and node.name not in wanted:
            continue
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        index = Index(graph)
        w = index.const(node.input[1])
        if w is None or w.dtype != np.float32 or w.ndim < 2 or node.input[1] not in index.inits:
            continue
        if node.op_type == "Conv" or (
            node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        ):
            axis = 0
        else:
            axis = w.ndim - 1  # MatMul / Gemm weights are (in, out): one scale per output column
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        scale = np.abs(moved).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = node.input[1]
        names = [f"{base}_wq", f"{base}_wscale", f"{base}_wzero", f"{base}_wdq"]
        graph.initializer.extend([
            numpy_helper.from_array(q, names[0]),
            numpy_helper.from_array(scale.astype(np.float32), names[1]),
            numpy_helper.from_array(np.zeros(len(scale), np.int8), names[2]),
        ])  # fmt: skip
        dq = helper.make_node("DequantizeLinear", names[:3], [names[3]], name=names[3], axis=axis)
        position = next(i for i, n in enumerate(graph.node) if n is node)
        graph.node.insert(position, dq)
        node.input[1] = names[3]
        done += 1
    if done:
        from ferry.optimize.passes import dead_code

        dead_code.run(model)
    return done
