"""Remove nodes whose outputs nobody reads, and initializers no node reads."""

from __future__ import annotations

import onnx

from ferry.optimize.ir import Index
from ferry.optimize.manager import PassResult


def run(model: onnx.ModelProto) -> PassResult:
    graph = model.graph
    index = Index(graph)
    nodes = 0
    # Backwards: a node read only by dead nodes is dead once they are gone, in the same sweep.
    for node in reversed(list(graph.node)):
        if not any(index.used(o) for o in node.output if o):
            index.remove([node])
            nodes += 1
    listed = {i.name for i in graph.input}
    unused = {t.name for t in graph.initializer if not index.used(t.name) and t.name not in listed}
    if unused:
        kept = [t for t in graph.initializer if t.name not in unused]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return PassResult(model, {"nodes": nodes, "initializers": len(unused)})
