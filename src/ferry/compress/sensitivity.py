"""Which layers hurt accuracy when quantized: each layer's output error against fp32.

The QDQ form of a quantized model keeps the float tensor names of the original graph (Q/DQ pairs sit
between the ops), so the same intermediate tensor can be read from both models by name. For every
quantizable node, the error it adds is the relative RMS error of its output minus the largest relative
error already present in its inputs (never below zero): a layer is blamed for the error it introduces,
not for what it inherits from layers before it. A tensor the int8 graph no longer holds as a float of the
same shape is "not measured", never an error of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

QUANTIZABLE = {"Conv", "MatMul", "Gemm", "ConvTranspose", "Attention", "LSTM", "GRU"}


@dataclass(frozen=True)
class LayerError:
    node: str
    op: str
    output: str
    # Relative RMS error of the node's output; None when the quantized graph has no float tensor of that name
    # and shape to compare (the quantizer fused it away, or the name now holds int8 values).
    error: float | None
    added: float | None  # error minus the worst measured error of its inputs; None when error is


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    produced = {o for n in out.graph.node for o in n.output} | {i.name for i in out.graph.input}
    for name in names:
        if name not in existing and name in produced:  # a quantizer may have removed it (a fused Relu)
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out.SerializeToString()


def run_tensors(model: onnx.ModelProto, names: list[str], feeds: list[dict]) -> dict[str, list[np.ndarray]]:
    """Named intermediate tensors of `model` (those it still has) over each batch of `feeds`, in ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(_with_outputs(model, names), providers=["CPUExecutionProvider"])
    available = {o.name for o in session.get_outputs()}
    wanted = [n for n in names if n in available]
    results: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for batch in feeds:
        for name, value in zip(wanted, session.run(wanted, batch)):
            results[name].append(value)
    return results


def layer_errors(fp32: onnx.ModelProto, quantized_qdq: onnx.ModelProto, feeds: list[dict]) -> list[LayerError]:
    """Per quantizable node of `fp32`, its output error in `quantized_qdq`; worst added error first."""
    nodes = [n for n in fp32.graph.node if n.op_type in QUANTIZABLE and n.output and n.output[0]]
    producers = {o: n for n in fp32.graph.node for o in n.output}
    tensors = sorted({n.output[0] for n in nodes} | {i for n in nodes for i in n.input if i in producers})
    want = run_tensors(fp32, tensors, feeds)
    got = run_tensors(quantized_qdq, tensors, feeds)

    def rel(name: str) -> float | None:
        if name not in want or name not in got:
            return None
        pairs = list(zip(want[name], got[name]))
        if any(w.shape != g.shape or g.dtype.kind != "f" for w, g in pairs):
            return None  # not the same tensor any more: comparing would invent an error
        a = np.concatenate([w.reshape(-1) for w, _ in pairs]).astype(np.float64)
        b = np.concatenate([g.reshape(-1) for _, g in pairs]).astype(np.float64)
        return float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(a**2)) + 1e-12))

    rows = []
    for node in nodes:
        error = rel(node.output[0])
        inputs = [e for e in (rel(i) for i in node.input if i in producers) if e is not None]
        added = None if error is None else max(0.0, error - max(inputs, default=0.0))
        rows.append(LayerError(node.name or node.output[0], node.op_type, node.output[0], error, added))
    # Worst first; layers that could not be measured last, in graph order.
    return sorted(rows, key=lambda r: (r.added is None, -(r.added or 0.0), -(r.error or 0.0)))


def table(rows: list[LayerError], limit: int = 10) -> str:
    lines = [f"{'layer':<40}{'op':<10}{'output error':>14}{'added here':>12}"]
    for r in rows[:limit]:
        if r.error is None:
            lines.append(f"{r.node[:39]:<40}{r.op:<10}{'not measured: fused away in the int8 graph':>26}")
        else:
            lines.append(f"{r.node[:39]:<40}{r.op:<10}{r.error:>14.4f}{r.added:>12.4f}")
    unmeasured = sum(r.error is None for r in rows)
    if unmeasured:
        lines.append(f"({unmeasured} of {len(rows)} layers had no float output to compare in the int8 graph)")
    return "\n".join(lines)
