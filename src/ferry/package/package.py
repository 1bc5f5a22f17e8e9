"""The model package: a folder with model.onnx, its external data if any, and ferry.json.

`load` checks everything before a backend sees the model; `save` writes a pruned graph and a manifest
that records the sha256 of every file, atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from ferry.errors import ManifestError, PackageError
from ferry.files import atomic_write
from ferry.package import checks, graph
from ferry.package.constants import MAX_CONSTANT_BYTES, check_constant_sizes
from ferry.package.manifest import MANIFEST_NAME, FileEntry, Manifest, Provenance, Signature

MODEL_NAME = "model.onnx"
DATA_NAME = "model.onnx.data"
# Above this, weights go to an external-data file: protobuf cannot hold 2 GiB in one message.
EXTERNAL_DATA_THRESHOLD = 1 << 30


@dataclass
class ModelPackage:
    """A validated package. `root` is None for a bare .onnx file wrapped in memory."""

    manifest: Manifest
    model_path: Path
    root: Path | None = None
    _model: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def signature(self) -> Signature:
        return self.manifest.signature

    @property
    def opset(self) -> int:
        return graph.default_opset(self.graph_proto())

    def graph_proto(self) -> onnx.ModelProto:
        """The graph without external weights: enough for inspection and signature work."""
        if self._model is None:
            self._model = _read_onnx(self.model_path, load_external_data=False)
        return self._model

    def full_model(self) -> onnx.ModelProto:
        """The model with every weight in memory (for rewrites and converters)."""
        return onnx.load(str(self.model_path), load_external_data=True)

    def save_tuning(self, tuning: dict[str, Any]) -> None:
        """Record what `ferry bench --tune` measured; the files themselves are untouched."""
        self.manifest.tuning = tuning
        self.write_manifest()

    def add_engine(self, engine: str, folder: Path, record: dict[str, Any]) -> None:
        """Move an engine's converted files (`folder`'s) into `engines/<engine>/`, list them with their
        checksums, and record `record` under `engines`: `ferry.load` then verifies them as any other file.
        The files land whole before the manifest names them."""
        if self.root is None:
            raise PackageError(f"{self.model_path}: a bare .onnx file has no manifest to record in")
        target = self.root / "engines" / engine
        target.parent.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{engine}.", dir=target.parent))
        for f in sorted(folder.iterdir()):
            shutil.copyfile(f, staging / f.name)
        for name in [n for n in self.manifest.files if n.startswith(f"engines/{engine}/")]:
            del self.manifest.files[name]
        swap_in(staging, target)
        for f in sorted(target.iterdir()):
            self.manifest.files[f"engines/{engine}/{f.name}"] = FileEntry(checks.sha256_of(f), f.stat().st_size)
        self.manifest.engines[engine] = record
        self.write_manifest()

    def write_manifest(self) -> None:
        """Write the in-memory manifest back (records such as tuning and compression; not the files list)."""
        if self.root is None:
            raise PackageError(f"{self.model_path}: a bare .onnx file has no manifest to record in")
        _write_json_atomic(self.root / MANIFEST_NAME, self.manifest.to_dict())


def load(path: str | os.PathLike[str], max_constant_bytes: int | None = MAX_CONSTANT_BYTES) -> ModelPackage:
    """Open a package folder (or a bare .onnx file) and validate it; raises a PackageError subclass.

    `max_constant_bytes` bounds what the graph computes from constants alone (see `package/constants.py`);
    None turns the check off."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return _wrap_bare_onnx(path, max_constant_bytes)
    if not path.is_dir():
        raise PackageError(f"{path}: not a package folder or an .onnx file")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ManifestError(f"{path}: no {MANIFEST_NAME}; is this a ferry package? (`ferry convert` makes one)")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # ValueError: JSON, or a 5000-digit number
        reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        raise ManifestError(f"{manifest_path}: not valid JSON ({reason})") from None
    manifest = Manifest.from_dict(data, source=str(manifest_path))
    if MODEL_NAME not in manifest.files:
        raise ManifestError(f"{manifest_path}: 'files' does not list {MODEL_NAME}")
    checks.check_files(path, manifest.files)
    model = _read_onnx(path / MODEL_NAME, load_external_data=False)
    checks.check_external_data(path, model, manifest.files)
    checks.check_ops(model, str(path / MODEL_NAME))
    check_constant_sizes(model, max_constant_bytes, str(path / MODEL_NAME))
    checks.check_signature(manifest, graph.read_signature(model), str(path))
    return ModelPackage(manifest=manifest, model_path=path / MODEL_NAME, root=path, _model=model)


def _read_onnx(path: Path, load_external_data: bool) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise PackageError(f"{path}: not a valid ONNX model ({exc.__class__.__name__}: {exc})") from None


def _wrap_bare_onnx(path: Path, max_constant_bytes: int | None) -> ModelPackage:
    model = _read_onnx(path, load_external_data=False)
    root = path.parent
    files = {}
    for _, location in checks.external_data_locations(model):
        target = checks.inside(root, location)
        if not target.is_file():
            raise PackageError(f"{path}: external data file {location!r} is missing")
        files[location] = FileEntry(sha256="", size=target.stat().st_size)
    checks.check_external_data(root, model, files)
    checks.check_ops(model, str(path))
    check_constant_sizes(model, max_constant_bytes, str(path))
    graph.name_dynamic_dims(model)
    manifest = Manifest(
        name=path.stem,
        signature=graph.read_signature(model),
        provenance=Provenance(framework="onnx", opset=graph.default_opset(model)),
        files=files,
    )
    return ModelPackage(manifest=manifest, model_path=path, root=None, _model=model)


def save(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: str = "1",
    outputs: list[str] | None = None,
    dim_names: dict[str, str] | None = None,
    provenance: Provenance | None = None,
    preprocessing: list[dict[str, Any]] | None = None,
    postprocessing: list[dict[str, Any]] | None = None,
    labels: list[str] | None = None,
    descriptions: dict[str, str] | None = None,
    external_data: bool | None = None,
    overwrite: bool = False,
    compression: dict[str, Any] | None = None,
    tuning: dict[str, Any] | None = None,
) -> ModelPackage:
    """Write `model` as a package at `path`, pruned to `outputs`, and return it loaded and validated."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise PackageError(f"{path}: already exists (pass overwrite=True, or --overwrite on the command line)")
    model = onnx.ModelProto.FromString(model.SerializeToString()) if model.ByteSize() < (1 << 31) - 1 else model
    graph.drop_training_nodes(model)
    model = _infer_shapes(model)
    graph.prune(model, outputs)
    _drop_stale_value_info(model)
    graph.name_dynamic_dims(model, dim_names)
    for value in [*graph.graph_inputs(model), *model.graph.output]:
        if descriptions and value.name in descriptions:
            value.doc_string = descriptions[value.name]
    checks.check_ops(model, str(path / MODEL_NAME))

    provenance = provenance or Provenance()
    provenance.opset = graph.default_opset(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a package is meant to be shared
    try:
        big = model.ByteSize() > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
        onnx.save_model(
            model,
            str(staging / MODEL_NAME),
            save_as_external_data=big,
            all_tensors_to_one_file=True,
            location=DATA_NAME,
            size_threshold=0 if external_data else 1024,
        )
        files = {
            f.name: FileEntry(sha256=checks.sha256_of(f), size=f.stat().st_size) for f in sorted(staging.iterdir())
        }
        manifest = Manifest(
            name=name or path.name,
            version=version,
            signature=graph.read_signature(model),
            provenance=provenance,
            files=files,
            preprocessing=list(preprocessing or []),
            postprocessing=list(postprocessing or []),
            labels=list(labels or []),
            compression=dict(compression or {}),
            tuning=dict(tuning or {}),
        )
        _write_json_atomic(staging / MANIFEST_NAME, manifest.to_dict())
        swap_in(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load(path)


def swap_in(staging: Path, path: Path) -> None:
    """Put the folder `staging` at `path`. A package already there is moved aside first and removed only
    after the new one is in place, so that an interruption leaves the old or the new one, never neither."""
    aside = None
    if path.exists():
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
    try:
        os.replace(staging, path)
    except BaseException:
        if aside is not None:
            os.replace(aside, path)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def derive(
    source: ModelPackage,
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    step: str,
    details: dict[str, Any] | None = None,
    overwrite: bool = False,
    **fields: Any,
) -> ModelPackage:
    """Save `model`, made from `source` by `step` ("optimize", "quantize", ...), as a package at `path`.

    Every manifest field of `source` is carried forward (name, version, processing, labels, compression,
    tuning, provenance) unless `fields` sets it, and the step is appended to `provenance.derived_from`
    with `details`, so that `inspect` can tell where a package came from and what was done to it."""
    m = source.manifest
    step_record = {"step": step, "from": f"{m.name} {m.version}", "at": _now(), **(details or {})}
    provenance = replace(m.provenance, derived_from=[*m.provenance.derived_from, step_record])
    carried: dict[str, Any] = {
        "name": m.name,
        "version": m.version,
        "preprocessing": m.preprocessing,
        "postprocessing": m.postprocessing,
        "labels": m.labels,
        "compression": m.compression,
        "tuning": m.tuning,
    }
    carried.update(fields)
    return save(model, path, provenance=provenance, overwrite=overwrite, **carried)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError):
        return model  # shapes are a convenience here; the graph's declared inputs/outputs still stand


def _drop_stale_value_info(model: onnx.ModelProto) -> None:
    produced = {o for n in model.graph.node for o in n.output}
    kept = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
