"""What both protocols share: server settings, the registry and metrics, and one `infer` entry point."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import ferry
from ferry.errors import (
    ConfigError,
    DeadlineError,
    FerryError,
    InputError,
    ModelNotFoundError,
    UnavailableError,
)
from ferry.serving import datatypes
from ferry.serving.batching import Retired
from ferry.serving.codec import InferRequest
from ferry.serving.metrics import Metrics
from ferry.serving.registry import Registry, ServedModel

EXTENSIONS = ["binary_tensor_data", "model_repository"]


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

    def authorized(self, presented: str | None, admin: bool = False) -> bool:
        key = self.settings.api_key
        if key is None:
            return not admin or self.settings.admin_open
        return presented is not None and hmac.compare_digest(presented.encode(), key.encode())

    def check_control(self) -> None:
        if self.settings.model_control != "explicit":
            raise ConfigError(
                f"model control is {self.settings.model_control!r}; start with --model-control explicit "
                "to load and unload models through the API"
            )

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
        finally:
            self.metrics.in_flight.dec()
            ver = served.version if served else (version or "")
            self.metrics.requests.labels(model, ver, protocol, outcome).inc()
            if served is not None:
                self.metrics.latency.labels(model, ver, "total").observe(time.monotonic() - started)

    def refresh_gauges(self) -> None:
        models = self.registry.all_models()
        self.metrics.models_loaded.set(len(models))
        for m in models:
            self.metrics.queue_depth.labels(m.name, m.version).set(m.batcher.depth)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ferry", "version": ferry.__version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        served = self.registry.get(name, version)
        sig = served.package.signature
        versions = sorted(self.registry._models.get(name, {}), key=int)

        def tensors(specs) -> list[dict[str, Any]]:
            return [
                {
                    "name": s.name,
                    "datatype": datatypes.from_ferry(s.dtype),
                    "shape": [d if isinstance(d, int) else -1 for d in s.shape],
                }
                for s in specs
            ]

        return {
            "name": name,
            "versions": versions,
            "platform": "onnx_onnxv1",
            "inputs": tensors(sig.inputs),
            "outputs": tensors(sig.outputs),
        }

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            self.registry.get(name, version)
        except FerryError:
            return False
        return True
