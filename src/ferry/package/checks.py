"""The checks `ferry.load` runs before anything executes. Each raises the most specific error it can."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

import onnx

from ferry.errors import ChecksumError, SignatureMismatchError, UnsafePathError, UnsupportedModelError
from ferry.package.manifest import FileEntry, Manifest, Signature

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inside(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`, refusing absolute paths, `..` and links that lead out."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise UnsafePathError(f"{root}: path {relative!r} is absolute; package files must be relative")
    if ".." in pure.parts:
        raise UnsafePathError(f"{root}: path {relative!r} contains '..'; package files must stay inside")
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root / pure))
    if target != real_root and real_root not in target.parents:
        raise UnsafePathError(f"{root}: path {relative!r} resolves to {target}, outside the package (a link?)")
    return target


def check_files(root: Path, files: dict[str, FileEntry]) -> None:
    """Every listed file exists inside the package with the recorded size and sha256."""
    for name, entry in files.items():
        path = inside(root, name)
        if not path.is_file():
            raise ChecksumError(f"{root / name}: listed in ferry.json but missing")
        size = path.stat().st_size
        if size != entry.size:
            raise ChecksumError(
                f"{root / name}: size is {size} bytes, manifest says {entry.size} (truncated or replaced?)"
            )
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise ChecksumError(
                f"{root / name}: sha256 {actual[:12]}... differs from manifest's {entry.sha256[:12]}..."
            )


def external_data_locations(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor name, location) for every tensor stored outside the .onnx file, subgraphs included."""
    found = []

    def visit(graph: onnx.GraphProto) -> None:
        tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)
        for t in tensors:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                loc = next((e.value for e in t.external_data if e.key == "location"), "")
                found.append((t.name, loc))

    visit(model.graph)
    return found


def check_external_data(root: Path, model: onnx.ModelProto, files: dict[str, FileEntry]) -> None:
    for tensor, location in external_data_locations(model):
        if not location:
            raise UnsafePathError(f"{root}/model.onnx: tensor {tensor!r} is external but names no location")
        try:
            inside(root, location)
        except UnsafePathError as exc:
            raise UnsafePathError(f"{root}/model.onnx: external data of tensor {tensor!r}: {exc}") from None
        if PurePosixPath(location).as_posix() not in files:
            raise ChecksumError(
                f"{root}/model.onnx: tensor {tensor!r} reads {location!r}, which ferry.json does not list"
            )


def check_ops(model: onnx.ModelProto, source: str) -> None:
    """Ops of the standard domains must exist in ONNX at the model's opset; custom domains pass here."""
    opsets = {imp.domain or "": imp.version for imp in model.opset_import}
    unknown = []

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            domain = node.domain or ""
            if domain in ("", "ai.onnx", "ai.onnx.ml"):
                version = opsets.get(domain, opsets.get("", 1))
                try:
                    onnx.defs.get_schema(node.op_type, version, domain)
                except onnx.defs.SchemaError:
                    unknown.append(f"{node.op_type} (node {node.name or '?'}, domain {domain or 'ai.onnx'})")
            elif domain not in opsets:
                unknown.append(f"{node.op_type} (node {node.name or '?'}): domain {domain!r} not imported")
            for attr in node.attribute:
                for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                    visit(g)

    visit(model.graph)
    if unknown:
        raise UnsupportedModelError(f"{source}: unknown ops: {', '.join(unknown)}")


def check_signature(manifest: Manifest, graph_sig: Signature, source: str) -> None:
    """The manifest may name dynamic dims or narrow them, but must agree with the graph on the rest."""
    for side in ("inputs", "outputs"):
        declared = getattr(manifest.signature, side)
        actual = getattr(graph_sig, side)
        if [s.name for s in declared] != [s.name for s in actual]:
            raise SignatureMismatchError(
                f"{source}: manifest {side} {[s.name for s in declared]} differ from the graph's "
                f"{[s.name for s in actual]}"
            )
        for want, got in zip(declared, actual):
            if want.dtype != got.dtype or len(want.shape) != len(got.shape):
                raise SignatureMismatchError(
                    f"{source}: {side[:-1]} {want.name!r} is {want.describe()} in the manifest "
                    f"but {got.describe()} in the graph"
                )
            for axis, (w, g) in enumerate(zip(want.shape, got.shape)):
                if isinstance(g, int) and w != g:
                    raise SignatureMismatchError(
                        f"{source}: {side[:-1]} {want.name!r} axis {axis} is {w} in the manifest but {g} in the graph"
                    )
