"""Turn a Reshape target computed from shapes at run time into a constant.

Exporters with dynamic axes build the target of each Reshape as Concat(Unsqueeze(Gather(Shape(t), k)), ...,
constants): "batch and sequence of t, then 4 heads of 64". When dimension k of t is dimension j of the
Reshape's own input (the same tensor, or the same symbol after shape inference, such as the `unk__7` that
ONNX gives the batch of every tensor it flows through), the piece at position j is a 0, which Reshape
reads as "keep input dimension j". A dimension known as a number becomes that number. When every piece of
the target resolves, the target is an initializer and the Shape -> Gather -> Unsqueeze -> Concat chain is
left for dead-code removal. On the small BERT this removes about 100 of 330 nodes, which ONNX Runtime with
its optimisations off would otherwise run on every call.
"""

from __future__ import annotations

import numpy as np
import onnx

from ferry.optimize.ir import Index, attr, fresh_name, set_initializer, shapes


def _dim_reference(name: str, index: Index, rank: dict[str, int]) -> tuple[str, int] | None:
    """(t, k) when `name` is the 1-element vector [dimension k of t]: Unsqueeze(Gather(Shape(t), k)) or
    Gather(Shape(t), [k])."""
    node = index.producer.get(name)
    if node is None:
        return None
    if node.op_type == "Unsqueeze":
        axes = index.const(node.input[1]) if len(node.input) > 1 else attr(node, "axes")
        if axes is None or list(np.ravel(axes)) != [0]:
            return None
        node = index.producer.get(node.input[0])
        scalar = True
    else:
        scalar = False
    if node is None or node.op_type != "Gather" or attr(node, "axis", 0) != 0:
        return None
    k = index.const(node.input[1])
    shape = index.producer.get(node.input[0])
    if k is None or k.ndim != (0 if scalar else 1) or k.size != 1 or shape is None or shape.op_type != "Shape":
        return None
    if attr(shape, "start") not in (None, 0) or attr(shape, "end") is not None:
        return None
    t = shape.input[0]
    k = int(np.ravel(k)[0])
    if k < 0:
        if t not in rank:
            return None
        k += rank[t]
    return t, k


def _target(reshape: onnx.NodeProto, index: Index, dims: dict[str, list]) -> np.ndarray | None:
    """The constant equivalent of this Reshape's computed target, or None."""
    concat = index.producer.get(reshape.input[1])
    if concat is None or concat.op_type != "Concat" or attr(concat, "axis") not in (0, -1):
        return None
    data = reshape.input[0]
    have = dims.get(data)
    rank = {name: len(d) for name, d in dims.items()}
    target: list[int] = []
    for piece in concat.input:
        value = index.const(piece)
        if value is not None:
            if value.ndim != 1:
                return None
            target += [int(v) for v in value]
            continue
        ref = _dim_reference(piece, index, rank)
        if ref is None:
            return None
        t, k = ref
        theirs = dims.get(t, [])
        size = theirs[k] if k < len(theirs) else None
        j = len(target)
        if isinstance(size, int) and size > 0:
            target.append(size)
        elif (t == data and k == j) or (isinstance(size, str) and size and have and j < len(have) and have[j] == size):
            target.append(0)  # keep input dimension j: it is dimension k of t
        else:
            return None
    return np.array(target, np.int64)


def run(model: onnx.ModelProto) -> bool:
    graph = model.graph
    dims = shapes(model)
    changed = False
    for node in list(graph.node):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or attr(node, "allowzero", 0):
            continue
        index = Index(graph)
        if index.const(node.input[1]) is not None:
            continue
        target = _target(node, index, dims)
        if target is None:
            continue
        name = fresh_name(graph, node.input[1] + "_const")
        set_initializer(graph, name, target)
        node.input[1] = name
        changed = True
    return changed
