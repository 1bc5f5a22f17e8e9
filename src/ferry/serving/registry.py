"""The loaded models: load, unload, look up, and the truth behind /ready and the repository index."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

import ferry
from ferry.errors import (
    ConfigError,
    FerryError,
    ModelNotFoundError,
    PackageError,
    RequestError,
    UnavailableError,
)
from ferry.serving import pipeline
from ferry.serving.batching import Batcher, BatchPolicy
from ferry.serving.ensemble import EnsembleModel
from ferry.serving.repository import ModelSpec, discover, discover_ensembles, is_package, read_model
from ferry.serving.served import ServedModel, batchable, response_cache, warm_up
from ferry.serving.stages import PipelineModel, PipelineSpec

log = logging.getLogger("ferry.serve")


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_model_name(name: str) -> None:
    """A model name is one path segment of safe characters: never a path out of the repository."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise RequestError(
            f"model name {name[:80]!r} is not allowed: use letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_'"
        )


def describe(exc: BaseException) -> str:
    """An unexpected error as one line for the log and the repository index."""
    return f"{type(exc).__name__}: {exc}"


class Registry:
    def __init__(
        self,
        root: Path,
        defaults: BatchPolicy,
        backend: str = "auto",
        threads: int | None = None,
        events: Any = None,
        hook: Any = None,
        spinning: bool = False,
        max_image_pixels: int | None = pipeline.MAX_PIXELS,
        model_name: str | None = None,
    ):
        self.root = Path(root)
        self._defaults, self._backend, self._threads = defaults, backend, threads
        broken: dict[str, str] = {}
        self.specs = {s.name: s for s in discover(self.root, defaults, backend, threads, broken, model_name)}
        self.ensembles: dict[str, Any] = {}
        for spec in discover_ensembles(self.root, broken):
            try:
                model = (
                    PipelineModel(spec, self, events) if isinstance(spec, PipelineSpec) else EnsembleModel(spec, self)
                )
            except ConfigError as exc:  # a pipeline function that does not import: this pipeline alone is out
                broken[spec.name] = str(exc)
                continue
            self.ensembles[spec.name] = model
        self._models: dict[str, dict[str, ServedModel]] = {}
        # (model, version) -> (state, reason); a model whose folder could not be read has version "".
        self._states: dict[tuple[str, str], tuple[str, str]] = {(n, ""): ("UNAVAILABLE", r) for n, r in broken.items()}
        for name, reason in broken.items():
            log.error("not serving %s: %s", name, reason)
        self._lock = threading.Lock()
        self._events = events  # the server's Metrics: on_batch, on_cache
        self.tracer = None  # set by the server when tracing is on
        self._hook = hook
        # Spinning engine threads take the cores from the event loop and from other workers, so servers
        # default to sleeping threads; a large model alone on the machine may still gain from spinning.
        self._spinning = spinning
        self._max_image_pixels = max_image_pixels

    # --- loading ------------------------------------------------------------------------------------

    def load_all(self) -> list[str]:
        """Load every model; failures are logged and shown in the index, and the rest still serve.
        Returns the failures, one line each."""
        failures = [f"model {n!r}: {reason}" for (n, v), (_, reason) in self._states.items() if v == ""]
        for name in list(self.specs):
            try:
                self.load(name)
            except Exception as exc:  # one model's failure, whatever it is, is that model's alone
                failures.append(str(exc) if isinstance(exc, FerryError) else f"model {name!r}: {describe(exc)}")
        return failures

    def _spec_for(self, name: str) -> ModelSpec:
        """In a repository, re-read the model's folder: load picks up new versions and config changes."""
        check_model_name(name)
        if is_package(self.root):
            if name not in self.specs:
                raise ModelNotFoundError(f"unknown model {name!r}; this server holds {sorted(self.specs)}")
            return self.specs[name]
        folder = self.root / name
        spec = read_model(folder, self._defaults, self._backend, self._threads) if folder.is_dir() else None
        if spec is None:
            raise ModelNotFoundError(f"no model {name!r} in the repository {self.root}")
        self.specs[name] = spec
        self._states.pop((name, ""), None)  # its folder reads again
        return spec

    def load(self, name: str) -> None:
        """Load every version the policy selects; a version that fails keeps the working one in place."""
        spec = self._spec_for(name)
        loaded: dict[str, ServedModel] = {}
        failures: list[str] = []
        for version, path in spec.versions.items():
            try:
                loaded[version] = self._load_version(spec, version, path)
                self._states[(name, version)] = ("READY", "")
                log.info("loaded %s version %s from %s on %s", name, version, path, loaded[version].predictor.backend)
            except Exception as exc:  # a broken package of any kind leaves the others serving
                reason = str(exc) if isinstance(exc, FerryError) else describe(exc)
                self._states[(name, version)] = ("UNAVAILABLE", reason)
                failures.append(f"version {version}: {reason}")
                log.error("could not load %s version %s: %s", name, version, reason)
        with self._lock:
            old = self._models.get(name, {})
            # A version that fails to load never replaces a working one: with nothing new loaded, everything
            # old stays; otherwise old versions stay where their own reload failed.
            merged = dict(old) if not loaded else dict(loaded)
            for version in spec.versions:
                if version not in loaded and version in old:
                    merged[version] = old[version]
            for version in merged:
                if merged[version] is old.get(version):
                    self._states[(name, version)] = ("READY", "")
            self._models[name] = merged
        for version, model in old.items():
            if merged.get(version) is not model:
                model.batcher.close(drain=True)  # requests already queued finish on the old one
                if version not in merged:
                    self._states[(name, version)] = ("UNAVAILABLE", "unloaded: no longer selected")
        if failures:
            kept = sorted(merged)
            raise PackageError(
                f"model {name!r}: could not load {'; '.join(failures)}"
                + (f" (still serving version(s) {kept})" if kept else "")
            )

    def _load_version(self, spec: ModelSpec, version: str, path: Path) -> ServedModel:
        package = ferry.load(path)
        config = ferry.Config(package)
        config.set_backend(spec.backend)
        config.set_spinning(self._spinning)
        if spec.threads:
            config.set_cpu_threads(int(spec.threads))
        predictor = ferry.create_predictor(config)
        outputs = package.signature.output_names

        def run(inputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
            return predictor.predict(inputs, names, validate=False)  # ServedModel.check ran before queueing

        def on_batch(rows: int, seconds: float, waits: list[float]) -> None:
            if self._events is not None:
                self._events.on_batch(spec.name, version, rows, seconds, waits)

        warm_up(predictor, spec, version)  # before it is listed: ready means warmed up
        batcher = Batcher(run, spec.policy, batchable(package), f"{spec.name}-{version}", on_batch)
        return ServedModel(
            spec.name,
            version,
            package,
            predictor,
            batcher,
            outputs,
            self._hook,
            self._max_image_pixels,
            spec=spec,
            cache=response_cache(spec, self._hook),
            events=self._events,
            tracer=self.tracer,
        )

    def unload(self, name: str) -> None:
        with self._lock:
            models = self._models.pop(name, None)
        if models is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        for version, model in models.items():
            self._states[(name, version)] = ("UNAVAILABLE", "unloaded")
            model.batcher.close(drain=True)

    def close(self) -> None:
        for name in list(self._models):
            self.unload(name)

    # --- lookup -------------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ServedModel:
        if name in self.ensembles and version in (None, "", "1"):
            return self.ensembles[name]  # type: ignore[return-value]
        versions = self._models.get(name)
        if not versions:
            state = [s for (n, _), s in self._states.items() if n == name]
            if state:
                raise UnavailableError(f"model {name!r} is not ready: {state[-1][1] or state[-1][0]}")
            raise ModelNotFoundError(f"unknown model {name!r}; serving {sorted(self._models)}")
        if version is None or version == "":
            return versions[max(versions, key=int)]
        try:
            return versions[version]
        except KeyError:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; loaded: {sorted(versions)}") from None

    def versions(self, name: str) -> list[str]:
        if name in self.ensembles:
            return ["1"]
        return sorted(self._models.get(name, {}), key=int)

    def ready(self) -> bool:
        """Every configured model has every selected version loaded."""
        unreadable = any(version == "" for _, version in self._states)
        return (
            not unreadable
            and all(self._models.get(name, {}).keys() >= spec.versions.keys() for name, spec in self.specs.items())
            and bool(self.specs or self.ensembles)
        )

    def index(self) -> list[dict[str, str]]:
        rows = []
        for (name, version), (state, reason) in sorted(self._states.items()):
            rows.append({"name": name, "version": version, "state": state, "reason": reason})
        for name, ensemble in sorted(self.ensembles.items()):
            missing = [model for model, version in ensemble.members() if not self._has(model, version)]
            state, reason = ("READY", "") if not missing else ("UNAVAILABLE", f"members not loaded: {missing}")
            rows.append({"name": name, "version": "1", "state": state, "reason": reason})
        return rows

    def _has(self, name: str, version: str | None) -> bool:
        versions = self._models.get(name, {})
        return bool(versions) if version is None else version in versions

    def all_models(self) -> list[ServedModel]:
        return [m for versions in list(self._models.values()) for m in versions.values()]
