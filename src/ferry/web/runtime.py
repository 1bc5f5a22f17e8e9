"""The onnxruntime-web files a site needs, from the npm package at one pinned version.

Where they come from, first match wins:
1. `source` (the `--runtime-from` option) or `FERRY_ORT_WEB`: the npm tarball (`.tgz`), or an unpacked
   package folder (`node_modules/onnxruntime-web`), for machines without a registry;
2. the cache, `$XDG_CACHE_HOME/ferry/` (default `~/.cache/ferry/`), filled by step 3 once;
3. the npm registry (`$npm_config_registry`, default registry.npmjs.org), checked against the integrity
   hash npm publishes for this version before it is cached.
No node or npm is needed: the tarball is a plain .tgz.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ferry.errors import ExportError
from ferry.files import atomic_write

VERSION = "1.30.0"
# npm's `dist.integrity` for onnxruntime-web@1.30.0 (registry.npmjs.org/onnxruntime-web/1.30.0)
INTEGRITY = "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
TARBALL = f"onnxruntime-web-{VERSION}.tgz"


@dataclass(frozen=True)
class Build:
    """One execution-provider build: the loader module the page imports and the wasm it pulls in."""

    loader: str
    files: tuple[str, ...]


# Only these go into a site. The plain build is 14.2 MB (3.7 MB gzip); the WebGPU one 26.8 MB, so it is
# opt-in (`--webgpu`), as users of the default 28 MB import asked (onnxruntime #14817).
BUILDS = {
    "wasm": Build(
        "ort.wasm.min.mjs", ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
    ),
    "webgpu": Build(
        "ort.webgpu.min.mjs",
        ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry"


def copy_runtime(builds: list[str], dest: Path, source: str | os.PathLike[str] | None = None) -> list[str]:
    """Copy the files of `builds` into `dest`; returns their names."""
    names = [name for build in builds for name in BUILDS[build].files]
    source = source or os.environ.get("FERRY_ORT_WEB")
    dest.mkdir(parents=True, exist_ok=True)
    if source and Path(source).is_dir():
        _copy_from_folder(Path(source), names, dest)
    else:
        tarball = Path(source) if source else _cached_tarball()
        _extract(tarball, names, dest)
    return names


def _copy_from_folder(folder: Path, names: list[str], dest: Path) -> None:
    package_json = folder / "package.json"
    try:
        version = json.loads(package_json.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder}: not an onnxruntime-web package folder ({exc})") from None
    if version != VERSION:
        raise ExportError(f"{folder}: onnxruntime-web {version}, but ferry's web export is built for {VERSION}")
    for name in names:
        src = folder / "dist" / name
        if not src.is_file():
            raise ExportError(f"{folder}: dist/{name} is missing")
        with atomic_write(dest / name) as f:
            f.write(src.read_bytes())


def _extract(tarball: Path, names: list[str], dest: Path) -> None:
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            meta = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
            if meta.get("version") != VERSION:
                raise ExportError(
                    f"{tarball}: onnxruntime-web {meta.get('version')}, but ferry's web export is built for {VERSION}"
                )
            for name in names:  # exact member names: nothing in the archive chooses a path here
                member = tar.extractfile(f"package/dist/{name}")
                if member is None:
                    raise KeyError(name)
                with atomic_write(dest / name) as f:
                    f.write(member.read())
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        raise ExportError(f"{tarball}: not a usable onnxruntime-web {VERSION} tarball ({exc})") from None


def _integrity_ok(data: bytes) -> bool:
    algo, _, digest = INTEGRITY.partition("-")
    return base64.b64encode(hashlib.new(algo, data).digest()).decode() == digest


def _cached_tarball() -> Path:
    path = cache_dir() / TARBALL
    if path.is_file():
        return path
    registry = (
        os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org/"
    )
    url = f"{registry.rstrip('/')}/onnxruntime-web/-/{TARBALL}"
    data = _download(url)
    if not _integrity_ok(data):
        raise ExportError(f"{url}: the download does not match npm's integrity hash for {VERSION}; not used")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)
    return path


def _download(url: str) -> bytes:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (a registry URL)
            total = int(resp.headers.get("Content-Length") or 0) or None
            chunks = []
            with Progress(*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(),
                          transient=True) as progress:  # fmt: skip
                task = progress.add_task(f"onnxruntime-web {VERSION}", total=total)
                while chunk := resp.read(1 << 16):
                    chunks.append(chunk)
                    progress.advance(task, len(chunk))
            return b"".join(chunks)
    except OSError as exc:
        raise ExportError(
            f"could not download onnxruntime-web {VERSION} from {url} ({exc}); on a machine without the npm "
            f"registry, pass --runtime-from with the tarball (`npm pack onnxruntime-web@{VERSION}`) or an "
            "unpacked node_modules/onnxruntime-web, or set FERRY_ORT_WEB"
        ) from None
