"""Graph optimisation over ONNX: small passes (one module each, in `passes/`) run by a pass manager until
nothing changes. The result stays standard ONNX (plus ONNX Runtime's com.microsoft fused ops, which the lite
engine also runs), so every backend can take it.

    model, applied = optimize_model(onnx.load("model.onnx"))
"""

from __future__ import annotations

import onnx

from ferry.optimize.manager import run_passes
from ferry.optimize.passes import (
    common_subexpressions,
    constant_folding,
    dead_code,
    fold_batchnorm,
    fuse_activation,
    fuse_bias_gelu,
    identity,
    patterns,
    reshape_dims,
    shape_inference,
    transpose_reshape,
)

PASSES = [
    ("constant_folding", constant_folding.run),
    ("identity", identity.run),
    ("common_subexpressions", common_subexpressions.run),
    ("dead_code", dead_code.run),
    ("fold_batchnorm", fold_batchnorm.run),
    ("patterns", patterns.run),
    ("reshape_dims", reshape_dims.run),
    ("transpose_reshape", transpose_reshape.run),
    ("fuse_activation", fuse_activation.run),
    ("fuse_bias_gelu", fuse_bias_gelu.run),
]


def optimize_model(model: onnx.ModelProto, skip: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, list[str]]:
    """Optimise a copy of `model`; returns it and the names of the passes that changed it. `skip` names
    passes to leave out (quantization skips the com.microsoft fusions: quantizers look for plain ops)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    applied = ["shape_inference"] if shape_inference.run(out) else []
    applied += run_passes(out, [(name, fn) for name, fn in PASSES if name not in skip])
    onnx.checker.check_model(out)
    return out, applied


def optimize_package(package, out, overwrite: bool = False, atol: float = 1e-4, rtol: float = 1e-3) -> str:
    """Optimise a loaded package into a new package at `out`, after checking that ONNX Runtime (with its
    own optimisations off, so the comparison sees ours alone) gives the same outputs on random inputs."""
    import time

    import onnxruntime as ort

    from ferry.converters.parity import compare, random_feeds
    from ferry.package import derive

    original = package.full_model()
    optimized, applied = optimize_model(original)
    feeds = random_feeds(package.signature, batch=2)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    names = [o.name for o in package.signature.outputs]
    timings = []
    results = []
    for model in (original, optimized):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results.append(session.run(names, feeds))
        started = time.perf_counter()
        for _ in range(5):
            session.run(names, feeds)
        timings.append((time.perf_counter() - started) / 5 * 1000)
    report = compare(package.name, names, results[0], results[1], atol, rtol)
    derive(package, optimized, out, step="optimize", details={"passes": applied}, overwrite=overwrite)
    before, after = len(original.graph.node), len(optimized.graph.node)
    return (
        f"wrote {out}: {before} -> {after} nodes; passes that changed the graph: {', '.join(applied) or 'none'}\n"
        f"{report}\n"
        f"ONNX Runtime with its own optimisations off, batch 2: {timings[0]:.2f} -> {timings[1]:.2f} ms"
    )
