"""The loaded models: load, unload, look up, and the truth behind /ready and the repository index."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ferry
from ferry.errors import (
    BackendError,
    ConfigError,
    FerryError,
    InputError,
    ModelNotFoundError,
    PackageError,
    RequestError,
    UnavailableError,
)
from ferry.protocol import datatypes
from ferry.serving import pipeline, tracing
from ferry.serving.batching import Batcher, BatchPolicy
from ferry.serving.cache import ResponseCache, request_key
from ferry.serving.codec import InferRequest
from ferry.serving.ensemble import EnsembleModel
from ferry.serving.repository import ModelSpec, discover, discover_ensembles, is_package, read_model
from ferry.serving.stages import PipelineModel, PipelineSpec

log = logging.getLogger("ferry.serve")


@dataclass
class ServedModel:
    name: str
    version: str
    package: ferry.ModelPackage
    predictor: ferry.Predictor
    batcher: Batcher
    outputs: list[str]
    hook: Any = None
    max_image_pixels: int | None = pipeline.MAX_PIXELS
    decoding: int = 0  # requests whose images are being decoded: admitted, not yet queued
    spec: ModelSpec | None = None
    batchable: bool = False
    cache: ResponseCache | None = None
    events: Any = None  # where cache lookups are reported (the server's Metrics)
    tracer: Any = None  # an OpenTelemetry tracer when tracing is on

    @property
    def signature(self):
        return self.package.signature

    def check(self, inputs: dict[str, np.ndarray], requested: list[str] | None, extra: tuple[str, ...] = ()):
        """Validate before queueing: inputs against the signature, requested outputs against the model."""
        self.predictor.check_inputs(inputs)
        if requested is None:
            return self.outputs
        unknown = [o for o in requested if o not in self.outputs and o not in extra]
        if unknown:
            raise InputError(f"model {self.name!r} has no output(s) {unknown}; outputs: {self.outputs}")
        return [o for o in requested if o in self.outputs] or self.outputs

    async def _decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decode images inside admission control: requests being decoded count against the queue limit,
        so a burst of images is refused with 503 instead of decoded outside every bound."""
        limit = self.batcher.policy.max_queue
        if self.decoding + self.batcher.depth >= limit:
            raise UnavailableError(f"queue is full ({limit} requests decoding or waiting); retry later")
        self.decoding += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                pipeline.decode_pool(), pipeline.decode_images, self.package, inputs, self.max_image_pixels
            )
        finally:
            self.decoding -= 1

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        key = None
        if self.cache is not None:
            started = time.monotonic()
            key = request_key(request.inputs, request.outputs)
            found = self.cache.get(key)
            if self.events is not None:
                self.events.on_cache(self.name, self.version, found is not None, time.monotonic() - started)
            if found is not None:
                return dict(found)
        inputs = request.inputs
        if self.hook is not None and hasattr(self.hook, "preprocess"):
            inputs = await asyncio.to_thread(self.hook.preprocess, inputs)
        images = pipeline.wants_decoding(self.package, inputs)
        if images:
            inputs = await self._decode(inputs)
        extra = pipeline.EXTRA_OUTPUTS if images and pipeline.has_topk(self.package) else ()
        times = tracing.BatchTimes() if tracing.current.get() is not None else None
        outputs = await self.batcher.submit(inputs, self.check(inputs, request.outputs, extra), times)
        if times is not None:
            tracing.record_batch(self.tracer, times)
        if extra:
            outputs = pipeline.label_outputs(self.package, outputs)
        if self.hook is not None and hasattr(self.hook, "postprocess"):
            outputs = await asyncio.to_thread(self.hook.postprocess, inputs, outputs)
        if request.outputs is not None:
            outputs = {k: outputs[k] for k in request.outputs if k in outputs}
        if key is not None:
            self.cache.put(key, outputs)
        return outputs

    def triton_config(self) -> dict[str, Any]:
        """How this version is served, in Triton's model configuration (its JSON form)."""
        policy = self.batcher.policy
        batch = policy.max_batch_size if self.batchable else 0

        def tensors(specs) -> list[dict[str, Any]]:
            return [
                {
                    "name": t.name,
                    "data_type": "TYPE_" + ("STRING" if t.dtype == "string" else datatypes.from_ferry(t.dtype)),
                    "dims": [d if isinstance(d, int) else -1 for d in (t.shape[1:] if batch else t.shape)],
                }
                for t in specs
            ]

        spec = self.spec
        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": self.predictor.backend.split(" ")[0],
            "max_batch_size": batch,
            "input": tensors(self.signature.inputs),
            "output": tensors(self.signature.outputs),
            "dynamic_batching": {
                "preferred_batch_size": list(policy.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(policy.max_delay_ms * 1000),
            },
            "instance_group": [{"name": self.name, "count": policy.instances, "kind": "KIND_CPU"}],
            "response_cache": {"enable": self.cache is not None},
            "parameters": {"threads": spec.threads if spec else None},
        }


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


def warm_up(predictor: ferry.Predictor, spec: ModelSpec, version: str) -> None:
    """Run the model on made-up inputs before it takes traffic, so that the first request does not pay for
    session creation, arena growth or OpenVINO's first compile. A model's config.json sets it:
    `"warmup": {"batch_sizes": [1, 8], "runs": 1, "dims": {"height": 640}}`, or `"warmup": false`; the
    default is one run at batch 1, other dynamic dimensions 8 unless `dims` names them.
    A failure here fails the load, with the reason, and the version never serves."""
    from ferry.converters.parity import random_feeds

    setting = spec.config.get("warmup", {})
    if setting is False:
        return
    if not isinstance(setting, dict):
        raise ConfigError(f"model {spec.name!r}: 'warmup' must be an object or false, got {setting!r}")
    sizes = setting.get("batch_sizes", [1])
    runs = setting.get("runs", 1)
    dims = setting.get("dims", {})
    if not isinstance(dims, dict) or not all(isinstance(v, int) and v >= 1 for v in dims.values()):
        raise ConfigError(f"model {spec.name!r}: warmup.dims maps dimension names to sizes (positive ints)")
    if not (isinstance(sizes, list) and all(isinstance(b, int) and b >= 1 for b in sizes)) or not (
        isinstance(runs, int) and runs >= 1
    ):
        raise ConfigError(f"model {spec.name!r}: warmup needs batch_sizes (positive ints) and runs (>= 1)")
    started = time.monotonic()
    try:
        for batch in sizes:
            feeds = random_feeds(predictor.config.package.signature, batch=batch, dims=dims)
            for _ in range(runs):
                predictor.predict(feeds)
    except FerryError as exc:
        raise BackendError(f"model {spec.name!r} version {version}: warm-up failed: {exc}") from exc
    log.warning(  # at the level of the startup lines, so that it shows without -v
        "warmed up %s version %s in %.0f ms (batch sizes %s, %d run(s) each)",
        spec.name, version, (time.monotonic() - started) * 1000, sizes, runs,
    )  # fmt: skip


def response_cache(spec: ModelSpec, hook: Any) -> ResponseCache | None:
    """The model's response cache, when its config turns one on and its answers can be cached exactly."""
    setting = spec.config.get("response_cache")
    if not setting:
        return None
    if not isinstance(setting, dict) or not isinstance(setting.get("enable", False), bool):
        raise ConfigError(f'model {spec.name!r}: \'response_cache\' must be {{"enable": true, "max_bytes": N}}')
    if not setting.get("enable", False):
        return None
    if spec.config.get("deterministic", True) is False or hook is not None:
        log.warning("not caching %s: its answers may differ for the same inputs (a hook, or deterministic: false)",
                    spec.name)  # fmt: skip
        return None
    max_bytes = setting.get("max_bytes", 64 << 20)
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise ConfigError(f"model {spec.name!r}: response_cache.max_bytes must be a positive integer")
    return ResponseCache(max_bytes)


def _batchable(package: ferry.ModelPackage) -> bool:
    """Merging requests needs a dynamic axis 0 shared by every input and output."""
    sig = package.signature
    firsts = {spec.shape[0] if spec.shape else None for spec in [*sig.inputs, *sig.outputs]}
    return len(firsts) == 1 and isinstance(next(iter(firsts)), str)


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
    ):
        self.root = Path(root)
        self._defaults, self._backend, self._threads = defaults, backend, threads
        broken: dict[str, str] = {}
        self.specs = {s.name: s for s in discover(self.root, defaults, backend, threads, broken)}
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
        batchable = _batchable(package)
        batcher = Batcher(run, spec.policy, batchable, f"{spec.name}-{version}", on_batch)
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
            batchable=batchable,
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
