"""What a package needs to know about its ONNX graph: the signature, pruning, the op set.

Pruning does what Paddle's `save_inference_model` does with feed and fetch: keep the requested outputs,
the nodes they depend on and the inputs those nodes read; drop everything else, and drop nodes that only
matter in training.
"""

from __future__ import annotations

import onnx

from ferry.dtypes import name_from_onnx
from ferry.package.manifest import Dim, Signature, TensorSpec

TRAINING_DOMAINS = frozenset({"ai.onnx.preview.training"})


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real feeds (older exporters also list initializers as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


# Dimension names that mean "unknown", not a name that two axes can share: Paddle2ONNX writes "?".
ANONYMOUS_DIMS = frozenset({"", "?", "-1", "None"})


def fixed_size(d: onnx.TensorShapeProto.Dimension) -> int | None:
    """A dimension's size when the graph fixes it, else None. Only positive sizes are fixed: older
    exporters wrote -1 (PP-OCR's models as rapidocr ships them) or 0 for "dynamic"."""
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    ttype = value.type.tensor_type
    dims: list[Dim] = []
    for axis, d in enumerate(ttype.shape.dim):
        size = fixed_size(d)
        named = d.dim_param not in ANONYMOUS_DIMS
        dims.append(size if size is not None else (d.dim_param if named else f"{value.name}_dim{axis}"))
    return TensorSpec(value.name, name_from_onnx(ttype.elem_type), tuple(dims), value.doc_string)


def read_signature(model: onnx.ModelProto) -> Signature:
    return Signature(
        inputs=tuple(_spec(v) for v in graph_inputs(model)),
        outputs=tuple(_spec(v) for v in model.graph.output),
    )


def name_dynamic_dims(
    model: onnx.ModelProto, dim_names: dict[str, str] | None = None, batch_name: str = "batch"
) -> None:
    """Give every dynamic dimension of the graph's inputs and outputs a readable name, in place.

    `dim_names` renames existing names (`{"DynamicDimension.0": "batch"}`) or names one axis
    (`{"input_ids:1": "sequence"}`). A dimension with no name at all becomes `batch` on axis 0 and
    `<tensor>_dim<axis>` elsewhere.
    """
    dim_names = dict(dim_names or {})
    for value in [*graph_inputs(model), *model.graph.output]:
        if not value.type.HasField("tensor_type"):
            continue
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            if fixed_size(d) is not None:
                continue
            key = f"{value.name}:{axis}"  # a -1 below becomes a name: setting dim_param clears dim_value
            if key in dim_names:
                d.dim_param = dim_names[key]
            elif d.dim_param in dim_names:
                d.dim_param = dim_names[d.dim_param]
            elif d.dim_param in ANONYMOUS_DIMS:
                d.dim_param = batch_name if axis == 0 else f"{value.name}_dim{axis}"


def _names_read(node: onnx.NodeProto) -> set[str]:
    """Every value a node reads, including outer-scope names read inside its subgraphs."""
    names = {n for n in node.input if n}
    for attr in node.attribute:
        for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            inner_defined = {v.name for v in g.input} | {t.name for t in g.initializer}
            for inner in g.node:
                inner_defined.update(inner.output)
            for inner in g.node:
                names.update(n for n in _names_read(inner) if n not in inner_defined)
    return names


def drop_training_nodes(model: onnx.ModelProto) -> int:
    """Remove Dropout (an identity at inference) and nodes from training-only domains; returns the count."""
    graph = model.graph
    graph_outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    removed = 0
    for node in graph.node:
        mask_used = len(node.output) > 1 and node.output[1]
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx") and not mask_used:
            if node.output[0] in graph_outputs:
                keep.append(onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
            else:
                rename[node.output[0]] = node.input[0]
            removed += 1
        elif node.domain in TRAINING_DOMAINS:
            removed += 1
        else:
            keep.append(node)

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    del graph.node[:]
    graph.node.extend(keep)
    return removed


def prune(model: onnx.ModelProto, outputs: list[str] | None = None) -> onnx.ModelProto:
    """Keep `outputs` (default: the graph's own) and only what they need. Works in place; returns model."""
    graph = model.graph
    known = {o.name: o for o in graph.output}
    produced = {out: node for node in graph.node for out in node.output}
    for vi in graph.value_info:
        known.setdefault(vi.name, vi)
    wanted = outputs or [o.name for o in graph.output]
    missing = [n for n in wanted if n not in produced and n not in {i.name for i in graph.input}]
    if missing:
        raise ValueError(f"requested outputs {missing} are not produced by any node of the graph")

    needed: set[str] = set(wanted)
    keep_ids: set[int] = set()
    stack = list(wanted)
    while stack:
        node = produced.get(stack.pop())
        if node is None or id(node) in keep_ids:
            continue
        keep_ids.add(id(node))
        for name in _names_read(node):
            if name not in needed:
                needed.add(name)
                stack.append(name)

    kept_nodes = [n for n in graph.node if id(n) in keep_ids]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    for field_name, items in (("initializer", list(graph.initializer)), ("input", list(graph.input))):
        kept = [x for x in items if x.name in needed]
        getattr(graph, field_name).__delitem__(slice(None))
        getattr(graph, field_name).extend(kept)
    new_outputs = []
    for name in wanted:
        vi = known.get(name)
        new_outputs.append(vi if vi is not None else onnx.helper.make_empty_tensor_value_info(name))
    del graph.output[:]
    graph.output.extend(new_outputs)
    return model


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
