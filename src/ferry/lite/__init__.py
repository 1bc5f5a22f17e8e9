"""ferry's lite runtime: a small numpy engine for devices where the big engines do not go.

    import ferry.lite
    model = ferry.lite.load("model.flite")
    outputs = model.run({"x": batch})

It imports numpy and the standard library only (no onnx, no protobuf), so that a device needs nothing
else. `ferry export lite` writes the file; `python -m ferry.lite model.flite --input x.npy` runs it.
"""

from __future__ import annotations

from .engine import Engine
from .errors import FormatError, LiteError, LiteInputError, UnsupportedOpError
from .graph import Graph, Node, Value
from .registry import supported

__all__ = [
    "Engine",
    "FormatError",
    "Graph",
    "LiteError",
    "LiteInputError",
    "Node",
    "UnsupportedOpError",
    "Value",
    "supported",
]
