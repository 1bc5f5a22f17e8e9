"""Graph optimisation over ONNX: small passes (one module each, in `passes/`, each returning a PassResult
that counts what it did) run by the pass manager (`manager.py`) until nothing changes. The result stays
standard ONNX (plus ONNX Runtime's com.microsoft fused ops, which the lite engine also runs), so every
backend can take it.

    model, report = optimize_model(onnx.load("model.onnx"))
    print(report.summary())   # constant_folding (folded 12), identity (removed 3), ...
"""

from __future__ import annotations

import onnx

from ferry.optimize.manager import Pass, PassResult, Report, run_passes
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

# The order matters: folding and clean-up first, so that the pattern passes see plain graphs; the fusions
# into com.microsoft ops last.
PASSES = [
    Pass("constant_folding", constant_folding.run),
    Pass("identity", identity.run),
    Pass("common_subexpressions", common_subexpressions.run),
    Pass("dead_code", dead_code.run),
    Pass("fold_batchnorm", fold_batchnorm.run),
    Pass("patterns", patterns.run),
    Pass("reshape_dims", reshape_dims.run, needs_shapes=True),
    Pass("transpose_reshape", transpose_reshape.run),
    Pass("fuse_activation", fuse_activation.run, needs_shapes=True),
    Pass("fuse_bias_gelu", fuse_bias_gelu.run, needs_shapes=True),
]


def optimize_model(model: onnx.ModelProto, skip: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, Report]:
    """Optimise a copy of `model`; returns it and the report of what each pass did. `skip` names passes to
    leave out (quantization skips the com.microsoft fusions: quantizers look for plain ops)."""
    unknown = sorted(set(skip) - {p.name for p in PASSES})
    if unknown:
        raise ValueError(f"no optimizer pass {unknown}; the passes are {[p.name for p in PASSES]}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    report = run_passes(out, [p for p in PASSES if p.name not in skip], infer_shapes=shape_inference.run)
    onnx.checker.check_model(out)
    return out, report


def optimize_package(package, out, overwrite: bool = False, atol: float = 1e-4, rtol: float = 1e-3) -> str:
    """Optimise a loaded package into a new package at `out`, after checking that ONNX Runtime (with its
    own optimisations off, so the comparison sees ours alone) gives the same outputs on random inputs."""
    import time

    import onnxruntime as ort

    from ferry.converters.parity import compare, random_feeds
    from ferry.package import derive

    original = package.full_model()
    optimized, passes = optimize_model(original)
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
    derive(package, optimized, out, step="optimize", details={"passes": passes.counts}, overwrite=overwrite)
    before, after = len(original.graph.node), len(optimized.graph.node)
    return (
        f"wrote {out}: {before} -> {after} nodes; passes that changed the graph: {passes.summary()}\n"
        f"{report}\n"
        f"ONNX Runtime with its own optimisations off, batch 2: {timings[0]:.2f} -> {timings[1]:.2f} ms"
    )


__all__ = ["PASSES", "Pass", "PassResult", "Report", "optimize_model", "optimize_package", "run_passes"]
