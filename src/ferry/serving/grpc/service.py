"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on grpc.aio.

Message classes come from `inference.desc` loaded into a private descriptor pool: no generated modules,
and no clash with tritonclient's own `inference` messages when both live in one process.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ferry.errors import FerryError, RequestError
from ferry.serving import datatypes
from ferry.serving.codec import InferRequest, array_from_bytes
from ferry.serving.service import Service, status_for

SERVICE = "inference.GRPCInferenceService"
_DESCRIPTOR = Path(__file__).with_name("inference.desc")
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse"),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"),
}


@cache
def messages() -> SimpleNamespace:
    """The protocol's message classes, by name."""
    files = descriptor_pb2.FileDescriptorSet.FromString(_DESCRIPTOR.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    names = {n for pair in METHODS.values() for n in pair}
    return SimpleNamespace(
        **{n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{n}")) for n in names}
    )


def decode_infer(msg: Any) -> InferRequest:
    inputs: dict[str, np.ndarray] = {}
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise RequestError(f"{len(msg.inputs)} inputs but {len(raw)} raw_input_contents")
    for i, tensor in enumerate(msg.inputs):
        name = tensor.name
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise RequestError(f"input {name!r}: shape {list(shape)} has a negative dimension")
        dtype = datatypes.to_numpy(tensor.datatype, name)
        if raw:
            inputs[name] = array_from_bytes(raw[i], dtype, shape, name)
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise RequestError(f"input {name!r}: {tensor.datatype} data must come in raw_input_contents")
        values = list(getattr(tensor.contents, field))
        if len(values) != math.prod(shape):
            raise RequestError(
                f"input {name!r}: shape {list(shape)} needs {math.prod(shape)} elements, contents has {len(values)}"
            )
        if dtype.kind == "O":
            array = np.empty(len(values), dtype=object)
            array[:] = values
        else:
            array = np.asarray(values, dtype=dtype)
        inputs[name] = array.reshape(shape)
    outputs = [o.name for o in msg.outputs] or None
    return InferRequest(inputs=inputs, outputs=outputs, id=msg.id)


def encode_infer(response_cls: Any, request: InferRequest, results: dict[str, np.ndarray], model: str, version: str):
    response = response_cls(model_name=model, model_version=version, id=request.id)
    for name, array in results.items():
        out = response.outputs.add(name=name, datatype=datatypes.from_numpy(array.dtype))
        out.shape.extend(array.shape)
        if array.dtype.kind in "OUS":
            response.raw_output_contents.append(datatypes.serialize_bytes(array))
        else:
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response


def _lenient(cls: Any):
    """A deserializer that returns None for bytes that do not parse, so the call can answer INVALID_ARGUMENT."""

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception:
            return None

    return parse


class GrpcService:
    def __init__(self, service: Service):
        self.service = service
        self.m = messages()

    def _authorized(self, context: grpc.aio.ServicerContext, admin: bool = False) -> bool:
        meta = dict(context.invocation_metadata() or ())
        presented = meta.get("x-api-key")
        auth = meta.get("authorization", "")
        if auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        return self.service.authorized(presented, admin)

    async def _call(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request is not a valid protobuf message"
            )
        open_ = method in ("ServerLive", "ServerReady")
        admin = method in ("RepositoryModelLoad", "RepositoryModelUnload")
        if not open_ and not self._authorized(context, admin):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")
        try:
            if method == "ModelInfer":
                return await self.ModelInfer(request, dict(context.invocation_metadata() or ()))
            return await getattr(self, method)(request)
        except FerryError as exc:
            await context.abort(getattr(grpc.StatusCode, status_for(exc)[1]), str(exc))

    async def ServerLive(self, _: Any) -> Any:
        return self.m.ServerLiveResponse(live=True)

    async def ServerReady(self, _: Any) -> Any:
        return self.m.ServerReadyResponse(ready=self.service.registry.ready())

    async def ModelReady(self, req: Any) -> Any:
        return self.m.ModelReadyResponse(ready=self.service.model_ready(req.name, req.version or None))

    async def ServerMetadata(self, _: Any) -> Any:
        return self.m.ServerMetadataResponse(**self.service.server_metadata())

    async def ModelMetadata(self, req: Any) -> Any:
        meta = self.service.model_metadata(req.name, req.version or None)
        response = self.m.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for side in ("inputs", "outputs"):
            for t in meta[side]:
                getattr(response, side).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return response

    async def ModelInfer(self, req: Any, metadata: dict[str, str]) -> Any:
        request = decode_infer(req)
        served, results, variant = await self.service.infer_routed(
            req.model_name, req.model_version or None, request, "grpc", metadata
        )
        response = encode_infer(self.m.ModelInferResponse, request, results, served.name, served.version)
        if variant is not None:
            response.parameters["variant"].string_param = variant
        return response

    async def RepositoryIndex(self, req: Any) -> Any:
        response = self.m.RepositoryIndexResponse()
        for row in self.service.registry.index():
            if not req.ready or row["state"] == "READY":
                response.models.add(**row)
        return response

    async def RepositoryModelLoad(self, req: Any) -> Any:
        self.service.check_control()
        self.service.registry.load(req.model_name)
        return self.m.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, req: Any) -> Any:
        self.service.check_control()
        self.service.registry.unload(req.model_name)
        return self.m.RepositoryModelUnloadResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method, (req_name, resp_name) in METHODS.items():

            async def call(request, context, _method=method):
                return await self._call(_method, request, context)

            handlers[method] = grpc.unary_unary_rpc_method_handler(
                call,
                request_deserializer=_lenient(getattr(self.m, req_name)),
                response_serializer=getattr(self.m, resp_name).SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)
