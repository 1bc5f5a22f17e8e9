"""Merge nodes that compute the same thing (same op, attributes and inputs), and equal small constants.

Exporters repeat work per layer: each attention block of a torch.onnx BERT turns the same attention mask
into the same additive bias, and takes Shape of the same tensor again for each of its Reshape targets.
The later copy's readers are pointed at the first copy's outputs and the copy is removed. Random ops and
ops with subgraphs are never merged; nor is a node whose outputs are graph outputs (their names must stay).
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from ferry.optimize.ir import Index
from ferry.optimize.manager import PassResult

SMALL = 4096  # bytes: larger initializers are weights, not repeated constants, and not worth hashing
# Ops whose parameters later rewrites change in place by name (BatchNorm folding, pruning, quantization):
# a constant they read keeps a name of its own, even when another has the same bytes.
PARAMETERS = {
    "BatchNormalization", "Conv", "ConvTranspose", "DequantizeLinear", "Einsum", "FusedConv", "FusedGemm", "Gemm",
    "GroupNormalization", "GRU", "InstanceNormalization", "LayerNormalization", "LSTM", "MatMul", "PRelu",
    "QuantizeLinear", "RNN", "SkipLayerNormalization", "BiasGelu",
}  # fmt: skip

RANDOM = {"Bernoulli", "Dropout", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
          "RandomUniformLike"}  # fmt: skip


def _same_constants(graph: onnx.GraphProto, index: Index) -> dict[str, str]:
    """Small initializers equal in type, shape and bytes to an earlier one (exporters write a scalar 0 or
    -inf once per layer), mapped to that one; the nodes reading them then compare equal."""
    first: dict[tuple, str] = {}
    alias = {}
    for t in graph.initializer:
        if t.name in index.inputs or t.name in index.outputs or t.name in index.captured:
            continue
        if any(n.op_type in PARAMETERS for n in index.consumers.get(t.name, [])):
            continue
        value = numpy_helper.to_array(t)
        if value.nbytes > SMALL or value.dtype == object:
            continue
        key = (value.dtype.str, value.shape, value.tobytes())
        alias_of = first.setdefault(key, t.name)
        if alias_of != t.name:
            alias[t.name] = alias_of
    return alias


def _key(node: onnx.NodeProto, alias: dict[str, str]) -> tuple | None:
    if node.op_type in RANDOM or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                     for a in node.attribute):  # fmt: skip
        return None
    attrs = tuple(sorted((a.name, a.SerializeToString()) for a in node.attribute))
    return node.domain or "", node.op_type, tuple(alias.get(n, n) for n in node.input), len(node.output), attrs


def run(model: onnx.ModelProto) -> PassResult:
    graph = model.graph
    index = Index(graph)
    seen: dict[tuple, onnx.NodeProto] = {}
    alias = _same_constants(graph, index)  # a removed copy's output or constant -> the first one
    doomed = []
    for node in graph.node:  # in order: a copy's inputs are already aliased when its key is made
        key = _key(node, alias)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first is node or any(o in index.outputs or o in index.captured for o in node.output):
            continue
        alias.update((mine, theirs) for mine, theirs in zip(node.output, first.output) if mine)
        doomed.append(node)
    if not alias:
        return PassResult(model)
    index.remove(doomed)
    constants = sum(1 for t in graph.initializer if t.name in alias)
    kept = [t for t in graph.initializer if t.name not in alias]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for old, new in alias.items():
        index.rename_input(old, new)
    return PassResult(model, {"nodes": len(doomed), "constants": constants})
