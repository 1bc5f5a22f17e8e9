"""Record inferred shapes in value_info, so that later passes (and readers of the graph) see them. The pass
manager runs it before each pass that needs shapes, when the graph changed since.

onnx infers nothing past an op it does not know (the com.microsoft fusions), so a value's earlier entry is
kept when inference gives none: rewrites keep a value's name only when they keep what it holds. Entries of
values no node makes any more are dropped."""

from __future__ import annotations

import onnx

from ferry.optimize.manager import PassResult


def run(model: onnx.ModelProto) -> PassResult:
    graph = model.graph
    before = {v.name: v for v in graph.value_info}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (a graph onnx cannot infer is still a graph we can optimise)
        return PassResult(model)
    made = {name for node in graph.node for name in node.output}
    fresh = {v.name: v for v in inferred.graph.value_info if v.name in made}  # it carries old entries too
    kept = [v for name, v in before.items() if name in made and name not in fresh]
    del graph.value_info[:]
    graph.value_info.extend([*fresh.values(), *kept])
    return PassResult(model, {"shapes": len(set(fresh) - set(before))})
