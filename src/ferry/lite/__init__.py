"""ferry's lite runtime: a small numpy engine for devices where the big engines do not go.

    import ferry.lite
    model = ferry.lite.load("model.flite")
    outputs = model.run({"x": batch})

It imports numpy and the standard library only (no onnx, no protobuf), so that a device needs nothing
else. `ferry export lite` writes the file; `python -m ferry.lite model.flite --input x.npy` runs it.
"""

from __future__ import annotations

from pathlib import Path

from .engine import Engine
from .errors import FormatError, LiteError, LiteInputError, UnsupportedOpError
from .format import load_graph, save
from .graph import Graph, Node, Value
from .registry import supported


def load(path: str | Path, memory: str = "arena") -> Engine:
    """Load a `.flite` file; weights stay memory-mapped. Unsupported ops fail here, all listed at once."""
    graph, plans = load_graph(path)
    return Engine(graph, memory=memory, plans=plans)


__all__ = [
    "Engine",
    "FormatError",
    "Graph",
    "LiteError",
    "LiteInputError",
    "Node",
    "UnsupportedOpError",
    "Value",
    "load",
    "load_graph",
    "save",
    "supported",
]
