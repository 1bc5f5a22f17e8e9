"""gRPC transport, sync and async, with tensors as raw contents."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from ferry.client import wire
from ferry.errors import FerryError, error_for_status
from ferry.protocol import datatypes
from ferry.protocol.messages import METHODS, SERVICE, messages
from ferry.protocol.tensors import array_from_bytes


def _target(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def _request(model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None, version: str | None) -> Any:
    m = messages()
    req = m.ModelInferRequest(model_name=model, model_version=version or "")
    for name, array in inputs.items():
        tensor = req.inputs.add(name=name, datatype=datatypes.from_numpy(array.dtype))
        tensor.shape.extend(array.shape)
        req.raw_input_contents.append(wire.tensor_bytes(array))
    for name in outputs or []:
        req.outputs.add(name=name)
    return req


def _response(resp: Any) -> dict[str, np.ndarray]:
    out = {}
    for tensor, raw in zip(resp.outputs, resp.raw_output_contents):
        dtype = datatypes.to_numpy(tensor.datatype, tensor.name)
        out[tensor.name] = array_from_bytes(raw, dtype, tuple(tensor.shape), tensor.name)
    return out


def _error(exc: grpc.RpcError) -> FerryError:
    code = exc.code()
    return error_for_status(grpc_code=code.name)(f"server answered {code.name}: {exc.details()}")


def _stubs(channel: Any) -> dict[str, Any]:
    m = messages()
    return {
        method: channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=getattr(m, req).SerializeToString,
            response_deserializer=getattr(m, resp).FromString,
        )
        for method, (req, resp) in METHODS.items()
    }


class GrpcClient:
    def __init__(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 60.0, tls: wire.ClientTls | None = None
    ):
        if url.startswith("grpcs://"):
            self._channel = grpc.secure_channel(_target(url), (tls or wire.ClientTls()).grpc_credentials())
        else:
            self._channel = grpc.insecure_channel(_target(url))
        self._call = _stubs(self._channel)
        self._metadata = [(k.lower(), v) for k, v in (headers or {}).items()]
        self._timeout = timeout
        self.m = messages()

    def _rpc(self, method: str, request: Any) -> Any:
        try:
            return self._call[method](request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def live(self) -> bool:
        return self._rpc("ServerLive", self.m.ServerLiveRequest()).live

    def ready(self) -> bool:
        return self._rpc("ServerReady", self.m.ServerReadyRequest()).ready

    def model_ready(self, model: str, version: str | None = None) -> bool:
        return self._rpc("ModelReady", self.m.ModelReadyRequest(name=model, version=version or "")).ready

    def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        resp = self._rpc("ModelMetadata", self.m.ModelMetadataRequest(name=model, version=version or ""))
        tensors = lambda ts: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]  # noqa: E731
        return {
            "name": resp.name,
            "versions": list(resp.versions),
            "platform": resp.platform,
            "inputs": tensors(resp.inputs),
            "outputs": tensors(resp.outputs),
        }

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        return _response(self._rpc("ModelInfer", _request(model, inputs, outputs, version)))

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcClient:
    def __init__(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 60.0, tls: wire.ClientTls | None = None
    ):
        if url.startswith("grpcs://"):
            self._channel = grpc.aio.secure_channel(_target(url), (tls or wire.ClientTls()).grpc_credentials())
        else:
            self._channel = grpc.aio.insecure_channel(_target(url))
        self._call = _stubs(self._channel)
        self._metadata = [(k.lower(), v) for k, v in (headers or {}).items()]
        self._timeout = timeout
        self.m = messages()

    async def _rpc(self, method: str, request: Any) -> Any:
        try:
            return await self._call[method](request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def live(self) -> bool:
        return (await self._rpc("ServerLive", self.m.ServerLiveRequest())).live

    async def ready(self) -> bool:
        return (await self._rpc("ServerReady", self.m.ServerReadyRequest())).ready

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        return (await self._rpc("ModelReady", self.m.ModelReadyRequest(name=model, version=version or ""))).ready

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        return _response(await self._rpc("ModelInfer", _request(model, inputs, outputs, version)))

    async def close(self) -> None:
        await self._channel.close()
