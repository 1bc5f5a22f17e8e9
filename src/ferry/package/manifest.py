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

    @property
    def named_inner_dims(self) -> set[str]:
        """Names of the inputs' dimensions past the batch axis (an image's height and width, a sequence):
        what an engine that converts at fixed shapes has to be told."""
        return {d for s in self.inputs for d in s.shape[1:] if isinstance(d, str)}

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
    # Each step that made this package from another (optimize, quantize, ...), oldest first: {"step", "at", ...}
    derived_from: list[dict[str, Any]] = field(default_factory=list)


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
    # Device engines' own files made from model.onnx (ncnn .param/.bin, MNN .mnn): per engine, the files
    # (also listed, checksummed, in `files`), the name each input and output has there, and the converter.
    engines: dict[str, Any] = field(default_factory=dict)
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
        for key in ("preprocessing", "postprocessing", "labels", "tuning", "compression", "engines"):
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
            engines=dict(data.get("engines", {})),
        )


def _spec(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], d["dtype"], tuple(d["shape"]), d.get("description", ""))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _got(value: Any) -> str:
    shown = repr(value)
    return f"{shown[:40]}..." if len(shown) > 40 else shown


# Provenance fields and the type each must have; the dataclass above is built from these.
_PROVENANCE_TYPES = {"framework": str, "framework_version": str, "converter": str, "converter_version": str,
                     "opset": int, "created": str}  # fmt: skip
_TOP_LEVEL = {"format_version", "name", "version", "signature", "provenance", "files", "preprocessing",
              "postprocessing", "labels", "tuning", "compression", "engines"}  # fmt: skip


def _schema_problems(data: Any) -> list[str]:
    """Every way `data` breaks the manifest schema, as readable phrases: the field, what was expected, what
    came. Types are checked here so that nothing malformed reaches the code that reads the fields."""
    if not isinstance(data, dict):
        return [f"expected a JSON object at the top level, got {type(data).__name__}"]
    problems: list[str] = []
    version = data.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        problems.append(f"format_version must be the integer {FORMAT_VERSION}, got {_got(version)}")
    if not isinstance(data.get("name"), str) or not data.get("name"):
        problems.append(f"'name' must be a non-empty string, got {_got(data.get('name'))}")
    pkg_version = data.get("version", "1")
    if not (isinstance(pkg_version, str) and 0 < len(pkg_version) <= 64) and not (
        _is_int(pkg_version) and 0 <= pkg_version < 10**18
    ):
        problems.append(f"'version' must be a short string or a non-negative integer, got {_got(pkg_version)}")
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
    problems += _provenance_problems(data.get("provenance", {}))
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        problems.append("'files' must map each file name to {sha256, size}")
    else:
        for fname, entry in files.items():
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and len(entry["sha256"]) == 64
                and all(c in "0123456789abcdef" for c in entry["sha256"])
                and _is_int(entry.get("size"))
                and entry["size"] >= 0
            )
            if not ok:
                problems.append(f"files[{fname!r}] must be {{sha256: 64 hex chars, size: int >= 0}}, got {_got(entry)}")
    problems += _steps_problems(data.get("preprocessing", []), "preprocessing")
    problems += _steps_problems(data.get("postprocessing", []), "postprocessing")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        problems.append(f"'labels' must be a list of strings, got {_got(labels)}")
    for key in ("tuning", "compression", "engines"):
        if not isinstance(data.get(key, {}), dict):
            problems.append(f"'{key}' must be an object, got {_got(data.get(key))}")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        problems.append(f"unknown field(s) {unknown}; a manifest holds {sorted(_TOP_LEVEL)}")
    return problems


def _provenance_problems(prov: Any) -> list[str]:
    if not isinstance(prov, dict):
        return [f"'provenance' must be an object, got {_got(prov)}"]
    problems = []
    for key, value in prov.items():
        wanted = _PROVENANCE_TYPES.get(key)
        if key == "derived_from":
            if not isinstance(value, list) or not all(isinstance(step, dict) for step in value):
                problems.append(f"provenance.derived_from must be a list of objects, got {_got(value)}")
        elif wanted is None:
            problems.append(f"provenance.{key} is not a provenance field; known: {sorted(_PROVENANCE_TYPES)}")
        elif not isinstance(value, wanted) or isinstance(value, bool):
            problems.append(f"provenance.{key} must be {wanted.__name__}, got {_got(value)}")
    return problems


def _steps_problems(steps: Any, key: str) -> list[str]:
    """Steps must name a known op and only arguments that op takes."""
    import inspect

    from ferry.processing import POSTPROCESS_OPS, PREPROCESS_OPS
    from ferry.processing.image import step_function

    if not isinstance(steps, list):
        return [f"'{key}' must be a list of steps, got {_got(steps)}"]
    known = PREPROCESS_OPS if key == "preprocessing" else frozenset(POSTPROCESS_OPS)
    problems = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("op"), str):
            problems.append(f"{key}[{i}] must be an object with an 'op', got {_got(step)}")
            continue
        op = step["op"]
        if op not in known:
            problems.append(f"{key}[{i}]: unknown op {op!r}; known: {sorted(known)}")
            continue
        fn = step_function(op) if key == "preprocessing" else POSTPROCESS_OPS[op]
        args = {k: v for k, v in step.items() if k != "op"}
        try:
            inspect.signature(fn).bind(None, **args)
        except TypeError as exc:
            problems.append(f"{key}[{i}] ({op}): {exc}")
    return problems


def _spec_problems(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["must be an object with name, dtype, shape"]
    problems = []
    if not isinstance(spec.get("name"), str) or not spec.get("name"):
        problems.append("'name' must be a non-empty string")
    if not isinstance(spec.get("description", ""), str):
        problems.append(f"'description' must be a string, got {_got(spec.get('description'))}")
    if spec.get("dtype") not in DTYPE_NAMES:
        problems.append(f"dtype {spec.get('dtype')!r} is not one of {sorted(DTYPE_NAMES)}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (isinstance(d, str) and d) for d in shape
    ):
        problems.append(f"shape must be a list of sizes (int >= 0) or dimension names, got {shape!r}")
    return problems
