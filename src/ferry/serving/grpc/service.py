"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on grpc.aio.

Message classes come from `ferry.protocol.messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from ferry.errors import FerryError, RequestError, status_for
from ferry.protocol import datatypes
from ferry.protocol.messages import METHODS, SERVICE, messages
from ferry.protocol.tensors import array_from_bytes, array_from_values, check_shape
from ferry.serving.codec import InferRequest
from ferry.serving.service import Service

log = logging.getLogger("ferry.serve")
_NO_PHASE = contextlib.nullcontext()
OPEN = ("ServerLive", "ServerReady")  # methods anyone may call
ADMIN = ("RepositoryModelLoad", "RepositoryModelUnload")  # methods that need admin rights
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


def decode_infer(msg: Any) -> InferRequest:
    inputs: dict[str, np.ndarray] = {}
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise RequestError(f"{len(msg.inputs)} inputs but {len(raw)} raw_input_contents")
    for i, tensor in enumerate(msg.inputs):
        name = tensor.name
        if name in inputs:
            raise RequestError(f"input {name!r} is given twice")
        shape = check_shape(list(tensor.shape), name)
        dtype = datatypes.to_numpy(tensor.datatype, name)
        if raw:
            inputs[name] = array_from_bytes(raw[i], dtype, shape, name)
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise RequestError(f"input {name!r}: {tensor.datatype} data must come in raw_input_contents")
        inputs[name] = array_from_values(list(getattr(tensor.contents, field)), dtype, shape, name)
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

    async def _call(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request is not a valid protobuf message"
            )
        metadata = dict(context.invocation_metadata() or ())
        try:
            if method not in OPEN:
                self.service.admit(metadata, admin=method in ADMIN)
            if method == "ModelInfer":
                return await self.ModelInfer(request, metadata)
            return await getattr(self, method)(request)
        except asyncio.CancelledError:
            if not self.service.stopping:
                raise
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping; retry on another replica")
        except Exception as exc:
            if not isinstance(exc, FerryError):
                log.exception("unexpected error in %s", method)
            code = status_for(exc)[1]
            await context.abort(getattr(grpc.StatusCode, code), str(exc) if code != "INTERNAL" else "internal error")

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
        tracing = self.service.tracing if self.service.tracing.tracer is not None else None
        with tracing.request(req.model_name, "grpc", metadata) if tracing else _NO_PHASE:
            with tracing.phase("decode") if tracing else _NO_PHASE:
                request = decode_infer(req)
            served, results, variant = await self.service.infer_routed(
                req.model_name, req.model_version or None, request, "grpc", metadata
            )
            with tracing.phase("encode") if tracing else _NO_PHASE:
                response = encode_infer(self.m.ModelInferResponse, request, results, served.name, served.version)
        if variant is not None:
            response.parameters["variant"].string_param = variant
        return response

    async def ModelStatistics(self, req: Any) -> Any:
        doc = self.service.model_stats(req.name or None, req.version or None)
        return json_format.ParseDict(doc, self.m.ModelStatisticsResponse())

    async def ModelConfig(self, req: Any) -> Any:
        config = self.service.model_config(req.name, req.version or None)
        known = {f.name for f in self.m.ModelConfigResponse.DESCRIPTOR.fields_by_name["config"].message_type.fields}
        response = self.m.ModelConfigResponse()
        json_format.ParseDict({"config": {k: v for k, v in config.items() if k in known}}, response)
        return response

    async def RepositoryIndex(self, req: Any) -> Any:
        response = self.m.RepositoryIndexResponse()
        for row in self.service.registry.index():
            if not req.ready or row["state"] == "READY":
                response.models.add(**row)
        return response

    async def RepositoryModelLoad(self, req: Any) -> Any:
        await self.service.load(req.model_name)
        return self.m.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, req: Any) -> Any:
        await self.service.unload(req.model_name)
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
