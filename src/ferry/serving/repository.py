"""Finding models to serve: one package, or a repository `REPO/<model>/<version>/` with optional config.

A model folder may hold `config.json`:

    {"version_policy": {"latest": 1} | {"all": true} | {"specific": [1, 3]},
     "max_batch_size": 8, "batch_delay_ms": 1, "preferred_batch_sizes": [4, 8],
     "max_queue": 256, "timeout_ms": 1000, "instances": 1, "backend": "onnxruntime", "threads": 2}

`instances` lets that many batches of the model run at once (each on `threads` engine threads).

Anything it leaves out comes from the command line's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ferry.errors import ConfigError
from ferry.package.manifest import MANIFEST_NAME
from ferry.serving.batching import BatchPolicy
from ferry.serving.ensemble import EnsembleSpec
from ferry.serving.ensemble import parse as parse_ensemble
from ferry.serving.stages import PipelineSpec
from ferry.serving.stages import parse as parse_pipeline


@dataclass
class ModelSpec:
    """One model name: which versions to load from where, and how to run them."""

    name: str
    versions: dict[str, Path]  # version -> package folder, already filtered by the version policy
    policy: BatchPolicy
    backend: str = "auto"
    threads: int | None = None
    config: dict[str, Any] = field(default_factory=dict)


def is_package(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def discover(
    root: Path,
    defaults: BatchPolicy,
    backend: str = "auto",
    threads: int | None = None,
    failures: dict[str, str] | None = None,
    name: str | None = None,
) -> list[ModelSpec]:
    """Every model under `root` (or `root` itself when it is a package, under `name` if given, as KServe
    names it). A model folder whose config.json cannot be read is left out and its reason put in
    `failures` (when given), so that one broken folder does not stop the others; without `failures` the
    error is raised."""
    root = Path(root)
    if is_package(root):
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        name = name or str(manifest.get("name") or root.name)
        version = str(manifest.get("version") or "1")
        return [ModelSpec(name, {version: root}, defaults, backend, threads)]
    if not root.is_dir():
        raise ConfigError(f"{root}: not a package or a model repository folder")
    if name is not None:
        raise ConfigError(f"{root}: a model name is for one package; a repository's folders name its models")
    specs = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        try:
            spec = read_model(folder, defaults, backend, threads)
        except ConfigError as exc:
            if failures is None:
                raise
            failures[folder.name] = str(exc)
            continue
        if spec is not None:
            specs.append(spec)
    if not specs and not failures and not discover_ensembles(root, {}):
        raise ConfigError(f"{root}: no models found; expected <model>/<version>/ferry.json, or a package folder")
    return specs


def read_model(
    folder: Path, defaults: BatchPolicy, backend: str = "auto", threads: int | None = None
) -> ModelSpec | None:
    """The model in `folder` (a `<model>/` folder of numbered versions), or None if it holds none."""
    config_path = folder / "config.json"
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{config_path}: expected a JSON object")
    numbered = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not numbered:
        return None
    chosen = _apply_version_policy(numbered, config.get("version_policy", {"latest": 1}), config_path)
    return ModelSpec(
        name=folder.name,
        versions={p.name: p for p in chosen},
        policy=_policy(config, defaults, config_path),
        backend=str(config.get("backend", backend)),
        threads=config.get("threads", threads),
        config=config,
    )


def _apply_version_policy(numbered: list[Path], policy: Any, source: Path) -> list[Path]:
    if not isinstance(policy, dict) or len(policy) != 1:
        raise ConfigError(f"{source}: version_policy must be one of {{latest: N}}, {{all: true}}, {{specific: [..]}}")
    ((kind, value),) = policy.items()
    if kind == "all":
        return numbered
    if kind == "latest":
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: version_policy.latest must be a positive integer, got {value!r}")
        return numbered[-value:]
    if kind == "specific":
        wanted = {str(v) for v in value} if isinstance(value, list) else set()
        chosen = [p for p in numbered if p.name in wanted]
        if not chosen:
            raise ConfigError(f"{source}: version_policy.specific {value!r} names no version present")
        return chosen
    raise ConfigError(f"{source}: unknown version_policy {kind!r}; use latest, all or specific")


def _policy(config: dict[str, Any], defaults: BatchPolicy, source: Path) -> BatchPolicy:
    mapping = {
        "max_batch_size": "max_batch_size",
        "batch_delay_ms": "max_delay_ms",
        "preferred_batch_sizes": "preferred_batch_sizes",
        "max_queue": "max_queue",
        "timeout_ms": "timeout_ms",
        "instances": "instances",
    }
    changes = {}
    for key, attr in mapping.items():
        if key in config:
            value = config[key]
            changes[attr] = tuple(value) if attr == "preferred_batch_sizes" else value
    try:
        return replace(defaults, **changes)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def discover_ensembles(root: Path, failures: dict[str, str] | None = None) -> list[EnsembleSpec | PipelineSpec]:
    """Folders of `root` whose config.json declares an ensemble or a pipeline (and that hold no version
    folders). With `failures`, a folder whose config is broken is left out with its reason there, as
    `discover` does for models; without, the error is raised."""
    if is_package(root) or not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        config_path = folder / "config.json"
        if not config_path.is_file() or any(p.name.isdigit() for p in folder.iterdir() if p.is_dir()):
            continue
        try:
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{config_path}: not valid JSON ({exc})") from None
            if isinstance(config, dict) and "ensemble" in config:
                found.append(parse_ensemble(folder.name, config["ensemble"], config_path))
            elif isinstance(config, dict) and "pipeline" in config:
                found.append(parse_pipeline(folder.name, config["pipeline"], config_path))
        except ConfigError as exc:
            if failures is None:
                raise
            failures[folder.name] = str(exc)
    return found
