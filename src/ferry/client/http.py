"""HTTP transport: sync over http.client (one keep-alive connection per thread), async over httpx."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ferry.client import wire

HEADER_LENGTH = "Inference-Header-Content-Length"


def _path(model: str, version: str | None, tail: str = "") -> str:
    base = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    return base + tail


class HttpClient:
    def __init__(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 60.0, tls: wire.ClientTls | None = None
    ):
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 8000
        self._context = (tls or wire.ClientTls()).ssl_context() if parts.scheme == "https" else None
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._context is not None:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                resp = conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str) -> Any:
        status, _, body = self.request(method, path)
        if status != 200:
            raise wire.error_for(status, body)
        return json.loads(body) if body else {}

    def live(self) -> bool:
        return self.request("GET", "/v2/health/live")[0] == 200

    def ready(self) -> bool:
        return self.request("GET", "/v2/health/ready")[0] == 200

    def model_ready(self, model: str, version: str | None = None) -> bool:
        return self.request("GET", _path(model, version, "/ready"))[0] == 200

    def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        return self._json("GET", _path(model, version))

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        body, headers = _infer_body(inputs, outputs, binary)
        status, resp_headers, data = self.request("POST", _path(model, version, "/infer"), body, headers)
        if status != 200:
            raise wire.error_for(status, data)
        length = resp_headers.get(HEADER_LENGTH.lower())
        return wire.rest_response(data, int(length) if length is not None else None)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def _infer_body(inputs: dict[str, np.ndarray], outputs: list[str] | None, binary: bool) -> tuple[bytes, dict]:
    """An OIP infer body and its headers (the binary extension announces its JSON header's length)."""
    body, header_length = wire.rest_request(inputs, outputs, binary)
    headers = {"Content-Type": "application/octet-stream" if header_length else "application/json"}
    if header_length is not None:
        headers[HEADER_LENGTH] = str(header_length)
    return body, headers


class AsyncHttpClient:
    def __init__(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 60.0, tls: wire.ClientTls | None = None
    ):
        import httpx

        verify = (tls or wire.ClientTls()).ssl_context() if url.startswith("https://") else True
        self._client = httpx.AsyncClient(base_url=url, headers=headers or {}, timeout=timeout, verify=verify)

    async def live(self) -> bool:
        return (await self._client.get("/v2/health/live")).status_code == 200

    async def ready(self) -> bool:
        return (await self._client.get("/v2/health/ready")).status_code == 200

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        return (await self._client.get(_path(model, version, "/ready"))).status_code == 200

    async def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        resp = await self._client.get(_path(model, version))
        if resp.status_code != 200:
            raise wire.error_for(resp.status_code, resp.content)
        return resp.json()

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        body, headers = _infer_body(inputs, outputs, binary)
        resp = await self._client.post(_path(model, version, "/infer"), content=body, headers=headers)
        if resp.status_code != 200:
            raise wire.error_for(resp.status_code, resp.content)
        length = resp.headers.get(HEADER_LENGTH)
        return wire.rest_response(resp.content, int(length) if length is not None else None)

    async def close(self) -> None:
        await self._client.aclose()
