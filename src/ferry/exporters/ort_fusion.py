"""ONNX Runtime's transformer fusions for the onnxruntime backend: the package's graph through ORT's own
transformer optimizer (`onnxruntime.transformers.optimizer`, model type "bert"), which fuses each
attention block into one `Attention` op (and the embeddings, skip + LayerNorm, bias + GELU), kept only
when it fused attention: on the small BERT at batch 32, 2 threads, that took 251.6 ms to 220.4 ms; the
other fusions alone did not pay (SkipLayerNormalization ran 10% slower than the two ops it replaces).

The onnxruntime backend asks for it through `engine_files(package, "onnxruntime-fused")` when the graph
looks like a transformer (see `looks_like_transformer`), so the fused graph is made once and recorded in
the package like the device engines' files; a graph it does not fuse is recorded as such (no files).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
from pathlib import Path

import onnx

from ferry.errors import ConversionError
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage

MODEL = "model.onnx"
ATTENTION = ("Attention", "MultiHeadAttention")


def looks_like_transformer(package: ModelPackage) -> bool:
    """A Softmax between MatMuls and a LayerNorm, plain or decomposed: worth asking ORT's optimizer."""
    ops = {n.op_type for n in package.graph_proto().graph.node}
    return {"Softmax", "MatMul"} <= ops and bool(ops & {"LayerNormalization", "ReduceMean"})


def attention_size(package: ModelPackage) -> tuple[int, int]:
    """(heads, hidden size) as the graph computes them, or (0, 0) for ORT to guess. ORT reads them from
    constant Reshape targets, which a graph exported with a dynamic batch and sequence computes at run
    time; shape inference with the named dimensions fixed (batch 1, the rest 8) gives them: the hidden
    size is a LayerNorm's width, the head size the last axis of a 4-D Reshape (batch, sequence, heads,
    head size) that divides it (the heads axis itself is computed from the batch's and stays unknown)."""
    model = package.full_model()
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.dim_value = 1 if axis == 0 else 8
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001
        return 0, 0
    known = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    norms = [known.get(n.output[0], [0])[-1] for n in model.graph.node if n.op_type == "LayerNormalization"]
    hidden = next((h for h in norms if h), 0)
    for node in model.graph.node:
        dims = known.get(node.output[0], []) if node.op_type == "Reshape" else []
        if hidden and len(dims) == 4 and dims[3] > 0 and hidden % dims[3] == 0 and hidden // dims[3] > 1:
            heads = hidden // dims[3]
            if dims[2] in (0, heads):
                return heads, hidden
    return 0, 0


def convert(package: ModelPackage, out: Path) -> EngineModel:
    """Write the fused MODEL into `out`; a ConversionError when ORT fused no attention."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    heads, hidden = attention_size(package)
    # The raw 2-D mask, not ORT's default mask index (sequence lengths): that one reads every mask as
    # right padding and gave 0.011 off on a tiny BERT with a mask of scattered zeros; the raw one 7e-7.
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    logging.disable(logging.WARNING)  # its modules log under their own names, at INFO and WARNING
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            # opt_level 0: ORT's own graph optimizations still run when the session loads the result
            fused = optimizer.optimize_model(
                str(package.model_path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
                optimization_options=options,
            )  # fmt: skip
            counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
            if any(counts.get(op) for op in ATTENTION):
                out.mkdir(parents=True, exist_ok=True)
                fused.save_model_to_file(str(out / MODEL))
    except Exception as exc:  # noqa: BLE001 (its pattern matchers raise on graphs they were not written for)
        raise ConversionError(f"ONNX Runtime's transformer optimizer failed: {type(exc).__name__}: {exc}") from None
    finally:
        logging.disable(logging.NOTSET)
    if not any(counts.get(op) for op in ATTENTION):
        raise ConversionError(f"ONNX Runtime's transformer optimizer fused no attention in {package.name!r}")
    names = package.signature
    return EngineModel(
        engine="onnxruntime-fused",
        files=[MODEL],
        inputs={n: n for n in names.input_names},
        outputs={n: n for n in names.output_names},
        converter=f"onnxruntime {importlib.metadata.version('onnxruntime')} transformers optimizer",
        options={"fused": counts},
    )
