"""Fuse a bias Add and the GELU after it (the MatMul + bias + GELU of every transformer feed-forward layer)
into ONNX Runtime's com.microsoft BiasGelu, which the lite engine also runs:

    Add(x, bias) -> Gelu   =>   BiasGelu(x, bias)        (bias: a 1-D constant over the last axis)

The residual Add + LayerNormalization after each sublayer would fuse the same way into
SkipLayerNormalization, but ONNX Runtime's CPU kernel for it measured 10% slower on the small BERT than the
two ops it replaces, so it is not done; the lite engine still runs SkipLayerNormalization where ONNX
Runtime's own transformer optimizer wrote it.
"""

from __future__ import annotations

import onnx
from onnx import helper

from ferry.optimize.ir import Index, attr, ensure_domain, shapes
from ferry.optimize.manager import PassResult

MS = "com.microsoft"


def _is_erf_gelu(node: onnx.NodeProto) -> bool:
    if node.op_type != "Gelu":
        return False
    if node.domain == MS:
        return True
    return node.domain in ("", "ai.onnx") and attr(node, "approximate", "none") == "none"


def run(model: onnx.ModelProto) -> PassResult:
    index = Index(model.graph)
    last = {name: dims[-1] for name, dims in shapes(model).items() if dims}
    count = 0
    for add in list(model.graph.node):
        if not index.alive(add) or add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            continue
        gelu = index.sole_consumer(add.output[0])
        if gelu is None or not _is_erf_gelu(gelu):
            continue
        for x, b in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            bias = index.const(b)
            # BiasGelu does not broadcast: the bias must span x's last axis exactly.
            if bias is not None and bias.ndim == 1 and index.const(x) is None and last.get(x) == bias.shape[0]:
                break
        else:
            continue
        fused = helper.make_node("BiasGelu", [x, b], [gelu.output[0]], name=(gelu.name or add.output[0]) + "_bias",
                                 domain=MS)  # fmt: skip
        index.replace([add, gelu], fused, where=add)
        ensure_domain(model, MS)
        count += 1
    return PassResult(model, {"fused": count})
