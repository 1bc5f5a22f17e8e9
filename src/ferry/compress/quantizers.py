"""The quantizers, one function per engine's tool: ONNX Runtime's static (with ferry's MSE ranges as
overrides) and dynamic int8, its weight-only MatMulNBits, and NNCF's static int8 for OpenVINO. Each takes
an fp32 `onnx.ModelProto` and the node names to leave in float, and returns the quantized model;
`quantize.py` chooses among them and runs the accuracy guard."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ferry.errors import BackendUnavailableError


def _to_file(model: onnx.ModelProto, folder: str) -> Path:
    """ONNX Runtime's quantizers work on files; weights go inline (they re-save and re-read the model)."""
    from onnx.external_data_helper import convert_model_from_external_data

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    convert_model_from_external_data(copy)
    path = Path(folder) / "fp32.onnx"
    onnx.save(copy, str(path))
    return path


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter = iter(feeds)

    def get_next(self):
        return next(self._iter, None)


def _mse_ranges(model: onnx.ModelProto, feeds: list[dict]) -> dict[str, list[dict[str, float]]]:
    """Per activation tensor, the clipping range that minimises the mean squared error of uint8
    quantization over the calibration data (searched over shrinking fractions of the observed range)."""
    from ferry.compress.sensitivity import run_tensors

    names = [o for n in model.graph.node for o in n.output if o]
    inputs = [i.name for i in model.graph.input]
    values = run_tensors(model, inputs + names, feeds)
    overrides = {}
    for name, chunks in values.items():
        x = np.concatenate([c.reshape(-1) for c in chunks]).astype(np.float32)
        if x.dtype.kind != "f" or x.size == 0:
            continue
        lo, hi = float(min(x.min(), 0.0)), float(max(x.max(), 0.0))
        if hi - lo <= 0:
            continue
        sample = x[:: max(1, x.size // 200_000)]
        best, best_err = (lo, hi), np.inf
        for frac in np.linspace(0.3, 1.0, 29):
            a, b = lo * frac, hi * frac
            scale = (b - a) / 255.0
            zp = np.round(-a / scale)
            q = np.clip(np.round(sample / scale) + zp, 0, 255)
            err = float(np.mean(((q - zp) * scale - sample) ** 2))
            if err < best_err:
                best, best_err = (a, b), err
        overrides[name] = [{"rmin": np.float32(best[0]), "rmax": np.float32(best[1])}]
    return overrides


def ort_static(model, feeds, method, fmt, per_channel, exclude, symmetric: bool = False) -> onnx.ModelProto:
    """ONNX Runtime's static quantizer. `symmetric`: int8 activations with zero points at 0 (TensorRT reads
    only that form of QDQ)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy, "mse": CalibrationMethod.MinMax}[method]  # fmt: skip
    extra: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    if method == "mse":
        extra["TensorQuantOverrides"] = _mse_ranges(model, feeds)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize_static(
            _to_file(model, tmp), out, _Reader(feeds),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel, activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib, nodes_to_exclude=list(exclude), extra_options=extra,
        )  # fmt: skip
        return onnx.load(str(out))


def ort_dynamic(model, exclude) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize_dynamic(_to_file(model, tmp), out, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude))
        return onnx.load(str(out))


def weight_only(model, bits, exclude) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=32, is_symmetric=True,
                                     nodes_to_exclude=list(exclude))  # fmt: skip
    quantizer.process()
    return quantizer.model.model


def nncf_static(model, feeds, exclude) -> onnx.ModelProto:
    try:
        import nncf
    except ImportError:
        raise BackendUnavailableError("int8 for OpenVINO uses NNCF: pip install 'ferry[compress]'") from None
    scope = nncf.IgnoredScope(names=list(exclude), validate=False) if exclude else None
    kwargs: dict[str, Any] = {"ignored_scope": scope} if scope else {}
    if any(n.op_type in ("Softmax", "LayerNormalization", "Attention") for n in model.graph.node):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER  # NNCF's scheme that keeps attention accurate
    quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **kwargs)
    from ferry.compress.weights import fold_weight_quantizers

    fold_weight_quantizers(quantized)
    return quantized
