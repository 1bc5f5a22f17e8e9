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
    """One graph's def-use relations, kept current: a pass builds one Index and changes the graph through
    it (`remove`, `replace`, `rename_input`, `set_input`, `set_output`, `set_initializer`), so that it never
    rebuilds the index per node (that made the identity pass quadratic). Changing `graph.node` or a node's
    inputs behind its back leaves it stale."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.captured: set[str] = set()  # read inside If/Loop/Scan bodies: never renamed or removed
        self._alive: set[int] = set()
        for node in graph.node:
            self._add(node)
        self.outputs = {o.name for o in graph.output}
        self.inputs = {i.name for i in graph.input}

    # --- reading ---

    def alive(self, node: onnx.NodeProto) -> bool:
        """Whether `node` is still in the graph (a pass iterating over a snapshot skips removed ones)."""
        return id(node) in self._alive

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

    # --- changing the graph, and the index with it ---

    def remove(self, doomed: list[onnx.NodeProto]) -> None:
        remove(self.graph, doomed)
        for node in doomed:
            self._drop(node)

    def replace(self, doomed: list[onnx.NodeProto], node: onnx.NodeProto, where: onnx.NodeProto) -> onnx.NodeProto:
        """Delete `doomed`, put `node` where `where` stood; returns the node as the graph holds it."""
        placed = replace(self.graph, doomed, node, where)
        for old in doomed:
            self._drop(old)
        self._add(placed)
        return placed

    def rename_input(self, old: str, new: str) -> None:
        """Every reader of `old` reads `new` instead."""
        readers = self.consumers.pop(old, [])
        for node in {id(n): n for n in readers}.values():
            node.input[:] = [new if name == old else name for name in node.input]
        self.consumers[new].extend(readers)

    def set_input(self, node: onnx.NodeProto, i: int, name: str) -> None:
        old = node.input[i]
        if old:
            readers = self.consumers[old]
            del readers[next(k for k, n in enumerate(readers) if n is node)]
        node.input[i] = name
        if name:
            self.consumers[name].append(node)

    def set_inputs(self, node: onnx.NodeProto, names: list[str]) -> None:
        self._drop(node)
        node.input[:] = names
        self._add(node)

    def set_output(self, node: onnx.NodeProto, i: int, name: str) -> None:
        self.producer.pop(node.output[i], None)
        node.output[i] = name
        self.producer[name] = node

    def set_initializer(self, name: str, value: np.ndarray) -> None:
        set_initializer(self.graph, name, value)
        self.inits = {t.name: t for t in self.graph.initializer}

    def _add(self, node: onnx.NodeProto) -> None:
        self._alive.add(id(node))
        for name in node.output:
            self.producer[name] = node
        for name in node.input:
            if name:
                self.consumers[name].append(node)
        self.captured |= _subgraph_reads(node)

    def _drop(self, node: onnx.NodeProto) -> None:
        self._alive.discard(id(node))
        for name in node.output:
            if self.producer.get(name) is node:
                del self.producer[name]
        for name in set(node.input):
            if name in self.consumers:
                self.consumers[name] = [n for n in self.consumers[name] if n is not node]


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def remove(graph: onnx.GraphProto, doomed: list[onnx.NodeProto]) -> None:
    """Delete these nodes (live references into graph.node) in place; other references stay valid."""
    ids = {id(n) for n in doomed}
    for i in reversed([i for i, n in enumerate(graph.node) if id(n) in ids]):
        del graph.node[i]


def position(graph: onnx.GraphProto, node: onnx.NodeProto) -> int:
    return next(i for i, n in enumerate(graph.node) if n is node)


def replace(
    graph: onnx.GraphProto, doomed: list[onnx.NodeProto], node: onnx.NodeProto, where: onnx.NodeProto
) -> onnx.NodeProto:
    """Delete `doomed` and put `node` where `where` (a node of the graph, often one of them) stood; returns
    the node as the graph holds it (protobuf copies what is inserted)."""
    at = position(graph, where)
    ids = {id(n) for n in doomed}
    before = sum(1 for n in list(graph.node)[:at] if id(n) in ids)
    remove(graph, doomed)
    graph.node.insert(at - before, node)
    return graph.node[at - before]


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
