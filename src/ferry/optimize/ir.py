"""What every pass needs to read an ONNX graph: who produces a name, who reads it, which names are constant."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ferry.package.graph import fixed_size


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    names: set[str] = set()
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in g.node:
                names.update(n.input)
                names.update(_subgraph_reads(n))
    return names


class Index:
    """A snapshot of one graph's def-use relations. Passes build a fresh one after they change the graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.captured: set[str] = set()  # read inside If/Loop/Scan bodies: never renamed or removed
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
            self.captured |= _subgraph_reads(node)
        self.outputs = {o.name for o in graph.output}
        self.inputs = {i.name for i in graph.input}

    def const(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is an initializer or the output of a Constant node."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def used(self, name: str) -> bool:
        return bool(self.consumers.get(name)) or name in self.outputs or name in self.captured

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading `name`, when nothing else (graph outputs, subgraphs) needs it."""
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or name in self.outputs or name in self.captured:
            return None
        return readers[0]


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def remove(graph: onnx.GraphProto, doomed: list[onnx.NodeProto]) -> None:
    """Delete these nodes (live references into graph.node) in place; other references stay valid."""
    ids = {id(n) for n in doomed}
    for i in reversed([i for i, n in enumerate(graph.node) if id(n) in ids]):
        del graph.node[i]


def position(graph: onnx.GraphProto, node: onnx.NodeProto) -> int:
    return next(i for i, n in enumerate(graph.node) if n is node)


def replace(graph: onnx.GraphProto, doomed: list[onnx.NodeProto], node: onnx.NodeProto, where: onnx.NodeProto) -> None:
    """Delete `doomed` and put `node` where `where` (a node of the graph, often one of them) stood."""
    at = position(graph, where)
    ids = {id(n) for n in doomed}
    before = sum(1 for n in list(graph.node)[:at] if id(n) in ids)
    remove(graph, doomed)
    graph.node.insert(at - before, node)


def exhaust(rewrite, model: onnx.ModelProto) -> bool:
    """Call `rewrite` (one change per call, True when it made one: its Index is stale after) until it finds
    nothing more; whether it changed anything."""
    changed = False
    while rewrite(model):
        changed = True
    return changed


def set_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return
    graph.initializer.append(numpy_helper.from_array(value, name))


def fresh_name(graph: onnx.GraphProto, base: str) -> str:
    taken = {n for node in graph.node for n in node.output} | {t.name for t in graph.initializer}
    taken |= {i.name for i in graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def opset(model: onnx.ModelProto, domain: str = "") -> int:
    for o in model.opset_import:
        if o.domain in (domain, "ai.onnx" if domain == "" else domain):
            return o.version
    return 0


def ensure_domain(model: onnx.ModelProto, domain: str, version: int = 1) -> None:
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Name -> dimensions (an int, a symbol, or '' when unknown) for every tensor whose shape is recorded."""
    known = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    return {
        v.name: [fixed_size(d) or d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in known
        if v.type.tensor_type.HasField("shape")
    }
