"""`ferry export web`: a package as one static folder that runs the model in the page.

The folder (see docs/web.md)::

    index.html    the demo page, made from model.json
    ferry.js      the JS API: load, predict, classify, isolate
    sw.js         caches everything the page fetched and adds the isolation headers (threads on any host)
    model.json    signature, pre/postprocessing, labels, provenance, the model's sha256, the runtime files
    model.onnx    the package's model as it is (int8 or fp16 where `ferry quantize`/`convert-precision` wrote it)
    ort/          onnxruntime-web's loader and wasm for the chosen builds (none with --runtime-url)

It is written in a staging folder beside the target and moved in whole.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from ferry.errors import ExportError
from ferry.package.checks import external_data_locations
from ferry.package.package import ModelPackage, load, swap_in
from ferry.web import runtime

ASSETS = ("index.html", "ferry.js", "sw.js")
RUNTIME_FOLDER = "ort/"


@dataclass
class SiteFile:
    name: str
    size: int
    gzip_size: int


@dataclass
class WebExport:
    path: Path
    precision: str
    builds: list[str]
    files: list[SiteFile] = field(default_factory=list)

    @property
    def transfer(self) -> int:
        """gzip bytes a first visit fetches with the wasm build (the WebGPU build is fetched instead of it)."""
        skip = set(runtime.BUILDS["webgpu"].files) - set(runtime.BUILDS["wasm"].files)
        return sum(f.gzip_size for f in self.files if f.name.removeprefix(RUNTIME_FOLDER) not in skip)

    def summary(self) -> str:
        builds = ", ".join(self.builds)
        lines = [f"wrote {self.path} ({self.precision} model, onnxruntime-web {runtime.VERSION}: {builds})"]
        width = max(len(f.name) for f in self.files)
        lines.append(f"  {'file':<{width}}  {'bytes':>12}  {'gzip':>12}")
        for f in sorted(self.files, key=lambda f: -f.size):
            lines.append(f"  {f.name:<{width}}  {f.size:>12,}  {f.gzip_size:>12,}")
        lines.append(f"  first visit transfers {self.transfer / 1e6:.2f} MB gzip; later visits come from the cache")
        return "\n".join(lines)


def precision_of(package: ModelPackage) -> str:
    record = package.manifest.compression
    if "precision" in record:
        return str(record["precision"])
    if "bits" in record:
        return f"int{record['bits']}"
    return "fp32"


def export_web(
    package: str | os.PathLike[str] | ModelPackage,
    out: str | os.PathLike[str],
    *,
    webgpu: bool = False,
    runtime_url: str | None = None,
    runtime_from: str | os.PathLike[str] | None = None,
) -> WebExport:
    """Write the static site for `package` at `out` (replacing a site there); see the module's docstring."""
    pkg = package if isinstance(package, ModelPackage) else load(package)
    external = sorted({location for _, location in external_data_locations(pkg.graph_proto())})
    if external:
        raise ExportError(
            f"model {pkg.name!r} keeps its weights in external data ({', '.join(external)}); ferry puts weights "
            "there only over 1 GiB, which does not fit a web page"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    builds = ["wasm", "webgpu"] if webgpu else ["wasm"]
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if runtime_url is None:
            runtime.copy_runtime(builds, staging / RUNTIME_FOLDER, runtime_from)
        model_bytes = pkg.model_path.read_bytes()
        (staging / "model.onnx").write_bytes(model_bytes)
        manifest = _site_manifest(pkg, model_bytes, builds, runtime_url)
        (staging / "model.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        version = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
        assets = resources.files("ferry.web") / "assets"
        for name in ASSETS:
            text = (assets / name).read_text(encoding="utf-8")
            (staging / name).write_text(text.replace("__FERRY_SITE_VERSION__", version), encoding="utf-8")
        files = [_measure(staging, p) for p in sorted(staging.rglob("*")) if p.is_file()]
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WebExport(out, manifest["precision"], builds, files)


def _site_manifest(pkg: ModelPackage, model_bytes: bytes, builds: list[str], runtime_url: str | None) -> dict:
    m = pkg.manifest
    return {
        "format": "ferry-web",
        "format_version": 1,
        "name": m.name,
        "version": m.version,
        "precision": precision_of(pkg),
        "model": {"file": "model.onnx", "sha256": hashlib.sha256(model_bytes).hexdigest(), "size": len(model_bytes)},
        "signature": m.signature.to_dict(),
        "preprocessing": m.preprocessing,
        "postprocessing": m.postprocessing,
        "labels": m.labels,
        "provenance": asdict(m.provenance),
        "runtime": {
            "name": "onnxruntime-web",
            "version": runtime.VERSION,
            "base": runtime_url if runtime_url else RUNTIME_FOLDER,
            "builds": {b: runtime.BUILDS[b].loader for b in builds},
        },
    }


def _measure(root: Path, path: Path) -> SiteFile:
    data = path.read_bytes()
    return SiteFile(path.relative_to(root).as_posix(), len(data), len(gzip.compress(data, 6)))
