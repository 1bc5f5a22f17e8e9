"""The manifest, ferry.json: what a package holds and how to call it.

Dataclasses mirror the JSON one to one. `Manifest.from_dict` checks the whole document and reports
every violation at once, so a hand-edited manifest is fixed in one go.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

from ferry.dtypes import DTYPE_NAMES
from ferry.errors import ManifestError

FORMAT_VERSION = 1
MANIFEST_NAME = "ferry.json"

Dim = int | str  # a fixed size, or the name of a dynamic dimension such as "batch"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...]
    description: str = ""

    def describe(self) -> str:
        """`float32[batch,3,224,224]`, the form used in every message."""
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(s for s in self.outputs if s.name == name)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }


@dataclass
class Provenance:
    framework: str = "onnx"
    framework_version: str = ""
    converter: str = ""
    converter_version: str = ""
    opset: int = 0
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


@dataclass
class FileEntry:
    sha256: str
    size: int


@dataclass
class Manifest:
    name: str
    signature: Signature
    version: str = "1"
    provenance: Provenance = field(default_factory=Provenance)
    files: dict[str, FileEntry] = field(default_factory=dict)
    preprocessing: list[dict[str, Any]] = field(default_factory=list)
    postprocessing: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    # What `ferry bench --tune` measured: {"fp32": {"1": "openvino", "32": "onnxruntime"}, ...}
    tuning: dict[str, Any] = field(default_factory=dict)
    # What `ferry quantize` / `convert-precision` / `prune` did: method, format, target backend, results.
    compression: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "signature": self.signature.to_dict(),
            "provenance": asdict(self.provenance),
            "files": {k: asdict(v) for k, v in sorted(self.files.items())},
        }
        for key in ("preprocessing", "postprocessing", "labels", "tuning", "compression"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        problems = _schema_problems(data)
        if problems:
            raise ManifestError(f"{source}: " + "; ".join(problems))
        sig = data["signature"]
        prov = data.get("provenance", {})
        return cls(
            format_version=data["format_version"],
            name=data["name"],
            version=str(data.get("version", "1")),
            signature=Signature(
                inputs=tuple(_spec(s) for s in sig["inputs"]),
                outputs=tuple(_spec(s) for s in sig["outputs"]),
            ),
            provenance=Provenance(**{k: prov[k] for k in Provenance.__dataclass_fields__ if k in prov}),
            files={k: FileEntry(sha256=v["sha256"], size=v["size"]) for k, v in data["files"].items()},
            preprocessing=list(data.get("preprocessing", [])),
            postprocessing=list(data.get("postprocessing", [])),
            labels=[str(x) for x in data.get("labels", [])],
            tuning=dict(data.get("tuning", {})),
            compression=dict(data.get("compression", {})),
        )


def _spec(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], d["dtype"], tuple(d["shape"]), d.get("description", ""))


def _schema_problems(data: Any) -> list[str]:
    """Every way `data` breaks the manifest schema, as readable phrases."""
    if not isinstance(data, dict):
        return [f"expected a JSON object at the top level, got {type(data).__name__}"]
    problems: list[str] = []
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        problems.append(f"format_version must be {FORMAT_VERSION}, got {version!r}")
    if not isinstance(data.get("name"), str) or not data.get("name"):
        problems.append("'name' must be a non-empty string")
    sig = data.get("signature")
    if not isinstance(sig, dict):
        problems.append("'signature' must be an object with 'inputs' and 'outputs'")
    else:
        for side in ("inputs", "outputs"):
            specs = sig.get(side)
            if not isinstance(specs, list) or not specs:
                problems.append(f"signature.{side} must be a non-empty list")
                continue
            for i, spec in enumerate(specs):
                problems += [f"signature.{side}[{i}]: {p}" for p in _spec_problems(spec)]
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        problems.append("'files' must map each file name to {sha256, size}")
    else:
        for fname, entry in files.items():
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and len(entry["sha256"]) == 64
                and isinstance(entry.get("size"), int)
            )
            if not ok:
                problems.append(f"files[{fname!r}] must be {{sha256: 64 hex chars, size: int}}")
    for key in ("preprocessing", "postprocessing"):
        steps = data.get(key, [])
        if not isinstance(steps, list) or not all(isinstance(s, dict) and "op" in s for s in steps):
            problems.append(f"'{key}' must be a list of steps, each an object with an 'op'")
    if not isinstance(data.get("labels", []), list):
        problems.append("'labels' must be a list")
    return problems


def _spec_problems(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["must be an object with name, dtype, shape"]
    problems = []
    if not isinstance(spec.get("name"), str) or not spec.get("name"):
        problems.append("'name' must be a non-empty string")
    if spec.get("dtype") not in DTYPE_NAMES:
        problems.append(f"dtype {spec.get('dtype')!r} is not one of {sorted(DTYPE_NAMES)}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (isinstance(d, str) and d) for d in shape
    ):
        problems.append(f"shape must be a list of sizes (int >= 0) or dimension names, got {shape!r}")
    return problems
