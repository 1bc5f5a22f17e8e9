"""Remove nodes whose outputs nobody reads, and initializers no node reads."""

from __future__ import annotations

import onnx

from ferry.optimize.ir import Index, remove


def run(model: onnx.ModelProto) -> bool:
    graph = model.graph
    changed = False
    while True:
        index = Index(graph)
        dead = [n for n in graph.node if not any(index.used(o) for o in n.output if o)]
        if not dead:
            break
        remove(graph, dead)
        changed = True
    index = Index(graph)
    listed = {i.name for i in graph.input}
    unused = [t for t in graph.initializer if not index.used(t.name) and t.name not in listed]
    if unused:
        names = {t.name for t in unused}
        kept = [t for t in graph.initializer if t.name not in names]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        changed = True
    return changed
