"""The Open Inference Protocol over HTTP/REST, as a Starlette app.

Handlers read the request, call one `Service` method and write the answer; errors become
`{"error": "..."}` with the status their class holds (`ferry.errors`: 400, 401, 403, 404, 413, 503 with
Retry-After, 504; 500 only for true faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ferry.errors import (
    FerryError,
    ForbiddenError,
    InputError,
    RequestError,
    UnavailableError,
    status_for,
)
from ferry.protocol.tensors import json_nested
from ferry.serving import paddle_compat
from ferry.serving.codec import HEADER_LENGTH, InferRequest, decode_rest, encode_rest, header_length, loads
from ferry.serving.http_io import DisconnectSweeper, read_body
from ferry.serving.metrics import CONTENT_TYPE
from ferry.serving.service import Service
from ferry.serving.stages import PipelineModel

log = logging.getLogger("ferry.serve")
WORKER = str(os.getpid())  # which process answered, with --workers


def error_response(exc: BaseException) -> Response:
    status, _ = status_for(exc)
    if status != 500:
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)
    if isinstance(exc, FerryError):
        log.error("internal error: %s", exc)
        return JSONResponse({"error": f"internal error: {exc}"}, status_code=500)
    log.exception("unexpected error")
    return JSONResponse({"error": "internal error"}, status_code=500)


_NO_PHASE = contextlib.nullcontext()
OPEN, USER, ADMIN = "open", "user", "admin"  # who may call an endpoint: anyone, key holders, admins


def check_admin_write(request: Request) -> None:
    """Admin writes come from tools, never from a web page: refuse the two shapes a cross-site request from a
    browser takes (a foreign Origin; a body sent as text/plain or a form, which needs no CORS preflight)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ForbiddenError(f"admin writes from another origin ({origin}) are refused")
    content_type = request.headers.get("content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() != "application/json":
        raise ForbiddenError(f"admin writes take application/json, got {content_type!r}")


class HttpApi:
    """The endpoints: each reads the request, calls one `Service` method, and writes the answer."""

    def __init__(self, service: Service):
        self.service = service
        self.limit = service.settings.max_body_bytes
        self.sweeper = DisconnectSweeper()

    def endpoint(self, handler, access: str = USER, write: bool = False):
        service = self.service

        async def run(request: Request) -> Response:
            try:
                if access == ADMIN or (access == USER and service.settings.api_key is not None):
                    service.admit(request.headers, admin=access == ADMIN)
                if write:
                    check_admin_write(request)
                return await handler(request)
            except ClientDisconnect:
                return Response(status_code=499)
            except asyncio.CancelledError:
                if not service.stopping:
                    raise
                return error_response(UnavailableError("the server is stopping; retry on another replica"))
            except Exception as exc:
                return error_response(exc)

        return run

    async def live(self, _: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, _: Request) -> Response:
        ok = self.service.registry.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(self, _: Request) -> Response:
        return JSONResponse(self.service.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(self.service.model_metadata(p["model"], p.get("version")))

    async def model_stats(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(self.service.model_stats(p.get("model"), p.get("version")))

    async def model_config(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(self.service.model_config(p["model"], p.get("version")))

    async def model_ready(self, request: Request) -> Response:
        p = request.path_params
        ok = self.service.model_ready(p["model"], p.get("version"))
        return JSONResponse({"name": p["model"], "ready": ok}, status_code=200 if ok else 400)

    async def infer(self, request: Request) -> Response:
        p = request.path_params
        tracing = self.service.tracing if self.service.tracing.tracer is not None else None
        with tracing.request(p["model"], "http", request.headers) if tracing else _NO_PHASE:
            body = await read_body(request, self.limit)
            length = header_length(request.headers.get(HEADER_LENGTH))
            with tracing.phase("decode") if tracing else _NO_PHASE:
                req = decode_rest(body, length)
            served, results, variant = await self.sweeper.run(
                request, self.service.infer_routed(p["model"], p.get("version"), req, "http", request.headers)
            )
            with tracing.phase("encode") if tracing else _NO_PHASE:
                payload, json_length = encode_rest(req, results, served.name, served.version)
        headers = {"x-ferry-model-version": served.version, "x-ferry-worker": WORKER}
        if variant is not None:
            headers["x-ferry-variant"] = variant
        if json_length is None:
            return Response(payload, media_type="application/json", headers=headers)
        headers[HEADER_LENGTH] = str(json_length)
        return Response(payload, media_type="application/octet-stream", headers=headers)

    async def repository_index(self, request: Request) -> Response:
        body = await read_body(request, self.limit)
        only_ready = bool(_json_or_empty(body).get("ready", False))
        rows = [r for r in self.service.registry.index() if not only_ready or r["state"] == "READY"]
        return JSONResponse(rows)

    async def repository_load(self, request: Request) -> Response:
        await self.service.load(request.path_params["model"])
        return JSONResponse({})

    async def repository_unload(self, request: Request) -> Response:
        await self.service.unload(request.path_params["model"])
        return JSONResponse({})

    async def paddle_prediction(self, request: Request) -> Response:
        name = request.path_params["model"]
        doc = loads(await read_body(request, self.limit))
        form = "pipeline" if isinstance(doc, dict) and "key" in doc else "feed"
        try:
            served = self.service.registry.get(name)
            if isinstance(served, PipelineModel):  # PaddleOCR's pipeline client: base64 values, one image
                req, form = paddle_compat.decode_bytes(doc, list(served.spec.inputs)), "pipeline"
            else:
                req, form = paddle_compat.decode(doc, served.signature)
            _, results, _ = await self.service.infer_routed(name, None, req, "paddle", request.headers)
        except InputError as exc:
            return JSONResponse(paddle_compat.error(form, str(exc)), status_code=400)
        return JSONResponse(paddle_compat.encode(form, results))

    async def predict_upload(self, request: Request) -> Response:
        """Images as multipart files (or one image as the body) -> labels with scores."""
        name = request.path_params["model"]
        body = await read_body(request, self.limit)  # the whole upload counts against --max-body-mb
        images = await _uploaded_files(request, body) if _is_multipart(request) else [body]
        if not images or not all(images):
            raise RequestError("send images as multipart/form-data files, or one image as the request body")
        served = self.service.registry.get(name)
        if isinstance(served, PipelineModel):
            return JSONResponse(await self._pipeline_uploads(served, images, request))
        if not getattr(served, "package", None) or not served.package.manifest.preprocessing:
            raise RequestError(f"model {name!r} declares no preprocessing, so it cannot take images")
        batch = np.empty(len(images), dtype=object)
        batch[:] = images
        req = InferRequest(inputs={served.package.signature.inputs[0].name: batch})
        served, results, variant = await self.service.infer_routed(name, None, req, "http", request.headers)
        doc: dict[str, Any] = {"model_name": served.name, "model_version": served.version}
        if "labels" in results:
            doc["predictions"] = [
                [{"label": lab.decode(), "score": float(sc)} for lab, sc in zip(labels, scores)]
                for labels, scores in zip(results["labels"], results["scores"])
            ]
        doc["outputs"] = {k: json_nested(v) for k, v in results.items() if k not in ("labels", "scores")}
        return JSONResponse(doc, headers={"x-ferry-variant": variant} if variant else None)

    async def _pipeline_uploads(self, served: PipelineModel, images: list[bytes], request: Request) -> dict:
        """Each uploaded file through a one-input pipeline (the OCR one reads one image per request), at once."""
        inputs = [n for n, d in served.spec.inputs.items() if d == "BYTES"]
        if len(served.spec.inputs) != 1 or not inputs:
            raise RequestError(f"pipeline {served.name!r} takes {served.spec.inputs}, not one uploaded file")

        async def one(image: bytes) -> dict[str, Any]:
            data = np.empty(1, dtype=object)
            data[0] = image
            req = InferRequest(inputs={inputs[0]: data})
            _, results, _ = await self.service.infer_routed(served.name, None, req, "http", request.headers)
            return {k: json_nested(v) for k, v in results.items()}

        return {"model_name": served.name, "results": list(await asyncio.gather(*(one(i) for i in images)))}

    async def get_traffic(self, request: Request) -> Response:
        return JSONResponse(self.service.get_traffic(request.path_params["model"]))

    async def set_traffic(self, request: Request) -> Response:
        body = await read_body(request, self.limit)
        policy = self.service.set_traffic(request.path_params["model"], _json_or_empty(body))
        return JSONResponse(policy.to_dict())

    async def metrics(self, _: Request) -> Response:
        self.service.refresh_gauges()
        return Response(self.service.metrics.render(), media_type=CONTENT_TYPE)

    def routes(self) -> list[Route]:
        e = self.endpoint
        model, versioned = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
        repo = "/v2/repository/models/{model}"
        return [
            Route("/v2/health/live", e(self.live, OPEN)),
            Route("/v2/health/ready", e(self.ready, OPEN)),
            Route("/v2", e(self.server_metadata)),
            Route("/v2/models/stats", e(self.model_stats)),
            Route(model, e(self.model_metadata)),
            Route(versioned, e(self.model_metadata)),
            Route(model + "/ready", e(self.model_ready)),
            Route(model + "/stats", e(self.model_stats)),
            Route(versioned + "/stats", e(self.model_stats)),
            Route(model + "/config", e(self.model_config)),
            Route(versioned + "/config", e(self.model_config)),
            Route(versioned + "/ready", e(self.model_ready)),
            Route(model + "/infer", e(self.infer), methods=["POST"]),
            Route(versioned + "/infer", e(self.infer), methods=["POST"]),
            Route(model + "/predict", e(self.predict_upload), methods=["POST"]),
            Route(model + "/traffic", e(self.get_traffic), methods=["GET"]),
            Route(model + "/traffic", e(self.set_traffic, ADMIN, write=True), methods=["POST"]),
            Route("/v2/repository/index", e(self.repository_index), methods=["POST"]),
            Route(repo + "/load", e(self.repository_load, ADMIN, write=True), methods=["POST"]),
            Route(repo + "/unload", e(self.repository_unload, ADMIN, write=True), methods=["POST"]),
            Route("/metrics", e(self.metrics)),
            Route("/{model}/prediction", e(self.paddle_prediction), methods=["POST"]),
        ]


def build_app(service: Service) -> InferShortcut:
    api = HttpApi(service)
    app = Starlette(routes=api.routes(), exception_handlers={HTTPException: http_error})
    return InferShortcut(app, api.endpoint(api.infer))


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


async def _uploaded_files(request: Request, body: bytes) -> list[bytes]:
    """The files of a multipart body already read (and so already held to the body limit)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=256, max_fields=256)
    except (MultiPartException, HTTPException, ValueError, KeyError) as exc:
        raise RequestError(f"multipart body could not be read: {getattr(exc, 'message', None) or exc}") from None
    return [await f.read() for _, f in form.multi_items() if hasattr(f, "read")]


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 and 405, in the protocol's error shape."""
    message = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed here"}
    return JSONResponse(
        {"error": message.get(exc.status_code, exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


class InferShortcut:
    """Sends `POST .../infer` straight to its handler and everything else through the Starlette app.

    Starlette's two middlewares and its scan of 17 routes cost a small inference about a fifth of the
    event loop's time. The handler loses nothing by skipping them: `HttpApi.endpoint` already checks
    the key and turns every exception into a response.
    """

    def __init__(self, app: Starlette, infer: Any):
        self.app = app
        self._infer = infer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            params = infer_path(scope["path"])
            if params is not None:
                scope["path_params"] = params
                response = await self._infer(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def infer_path(path: str) -> dict[str, str] | None:
    """`/v2/models/M/infer` or `/v2/models/M/versions/V/infer` -> its parameters, else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1:3] == ["v2", "models"] and parts[4] == "infer" and parts[3]:
        return {"model": parts[3]}
    if len(parts) == 7 and parts[1:3] == ["v2", "models"] and parts[4] == "versions" and parts[6] == "infer":
        if parts[3] and parts[5]:
            return {"model": parts[3], "version": parts[5]}
    return None


def _json_or_empty(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    doc = loads(body)
    if not isinstance(doc, dict):
        raise RequestError(f"request body must be a JSON object, got {type(doc).__name__}")
    return doc


def metrics_app(service: Service) -> Starlette:
    """Only /metrics, for --metrics-port; it asks for the API key as the main port does."""
    api = HttpApi(service)
    return Starlette(routes=[Route("/metrics", api.endpoint(api.metrics))])
