"""Fusions for the lite engine's own graph: ops that only the lite engine runs, so the optimizer (whose output
ONNX Runtime must read) does not write them. `ferry.exporters.lite.from_onnx` applies them, before any memory
plan is made for the graph.

fuse_attention: the core of scaled dot-product attention as exporters decompose it,

    MatMul([Transpose] [* scalar] a, [Transpose] [* scalar] b) -> [Mul or Div by a scalar] -> [Add(bias)]
        -> Softmax(last axis)
        -> [IsNaN + Where(isnan, 0, p), which torch.onnx adds for rows with every key masked]
        -> MatMul(p, [Transpose] v)

becomes one `SoftmaxAttention(a, b, v, bias)` node (domain ai.ferry.lite). Its kernel works one batch entry
at a time, so that the scores (heads x queries x keys) stay in cache through the scale, the mask, the softmax
and the product with v, instead of making five passes over them in memory.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .graph import Graph, Node

DOMAIN = "ai.ferry.lite"


def fuse_attention(graph: Graph) -> int:
    """Rewrite every match in place; returns how many there were."""
    count = 0
    while _fuse_one(graph):
        count += 1
    if count:
        graph.opsets.setdefault(DOMAIN, 1)
    return count


def _fuse_one(graph: Graph) -> bool:
    producer = {name: node for node in graph.nodes for name in node.outputs}
    readers: dict[str, list[Node]] = defaultdict(list)
    for node in graph.nodes:
        for name in node.inputs:
            if name:
                readers[name].append(node)
    kept = {v.name for v in graph.outputs} | {n for g in graph.subgraphs() for n in g.captured()}

    def sole(name: str) -> Node | None:
        nodes = readers.get(name, [])
        return nodes[0] if len(nodes) == 1 and name not in kept else None

    for softmax in graph.nodes:
        if not _is(softmax, "Softmax") or softmax.attrs.get("axis", -1 if graph.opsets.get("", 13) >= 13 else 1) != -1:
            continue
        found = _before(softmax, producer, sole, graph.weights)
        after = _after(softmax, readers, sole, graph.weights, kept) if found else None
        if after is None:
            continue
        (operands, perms, bias, scale, upstream), (downstream, final, nan_to_zero) = found, after
        v, v_perm = _untransposed(final.inputs[1], final, producer, sole, downstream)
        attrs = {"scale": scale, "nan_to_zero": nan_to_zero}
        attrs.update((key, perm) for key, perm in zip(("a_perm", "b_perm", "v_perm"), [*perms, v_perm]) if perm)
        fused = Node("SoftmaxAttention", [*operands, v, bias], list(final.outputs), attrs, DOMAIN, final.name)
        doomed = {id(n) for n in [*upstream, softmax, *downstream, final]}
        graph.nodes = [fused if n is final else n for n in graph.nodes if n is final or id(n) not in doomed]
        return True
    return False


def _is(node: Node | None, op: str) -> bool:
    return node is not None and node.op == op and node.domain in ("", "ai.onnx")


def _scalar(name: str, weights: dict[str, np.ndarray]) -> float | None:
    value = weights.get(name)
    return float(value.reshape(())) if value is not None and value.size == 1 and value.dtype.kind == "f" else None


def _before(softmax: Node, producer, sole, weights):
    """([a, b], [a's perm, b's perm], bias, scale, nodes) for MatMul(a, b) [* or / scalar] [+ bias] feeding
    the softmax, else None."""
    name = softmax.inputs[0]
    node = producer.get(name)
    if _is(node, "Add") and sole(name) is softmax:
        for side in (0, 1):
            found = _scores(node.inputs[side], node, producer, sole, weights)
            if found is not None:
                operands, perms, scale, nodes = found
                return operands, perms, node.inputs[1 - side], scale, [node, *nodes]
        return None
    found = _scores(name, softmax, producer, sole, weights)
    return None if found is None else (found[0], found[1], "", found[2], found[3])


def _scores(name: str, reader: Node, producer, sole, weights):
    """([a, b], [perms], scale, nodes) when `name`, read by `reader` alone, is MatMul(a, b) times or over a
    scalar; a scalar Mul or a Transpose on either operand is taken in too."""
    node, scale, nodes = producer.get(name), 1.0, []
    if sole(name) is not reader:
        return None
    if _is(node, "Mul") or _is(node, "Div"):
        sides = [(0, 1), (1, 0)] if node.op == "Mul" else [(0, 1)]
        data, constant = next(((d, c) for d, c in ((d, _scalar(node.inputs[c], weights)) for d, c in sides)
                               if c is not None), (None, None))  # fmt: skip
        if data is None or constant == 0 or sole(node.inputs[data]) is not node:
            return None
        scale = constant if node.op == "Mul" else 1 / constant
        nodes.append(node)
        node = producer.get(node.inputs[data])
    if not _is(node, "MatMul"):
        return None
    nodes.append(node)
    operands, perms = list(node.inputs[:2]), [None, None]
    for i, operand in enumerate(operands):
        if operands[0] == operands[1]:
            break
        reader = node
        scaled = producer.get(operand)  # torch.onnx scales q and k by d**-0.25 each, before the product
        constant = _scalar(scaled.inputs[1], weights) if _is(scaled, "Mul") else None
        if constant is not None and sole(operand) is node:
            scale *= constant
            operands[i], reader = scaled.inputs[0], scaled
            nodes.append(scaled)
        operands[i], perms[i] = _untransposed(operands[i], reader, producer, sole, nodes)
    return operands, perms, scale, nodes


def _untransposed(name: str, reader: Node, producer, sole, nodes: list[Node]):
    """(source, perm) when `name` is Transpose(source, perm) read by `reader` alone (the kernel takes the
    transpose as a view, and the copy goes), else (name, None)."""
    node = producer.get(name)
    if not _is(node, "Transpose") or "perm" not in node.attrs or sole(name) is not reader:
        return name, None
    nodes.append(node)
    return node.inputs[0], list(node.attrs["perm"])


def _after(softmax: Node, readers, sole, weights, kept):
    """(nodes, final MatMul, nan_to_zero) for the softmax's readers, else None."""
    probs = softmax.outputs[0]
    if probs in kept:
        return None
    users = readers.get(probs, [])
    if len(users) == 1 and _is(users[0], "MatMul") and users[0].inputs[0] == probs:
        return [], users[0], 0
    isnan = next((u for u in users if _is(u, "IsNaN")), None)
    where = next((u for u in users if _is(u, "Where")), None)
    if len(users) != 2 or isnan is None or where is None or sole(isnan.outputs[0]) is not where:
        return None
    if where.inputs[0] != isnan.outputs[0] or where.inputs[2] != probs or _scalar(where.inputs[1], weights) != 0:
        return None
    final = sole(where.outputs[0])
    if not _is(final, "MatMul") or final.inputs[0] != where.outputs[0]:
        return None
    return [isnan, where], final, 1
