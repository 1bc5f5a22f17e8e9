"""PyTorch -> package: the dynamo exporter first, the TorchScript exporter when dynamo fails."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import Any

import onnx

from ferry.converters._common import check_package, ferry_version, log, quiet, version_of
from ferry.converters.result import Conversion
from ferry.errors import ConversionError
from ferry.package import Provenance, save


def export(
    module: Any,
    example_inputs: Any,
    path: str | os.PathLike[str],
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    **package_fields: Any,
) -> Conversion:
    """Export `module` called on `example_inputs` (a tensor or a tuple of tensors) as a package at `path`.

    The batch axis (0) of every input and output is dynamic unless `dynamic_axes` says otherwise
    (pass `{}` for fully static shapes). `exporter` is "auto" (dynamo, then TorchScript), "dynamo" or
    "torchscript". Extra keyword arguments (name, labels, preprocessing, ...) go to `ferry.save`.
    """
    try:
        import torch
    except ImportError:
        raise ConversionError("exporting a PyTorch module needs torch: pip install 'ferry[torch]'") from None
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ConversionError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise ConversionError("example_inputs must be a torch.Tensor or a tuple of them")
    module.eval()
    with torch.no_grad():
        expected = module(*args)
    expected_list = _flatten(expected)
    input_names = input_names or [f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))]
    output_names = output_names or (
        [f"output_{i}" for i in range(len(expected_list))] if len(expected_list) > 1 else ["output"]
    )
    if len(input_names) != len(args) or len(output_names) != len(expected_list):
        raise ConversionError(
            f"{len(args)} inputs and {len(expected_list)} outputs, but {len(input_names)} input_names "
            f"and {len(output_names)} output_names were given"
        )
    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}

    failures = []
    model = used = None
    for kind in ("dynamo", "torchscript") if exporter == "auto" else (exporter,):
        try:
            with eager_attention(module):
                model = _export(torch, module, args, kind, input_names, output_names, dynamic_axes, opset)
            used = kind
            break
        except Exception as exc:  # exporters fail in many ways; we report each and try the next
            failures.append(f"{kind}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            log.info("torch %s exporter failed: %s", kind, failures[-1])
    if model is None:
        raise ConversionError("torch export failed with every exporter: " + " | ".join(failures))

    provenance = Provenance(
        framework="torch",
        framework_version=torch.__version__,
        converter=f"ferry {ferry_version()} via torch.onnx ({used})",
        converter_version=version_of("onnxscript") if used == "dynamo" else torch.__version__,
    )
    package = save(model, path, provenance=provenance, **package_fields)
    notes = tuple(f"exporter {f}" for f in failures)
    report = None
    if check:
        feeds = {name: a.detach().cpu().numpy() for name, a in zip(input_names, args)}
        expected_np = [t.detach().cpu().numpy() for t in expected_list]
        report = check_package(package, feeds, expected_np, atol, rtol)
    return Conversion(package, f"torch.onnx ({used})", report, notes)


@contextlib.contextmanager
def eager_attention(module: Any) -> Iterator[None]:
    """Export transformers models with their "eager" attention (matmul, softmax, matmul), not SDPA, and put
    back what they had. ONNX Runtime's transformer optimizer fuses the eager form into one Attention op and
    does not recognise the SDPA export: small BERT, batch 32, 2 threads: 251.6 ms as exported with SDPA,
    220.4 ms eager and fused (torch eager itself 276.6 ms), the same outputs."""
    switched = []
    for sub in module.modules():
        config = getattr(sub, "config", None)
        current = getattr(config, "_attn_implementation", None)
        if current not in (None, "eager") and hasattr(sub, "set_attn_implementation"):
            try:
                sub.set_attn_implementation("eager")
            except (ValueError, ImportError):  # a model without an eager path keeps its own
                continue
            switched.append((sub, current))
    try:
        yield
    finally:
        for sub, current in switched:
            sub.set_attn_implementation(current)


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if hasattr(value, "to_tuple"):  # transformers' ModelOutput
        return _flatten(value.to_tuple())
    return [value]


def _export(torch, module, args, kind, input_names, output_names, dynamic_axes, opset) -> onnx.ModelProto:
    with quiet():
        if kind == "dynamo":
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes or None,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
            model = program.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(
                module,
                args,
                buf,
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes or None,
                opset_version=opset or 17,
            )
            model = onnx.load_from_string(buf.getvalue())
    got = [o.name for o in model.graph.output]
    if got != output_names:
        raise ConversionError(f"exporter named the outputs {got}, expected {output_names}")
    return model


__all__ = ["export"]
