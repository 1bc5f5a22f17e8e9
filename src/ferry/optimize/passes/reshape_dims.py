"""Turn dimensions read from shapes at run time into constants: Gather(Shape(t), k) where dimension k of t is
known as a number, and Reshape targets.

Exporters with dynamic axes build the target of each Reshape as Concat(Unsqueeze(Gather(Shape(t), k)), ...,
constants): "batch and sequence of t, then 4 heads of 64". When dimension k of t is dimension j of the
Reshape's own input (the same tensor, or the same symbol after shape inference, such as the `unk__7` that
ONNX gives the batch of every tensor it flows through), the piece at position j is a 0, which Reshape
reads as "keep input dimension j". A dimension known as a number becomes that number. When every piece of
the target resolves, the target is an initializer and the Shape -> Gather -> Unsqueeze -> Concat chain is
left for dead-code removal. A Shape of a Transpose is read through the transpose, so that the transposed
value is needed for its data alone. On the small BERT, after the other passes, this takes 274 nodes to 258,
which ONNX Runtime with its optimisations off would otherwise run on every call.
"""

from __future__ import annotations

import numpy as np
import onnx

from ferry.optimize.ir import Index, attr, fresh_name, shapes
from ferry.optimize.manager import PassResult


def _whole_shape(node: onnx.NodeProto | None) -> bool:
    """A Shape node that gives every dimension (no start or end)."""
    return (
        node is not None and node.op_type == "Shape" and attr(node, "start") in (None, 0) and attr(node, "end") is None
    )


def _dim_reference(name: str, index: Index, dims: dict[str, list]) -> tuple[str, int] | None:
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
    if k is None or k.ndim != (0 if scalar else 1) or k.size != 1 or not _whole_shape(shape):
        return None
    t = shape.input[0]
    k = int(np.ravel(k)[0])
    if k < 0:
        if t not in dims:
            return None
        k += len(dims[t])
    return t, k


def _target(reshape: onnx.NodeProto, index: Index, dims: dict[str, list]) -> np.ndarray | None:
    """The constant equivalent of this Reshape's computed target, or None."""
    concat = index.producer.get(reshape.input[1])
    if concat is None or concat.op_type != "Concat" or attr(concat, "axis") not in (0, -1):
        return None
    data = reshape.input[0]
    have = dims.get(data)
    target: list[int] = []
    for piece in concat.input:
        value = index.const(piece)
        unsqueeze = index.producer.get(piece)
        if value is None and unsqueeze is not None and unsqueeze.op_type == "Unsqueeze":
            scalar = index.const(unsqueeze.input[0])  # a dimension _known_dims turned into a number
            value = scalar.reshape(1) if scalar is not None and scalar.ndim == 0 else None
        if value is not None:
            if value.ndim != 1:
                return None
            target += [int(v) for v in value]
            continue
        ref = _dim_reference(piece, index, dims)
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


def run(model: onnx.ModelProto) -> PassResult:
    index = Index(model.graph)
    counts = {"through_transpose": _through_transposes(model, index), "known_dims": _known_dims(model, index)}
    return PassResult(model, {**counts, "reshape_targets": _reshape_targets(model, index)})


def _through_transposes(model: onnx.ModelProto, index: Index) -> int:
    """Shape(Transpose(x, perm)) read only by Gathers of constant dimensions k: read dimension perm[k] of
    Shape(x) instead. The transposed tensor's value is then no longer needed for its shape, so a fused
    reader (the lite engine's attention) can take the transpose as a view."""
    graph = model.graph
    count = 0
    for shape in list(graph.node):
        if not index.alive(shape) or not _whole_shape(shape):
            continue
        transpose = index.producer.get(shape.input[0])
        perm = attr(transpose, "perm") if transpose is not None and transpose.op_type == "Transpose" else None
        readers = index.consumers.get(shape.output[0], [])
        if perm is None or not readers or shape.output[0] in index.outputs:
            continue
        picks = [index.const(g.input[1]) if g.op_type == "Gather" and not attr(g, "axis", 0) else None for g in readers]
        if any(k is None or k.size != 1 or k.ndim > 1 for k in picks):
            continue
        for gather, k in zip(readers, picks):
            name = fresh_name(graph, gather.input[1] + "_permuted")
            index.set_initializer(name, np.full(k.shape, perm[int(k.reshape(()))], np.int64))
            index.set_input(gather, 1, name)
        index.set_input(shape, 0, transpose.input[0])
        count += 1
    return count


def _known_dims(model: onnx.ModelProto, index: Index) -> int:
    """Gather(Shape(t), k) where dimension k of t is known as a number: that number (the head size that
    torch.onnx reads at run time to scale attention scores). Its readers then fold as constants, and the
    Shape no longer keeps t alive for this alone."""
    graph = model.graph
    dims = shapes(model)
    count = 0
    for node in list(graph.node):
        if not index.alive(node) or node.op_type != "Gather" or attr(node, "axis", 0) != 0:
            continue
        shape, k = index.producer.get(node.input[0]), index.const(node.input[1])
        if node.output[0] in index.outputs or not _whole_shape(shape) or k is None or k.size != 1 or k.ndim > 1:
            continue
        known, position = dims.get(shape.input[0]), int(k.reshape(()))
        if known is None:
            continue
        position += len(known) if position < 0 else 0
        size = known[position] if 0 <= position < len(known) else None
        if not isinstance(size, int) or size <= 0:
            continue
        name = fresh_name(graph, node.output[0] + "_const")
        index.set_initializer(name, np.full(k.shape, size, np.int64))
        index.rename_input(node.output[0], name)
        index.remove([node])
        count += 1
    return count


def _reshape_targets(model: onnx.ModelProto, index: Index) -> int:
    graph = model.graph
    dims = shapes(model)
    count = 0
    for node in list(graph.node):
        if not index.alive(node) or node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
            continue
        if attr(node, "allowzero", 0):
            continue
        if index.const(node.input[1]) is not None:
            continue
        target = _target(node, index, dims)
        if target is None:
            continue
        name = fresh_name(graph, node.input[1] + "_const")
        index.set_initializer(name, target)
        index.set_input(node, 1, name)
        count += 1
    return count
