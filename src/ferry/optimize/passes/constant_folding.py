"""Evaluate nodes whose inputs are all constants, with the lite engine's own kernels, and store the results
as initializers. Quantize/Dequantize nodes are left alone: folding them would undo a quantized model."""

from __future__ import annotations

import numpy as np
import onnx

from ferry.exporters.onnx_to_lite import attribute_value
from ferry.lite.registry import lookup
from ferry.optimize.ir import Index
from ferry.optimize.manager import PassResult

KEEP = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "RandomNormal", "RandomUniform",
        "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial", "If", "Loop", "Scan"}  # fmt: skip
MAX_ELEMENTS = 1 << 24  # do not blow up the file with huge folded tensors


def run(model: onnx.ModelProto) -> PassResult:
    graph = model.graph
    index = Index(graph)
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    folded = []
    values: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type in KEEP or any(o in index.outputs for o in node.output):
            continue
        inputs = []
        for name in node.input:
            value = values.get(name) if name in values else (index.const(name) if name else None)
            if name and value is None:
                break
            inputs.append(value)
        else:
            fn = lookup(node.domain, node.op_type, opsets.get(node.domain, 1))
            graphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            if fn is None or any(a.type in graphs for a in node.attribute):
                continue
            try:
                with np.errstate(all="ignore"):
                    result = fn(*inputs, **{a.name: attribute_value(a, opsets) for a in node.attribute})
            except Exception:  # noqa: BLE001  (leave what we cannot evaluate to the engine)
                continue
            result = result if isinstance(result, tuple) else (result,)
            if not all(isinstance(r, np.ndarray) and r.size <= MAX_ELEMENTS for r in result):
                continue
            for name, value in zip(node.output, result):
                if name:
                    values[name] = value
            folded.append(node)
    if not folded:
        return PassResult(model)
    index.remove(folded)
    for name, value in values.items():
        if index.used(name):
            index.set_initializer(name, np.asarray(value))
    return PassResult(model, {"folded": len(folded)})
