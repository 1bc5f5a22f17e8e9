"""What both protocols share: server settings, the registry and metrics, and one `infer` entry point."""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import ferry
from ferry.errors import (
    ConfigError,
    DeadlineError,
    FerryError,
    InputError,
    ModelNotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from ferry.protocol import datatypes
from ferry.serving import traffic as traffic_mod
from ferry.serving.batching import Retired
from ferry.serving.codec import InferRequest
from ferry.serving.metrics import Metrics
from ferry.serving.registry import Registry
from ferry.serving.served import ServedModel
from ferry.serving.tracing import Tracing

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
UNKNOWN_MODEL = "(unknown)"  # the metrics label of requests for models that do not exist


@dataclass
class Settings:
    api_key: str | None = None
    max_body_bytes: int = 64 << 20
    model_control: str = "none"  # none | poll | explicit
    admin_open: bool = True  # load/unload allowed without a key (loopback only, see server.py)


@dataclass
class Service:
    registry: Registry
    settings: Settings = field(default_factory=Settings)
    metrics: Metrics = field(default_factory=Metrics)
    traffic: dict[str, traffic_mod.TrafficPolicy] = field(default_factory=dict)
    _background: set = field(default_factory=set)
    stopping: bool = False  # set when the grace period ran out: requests still waiting answer 503
    tracing: Tracing = field(default_factory=Tracing.off)

    def __post_init__(self) -> None:
        for name, spec in self.registry.specs.items():
            if "traffic" in spec.config:
                self.traffic[name] = traffic_mod.parse(spec.config["traffic"], f"{name}/config.json")

    def set_traffic(self, model: str, doc: Any) -> traffic_mod.TrafficPolicy:
        policy = traffic_mod.parse(doc, f"traffic of {model!r}")
        for variant in [*policy.split, *([policy.shadow] if policy.shadow else [])]:
            name, version = traffic_mod.resolve(variant, model)
            self.registry.get(name, version)  # every variant must exist now: refuse a split that would 404
        self.traffic[model] = policy
        return policy

    def route(self, model: str, version: str | None, sticky: Mapping[str, str]) -> tuple[str, str | None, str | None]:
        """(model, version, variant) that should answer; the variant is None without a traffic policy."""
        policy = self.traffic.get(model)
        if policy is None or version or not policy.split:
            return model, version, None
        key = sticky.get(policy.sticky_header) if policy.sticky_header else None
        variant = traffic_mod.choose(policy.split, key, random.random())
        name, ver = traffic_mod.resolve(variant, model)
        return name, ver, variant

    def start_shadow(self, model: str, request: InferRequest, answer: dict[str, np.ndarray]) -> None:
        policy = self.traffic.get(model)
        if policy is None or policy.shadow is None:
            return
        task = asyncio.create_task(self._shadow(model, policy.shadow, request, answer))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(self, model: str, variant: str, request: InferRequest, answer: dict[str, np.ndarray]) -> None:
        name, version = traffic_mod.resolve(variant, model)
        try:
            _, results = await self.infer(name, version, request, "shadow")
            same = results.keys() == answer.keys() and all(
                results[k].shape == answer[k].shape and np.allclose(results[k], answer[k], rtol=1e-4, atol=1e-5)
                for k in answer
            )
            outcome = "same" if same else "different"
        except FerryError:
            outcome = "error"
        self.metrics.shadow.labels(model, variant, outcome).inc()

    def admit(self, headers: Mapping[str, str], admin: bool = False) -> None:
        """Raise UnauthorizedError unless `headers` (HTTP headers or gRPC metadata, lower-case keys) carry
        the API key where one is needed. The one place credentials are read."""
        key = self.settings.api_key
        if key is None:
            if admin and not self.settings.admin_open:
                raise UnauthorizedError("admin endpoints need an API key on this server (--api-key)")
            return
        presented = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        if presented is None or not hmac.compare_digest(presented.encode(), key.encode()):
            raise UnauthorizedError("missing or wrong API key")

    def check_control(self) -> None:
        if self.settings.model_control != "explicit":
            raise ConfigError(
                f"model control is {self.settings.model_control!r}; start with --model-control explicit "
                "to load and unload models through the API"
            )

    async def load(self, model: str) -> None:
        """Explicit load. Creating engine sessions blocks for a while: it runs off the event loop."""
        self.check_control()
        await asyncio.to_thread(self.registry.load, model)

    async def unload(self, model: str) -> None:
        self.check_control()
        await asyncio.to_thread(self.registry.unload, model)

    def get_traffic(self, model: str) -> dict[str, Any]:
        self.registry.get(model)
        policy = self.traffic.get(model)
        return policy.to_dict() if policy else {"split": {}, "sticky_header": None, "shadow": None}

    async def infer_routed(
        self, model: str, version: str | None, request: InferRequest, protocol: str, headers: Mapping[str, str]
    ) -> tuple[ServedModel, dict[str, np.ndarray], str | None]:
        """`infer` for a request addressed to a model name: traffic split, sticky routing and shadow apply."""
        name, ver, variant = self.route(model, version, headers)
        served, results = await self.infer(name, ver, request, protocol)
        if variant is not None:
            self.metrics.variants.labels(model, variant).inc()
        if not version:
            self.start_shadow(model, request, results)
        return served, results, variant

    async def infer(self, model: str, version: str | None, request: InferRequest, protocol: str):
        """Run one request; returns (served model, results). Counts the outcome either way."""
        started = time.monotonic()
        self.metrics.in_flight.inc()
        served: ServedModel | None = None
        outcome = "error"
        try:
            for attempt in range(3):
                served = self.registry.get(model, version)
                try:
                    results = await served.infer(request)
                    break
                except Retired:
                    # A reload swapped this version out between lookup and queueing: the new one takes it.
                    if attempt == 2:
                        raise
            outcome = "success"
            return served, results
        except InputError:
            outcome = "bad_request"
            raise
        except ModelNotFoundError:
            outcome = "not_found"
            raise
        except UnavailableError:
            outcome = "unavailable"
            raise
        except DeadlineError:
            outcome = "timeout"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"  # the client went away; its queued request is dropped unrun
            raise
        finally:
            self.metrics.in_flight.dec()
            # Labels come only from models that exist: names from URLs would grow /metrics without bound.
            if served is not None:
                label, ver = served.name, served.version
            else:
                label, ver = (model if model in self.registry.specs else UNKNOWN_MODEL), ""
            seconds = time.monotonic() - started if served is not None else None
            self.metrics.on_request(label, ver, protocol, outcome, seconds)

    def refresh_gauges(self) -> None:
        models = self.registry.all_models()
        self.metrics.models_loaded.set(len(models))
        for m in models:
            self.metrics.queue_depth.labels(m.name, m.version).set(m.batcher.depth)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ferry", "version": ferry.__version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        served = self.registry.get(name, version)
        sig = served.signature
        versions = self.registry.versions(name)

        return {
            "name": name,
            "versions": versions,
            "platform": "onnx_onnxv1",
            "inputs": datatypes.tensor_metadata(sig.inputs),
            "outputs": datatypes.tensor_metadata(sig.outputs),
        }

    def model_stats(self, name: str | None, version: str | None) -> dict[str, Any]:
        """Triton's statistics document for one model (one version, or all loaded) or for every model."""
        if name is None:
            keys = [(m.name, m.version) for m in self.registry.all_models()]
        elif version:
            served = self.registry.get(name, version)
            keys = [(served.name, served.version)]
        else:
            self.registry.get(name)
            keys = [(name, v) for v in self.registry.versions(name)]
        return {"model_stats": self.metrics.statistics.report(keys)}

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        """The model's configuration in Triton's JSON form (what ferry runs it with, as Triton would say it)."""
        served = self.registry.get(name, version)
        if not hasattr(served, "triton_config"):  # an ensemble: its members have their own configs
            return {"name": name, "platform": "ensemble", "max_batch_size": 0}
        return served.triton_config()

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            self.registry.get(name, version)
        except FerryError:
            return False
        return True
