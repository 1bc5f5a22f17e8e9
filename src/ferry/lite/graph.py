"""The lite engine's graph: plain dataclasses, no protobuf. Nodes are kept in execution order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Value:
    name: str
    dtype: str | None = None  # numpy dtype name ("float32"), "sequence", "optional" or None when unknown
    shape: list[int | str | None] | None = None


@dataclass
class Node:
    op: str
    inputs: list[str]  # "" marks an optional input left out
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)  # ints, floats, strs, lists, arrays, Graphs
    domain: str = ""
    name: str = ""


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=lambda: {"": 21})
    name: str = "model"

    def subgraphs(self):
        """Every graph held in a node attribute, at any depth."""
        for node in self.nodes:
            for value in node.attrs.values():
                for g in value if isinstance(value, list) else [value]:
                    if isinstance(g, Graph):
                        yield g
                        yield from g.subgraphs()

    def captured(self) -> set[str]:
        """Names this graph reads from an enclosing scope (subgraphs of If/Loop/Scan do that)."""
        defined = {v.name for v in self.inputs} | set(self.weights)
        needed: set[str] = set()
        for node in self.nodes:
            reads = [n for n in node.inputs if n]
            for value in node.attrs.values():
                for g in value if isinstance(value, list) else [value]:
                    if isinstance(g, Graph):
                        reads += sorted(g.captured())
            needed.update(n for n in reads if n not in defined)
            defined.update(node.outputs)
        needed.update(v.name for v in self.outputs if v.name not in defined)
        return needed
