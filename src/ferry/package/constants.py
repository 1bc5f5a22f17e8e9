"""How large the graph's constant parts become when an engine computes them.

Engines fold what depends on constants alone before the first run: a 956-byte graph whose
ConstantOfShape is fed `[16000, 16000]` by an initializer made ONNX Runtime allocate 1 GB (2 GB at the
peak) while a predictor was created. `check_constant_sizes` refuses such a graph at load, naming the node
and the size, before any engine sees it.

Small integer tensors (initializers, Constant nodes, and what Concat, Cast, Identity, Unsqueeze and
Squeeze make of them) are followed through the graph; the ops that create a tensor from such values
(ConstantOfShape, Expand, Tile, Range) are then sized. Weights themselves are not counted: they are
already on disk, and their size is the package's.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from ferry.errors import UnsupportedModelError

MAX_CONSTANT_BYTES = 256 << 20  # far above what real graphs build from constants (shape helpers, masks)
_SMALL = 64  # integer tensors up to this many elements are followed as values


def check_constant_sizes(model: onnx.ModelProto, limit: int | None, source: str) -> None:
    """Raise UnsupportedModelError when a node computed from constants alone would exceed `limit` bytes."""
    if limit is None:
        return
    for node, size in constant_sizes(model):
        if size > limit:
            raise UnsupportedModelError(
                f"{source}: node {node.name or node.output[0]!r} ({node.op_type}) builds a constant of "
                f"{size / (1 << 20):,.0f} MiB, over the limit of {limit / (1 << 20):,.0f} MiB "
                "(raise it with max_constant_mb / --max-constant-mb if the model is yours and needs it)"
            )


def constant_sizes(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int]]:
    """(node, bytes) for every node that creates a tensor from constant values alone."""
    values: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and math.prod(init.dims) <= _SMALL:
            values[init.name] = numpy_helper.to_array(init).astype(np.int64)
    sizes = []
    for node in model.graph.node:
        known = [values.get(name) for name in node.input]
        size = _created_bytes(node, known)
        if size is not None:
            sizes.append((node, size))
        value = _follow(node, known)
        if value is not None and node.output:
            values[node.output[0]] = value
    return sizes


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _follow(node: onnx.NodeProto, known: list[np.ndarray | None]) -> np.ndarray | None:
    """The small integer value a node outputs when its inputs are known, else None."""
    op = node.op_type
    if op == "Constant":
        tensor = _attr(node, "value")
        if isinstance(tensor, onnx.TensorProto) and math.prod(tensor.dims) <= _SMALL:
            array = numpy_helper.to_array(tensor)
            return array.astype(np.int64) if array.dtype.kind in "iu" else None
        return None
    if not known or any(k is None for k in known[:1]):
        return None
    if op in ("Identity", "Cast") and known[0] is not None:
        return known[0]
    if op == "Concat" and all(k is not None for k in known):
        return np.concatenate([k.reshape(-1) for k in known])
    if op in ("Unsqueeze", "Squeeze"):
        return known[0].reshape(-1)
    return None


def _created_bytes(node: onnx.NodeProto, known: list[np.ndarray | None]) -> int | None:
    op = node.op_type
    if op == "ConstantOfShape" and known and known[0] is not None:
        value = _attr(node, "value")
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.data_type)).itemsize if value else 4
        return _prod(known[0]) * itemsize
    if op == "Expand" and len(known) > 1 and known[1] is not None:
        return _prod(known[1]) * 4  # at least the target shape, in the common 4-byte element
    if op == "Tile" and len(known) > 1 and known[1] is not None:
        return _prod(known[1]) * 4  # the repeats alone multiply the input by this much
    if op == "Range" and len(known) == 3 and all(k is not None and k.size == 1 for k in known):
        start, limit, delta = (int(k.reshape(-1)[0]) for k in known)
        return max(0, math.ceil((limit - start) / delta)) * 8 if delta else None
    return None


def _prod(dims: np.ndarray) -> int:
    """Elements of a shape given as values; negative entries (a bad or dynamic shape) count as one."""
    return math.prod(max(1, int(d)) for d in dims.reshape(-1))
