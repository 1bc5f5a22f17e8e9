"""`ferry.client`: call a ferry server (or any Open Inference Protocol server) with numpy in and out.

    client = Client("http://127.0.0.1:8000")       # or "grpc://127.0.0.1:8001"; https:// and grpcs:// with
                                                   # tls=ClientTls(ca=..., cert=..., key=...)
    outputs = client.infer("digits", {"image": batch})

Tensors travel as binary by default. Errors raise ferry's own: InputError (400), ModelNotFoundError
(404), UnavailableError (503), DeadlineError (504). `AsyncClient` is the same for asyncio.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferry.client import wire
from ferry.client.wire import ClientTls


def _transport(url: str, asynchronous: bool) -> Any:
    if url.startswith(("grpc://", "grpcs://")):
        from ferry.client import grpc as g

        return g.AsyncGrpcClient if asynchronous else g.GrpcClient
    if url.startswith(("http://", "https://")):
        from ferry.client import http as h

        return h.AsyncHttpClient if asynchronous else h.HttpClient
    raise ValueError(f"url must start with http://, https://, grpc:// or grpcs://, got {url!r}")


class Client:
    """A synchronous client; safe to share between threads (one connection per thread)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0, tls: ClientTls | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._t = _transport(url, asynchronous=False)(url, headers, timeout, tls)

    def live(self) -> bool:
        return self._t.live()

    def ready(self) -> bool:
        return self._t.ready()

    def model_ready(self, model: str, version: str | None = None) -> bool:
        return self._t.model_ready(model, version)

    def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        return self._t.metadata(model, version)

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | np.ndarray,
        outputs: list[str] | None = None,
        version: str | None = None,
        input_name: str | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        return self._t.infer(model, wire.as_inputs(inputs, input_name), outputs, version, binary)

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0, tls: ClientTls | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._t = _transport(url, asynchronous=True)(url, headers, timeout, tls)

    async def live(self) -> bool:
        return await self._t.live()

    async def ready(self) -> bool:
        return await self._t.ready()

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        return await self._t.model_ready(model, version)

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | np.ndarray,
        outputs: list[str] | None = None,
        version: str | None = None,
        input_name: str | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        return await self._t.infer(model, wire.as_inputs(inputs, input_name), outputs, version, binary)

    async def close(self) -> None:
        await self._t.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


__all__ = ["AsyncClient", "Client", "ClientTls"]
