"""Fold an inference BatchNormalization into the Conv before it: new weights and bias, one node fewer."""

from __future__ import annotations

import numpy as np
import onnx

from ferry.optimize.ir import Index, attr, fresh_name, remove, set_initializer


def run(model: onnx.ModelProto) -> bool:
    graph = model.graph
    changed = False
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or attr(bn, "training_mode", 0):
            continue
        index = Index(graph)
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
        set_initializer(graph, w_name, new_w)
        set_initializer(graph, b_name, new_b)
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        remove(graph, [bn])
        changed = True
    return changed
