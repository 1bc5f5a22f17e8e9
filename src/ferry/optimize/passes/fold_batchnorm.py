"""Fold an inference BatchNormalization into the Conv before it: new weights and bias, one node fewer."""

from __future__ import annotations

import numpy as np
import onnx

from ferry.optimize.ir import Index, attr, fresh_name
from ferry.optimize.manager import PassResult


def run(model: onnx.ModelProto) -> PassResult:
    graph = model.graph
    index = Index(graph)
    folded = 0
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or attr(bn, "training_mode", 0):
            continue
        conv = index.producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or index.sole_consumer(conv.output[0]) is not bn:
            continue
        if any(o and index.used(o) for o in bn.output[1:]):
            continue
        params = [index.const(n) for n in bn.input[1:5]]
        w = index.const(conv.input[1])
        b = index.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        if w is None or any(p is None for p in params) or (len(conv.input) > 2 and conv.input[2] and b is None):
            continue
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        k = scale / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        new_w = (w.astype(np.float64) * k.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype)
        base = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        new_b = ((base - mean) * k + bias).astype(w.dtype)
        w_name, b_name = fresh_name(graph, conv.input[1] + "_bn"), fresh_name(graph, (conv.name or "conv") + "_bias_bn")
        index.set_initializer(w_name, new_w)
        index.set_initializer(b_name, new_b)
        index.set_inputs(conv, [conv.input[0], w_name, b_name])
        out = bn.output[0]
        index.remove([bn])
        index.set_output(conv, 0, out)
        folded += 1
    return PassResult(model, {"folded": folded})
