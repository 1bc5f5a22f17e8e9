"""What the device engines' converters share: the record of a conversion, and the fixed input shapes
converters need (ncnn's pnnx traces at one shape)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ferry.errors import ConversionError
from ferry.package import ModelPackage


@dataclass
class EngineModel:
    """An engine's files for a package: written by its converter, recorded in the package's manifest."""

    engine: str  # "ncnn", "mnn", "ort"
    files: list[str]  # names inside the engine's folder, the model file first
    inputs: dict[str, str]  # package input name -> the engine's name for it
    outputs: dict[str, str]
    converter: str  # e.g. "pnnx 20261020"
    shapes: dict[str, list[int]] = field(default_factory=dict)  # the shapes it was converted at, if fixed
    options: dict[str, Any] = field(default_factory=dict)  # fp16 storage, int8 weights
    refused: str = ""  # a recorded refusal (no files): why the converter would not take the model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineModel:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def fixed_shapes(package: ModelPackage, shapes: dict[str, list[int]] | None, target: str) -> dict[str, list[int]]:
    """Each input's shape with axis 0 at 1 when it is the named batch axis, taken from `shapes` where the
    caller fixed it; another named dimension without a size is an error that says how to give one."""
    shapes = shapes or {}
    unknown = sorted(set(shapes) - set(package.signature.input_names))
    if unknown:
        raise ConversionError(f"shapes given for {unknown}, but the model's inputs are {package.signature.input_names}")
    out = {}
    for spec in package.signature.inputs:
        if spec.name in shapes:
            out[spec.name] = [int(d) for d in shapes[spec.name]]
            continue
        dims = [1 if axis == 0 and isinstance(d, str) else d for axis, d in enumerate(spec.shape)]
        free = [d for d in dims if isinstance(d, str)]
        if free:
            raise ConversionError(
                f"{target} converts at fixed input shapes; input {spec.name!r} has {list(spec.shape)}: give its "
                f"shape, e.g. --shape {spec.name}="
                + "x".join("1" if isinstance(d, str) else str(d) for d in spec.shape)
            )
        out[spec.name] = dims
    return out
