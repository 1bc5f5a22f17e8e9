"""The Open Inference Protocol over HTTP/REST, as a Starlette app.

Handlers parse and validate, then hand over to `Service.infer`; errors become `{"error": "..."}` with the
status their class implies (400, 404, 503 with Retry-After, 504; 500 only for true faults).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ferry.errors import FerryError, InputError, PayloadTooLargeError, RequestError
from ferry.serving import paddle_compat
from ferry.serving.codec import InferRequest, decode_rest, encode_rest
from ferry.serving.metrics import CONTENT_TYPE
from ferry.serving.service import Service, status_for

log = logging.getLogger("ferry.serve")
HEADER_LENGTH = "inference-header-content-length"
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


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {declared} bytes is over the {limit}-byte limit")
    # Straight from the ASGI channel: Starlette's stream() adds bookkeeping that a small request feels.
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class DisconnectSweeper:
    """Cancels the handlers of clients that went away, so that their queued requests are never run.

    One task checks every waiting request each `period` seconds, which costs a request nothing but a set
    insert; a watcher task per request would cost a third of the server's throughput.
    """

    def __init__(self, period: float = 0.05):
        self.period = period
        self.waiting: dict[Request, asyncio.Task] = {}
        self._task: asyncio.Task | None = None

    async def run(self, request: Request, work):
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._sweep())
        self.waiting[request] = asyncio.current_task()
        try:
            return await work
        except asyncio.CancelledError:
            if request in self.waiting or not await _gone(request):
                raise
            raise ClientDisconnect() from None
        finally:
            self.waiting.pop(request, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            for request, task in list(self.waiting.items()):
                if await _gone(request):
                    self.waiting.pop(request, None)
                    task.cancel()


async def _gone(request: Request) -> bool:
    # uvicorn's receive() is a method of its request cycle, which knows at no cost whether the
    # connection dropped; other ASGI servers get Starlette's general (slower) check.
    cycle = getattr(request.receive, "__self__", None)
    if cycle is not None and isinstance(getattr(cycle, "disconnected", None), bool):
        return cycle.disconnected
    return await request.is_disconnected()


def build_app(service: Service) -> InferShortcut:
    settings = service.settings
    sweeper = DisconnectSweeper()

    def guarded(handler, admin: bool = False, open_: bool = False):
        async def endpoint(request: Request) -> Response:
            if not open_ and (settings.api_key is not None or (admin and not settings.admin_open)):
                presented = request.headers.get("x-api-key")
                auth = request.headers.get("authorization", "")
                if auth.lower().startswith("bearer "):
                    presented = auth[7:].strip()
                if not service.authorized(presented, admin):
                    return JSONResponse({"error": "missing or wrong API key"}, status_code=401)
            try:
                return await handler(request)
            except ClientDisconnect:
                return Response(status_code=499)
            except Exception as exc:
                return error_response(exc)

        return endpoint

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        ok = service.registry.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(_: Request) -> Response:
        return JSONResponse(service.server_metadata())

    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        return JSONResponse(service.model_metadata(p["model"], p.get("version")))

    async def model_ready(request: Request) -> Response:
        p = request.path_params
        ok = service.model_ready(p["model"], p.get("version"))
        return JSONResponse({"name": p["model"], "ready": ok}, status_code=200 if ok else 400)

    async def infer(request: Request) -> Response:
        p = request.path_params
        body = await read_body(request, settings.max_body_bytes)
        header_length = request.headers.get(HEADER_LENGTH)
        if header_length is not None and not header_length.strip().isdigit():
            raise RequestError(f"Inference-Header-Content-Length must be a number, got {header_length!r}")
        req = decode_rest(body, int(header_length) if header_length is not None else None)
        served, results, variant = await sweeper.run(
            request, service.infer_routed(p["model"], p.get("version"), req, "http", request.headers)
        )
        payload, json_length = encode_rest(req, results, served.name, served.version)
        headers = {"x-ferry-model-version": served.version, "x-ferry-worker": WORKER}
        if variant is not None:
            headers["x-ferry-variant"] = variant
        if json_length is None:
            return Response(payload, media_type="application/json", headers=headers)
        headers[HEADER_LENGTH] = str(json_length)
        return Response(payload, media_type="application/octet-stream", headers=headers)

    async def repository_index(request: Request) -> Response:
        body = await read_body(request, settings.max_body_bytes)
        only_ready = bool(_json_or_empty(body).get("ready", False))
        rows = [r for r in service.registry.index() if not only_ready or r["state"] == "READY"]
        return JSONResponse(rows)

    async def repository_load(request: Request) -> Response:
        service.check_control()
        service.registry.load(request.path_params["model"])
        return JSONResponse({})

    async def repository_unload(request: Request) -> Response:
        service.check_control()
        service.registry.unload(request.path_params["model"])
        return JSONResponse({})

    async def paddle_prediction(request: Request) -> Response:
        name = request.path_params["model"]
        body = await read_body(request, settings.max_body_bytes)
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"request body is not valid JSON: {exc}") from None
        form = "pipeline" if isinstance(doc, dict) and "key" in doc else "feed"
        try:
            req, form = paddle_compat.decode(doc, service.registry.get(name).signature)
            _, results, _ = await service.infer_routed(name, None, req, "paddle", request.headers)
        except InputError as exc:
            return JSONResponse(paddle_compat.error(form, str(exc)), status_code=400)
        return JSONResponse(paddle_compat.encode(form, results))

    async def predict_upload(request: Request) -> Response:
        """Images as multipart files (or one image as the body) -> labels with scores."""
        name = request.path_params["model"]
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=256, max_part_size=settings.max_body_bytes)
            images = [await f.read() for _, f in form.multi_items() if hasattr(f, "read")]
        else:
            images = [await read_body(request, settings.max_body_bytes)]
        if not images or not all(images):
            raise RequestError("send images as multipart/form-data files, or one image as the request body")
        served = service.registry.get(name)
        if not getattr(served, "package", None) or not served.package.manifest.preprocessing:
            raise RequestError(f"model {name!r} declares no preprocessing, so it cannot take images")
        batch = np.empty(len(images), dtype=object)
        batch[:] = images
        req = InferRequest(inputs={served.package.signature.inputs[0].name: batch})
        served, results, variant = await service.infer_routed(name, None, req, "http", request.headers)
        doc: dict[str, Any] = {"model_name": served.name, "model_version": served.version}
        if "labels" in results:
            doc["predictions"] = [
                [{"label": lab.decode(), "score": float(sc)} for lab, sc in zip(labels, scores)]
                for labels, scores in zip(results["labels"], results["scores"])
            ]
        doc["outputs"] = {k: v.tolist() for k, v in results.items() if k not in ("labels", "scores")}
        return JSONResponse(doc, headers={"x-ferry-variant": variant} if variant else None)

    async def get_traffic(request: Request) -> Response:
        name = request.path_params["model"]
        service.registry.get(name)
        policy = service.traffic.get(name)
        return JSONResponse(policy.to_dict() if policy else {"split": {}, "sticky_header": None, "shadow": None})

    async def set_traffic(request: Request) -> Response:
        body = await read_body(request, settings.max_body_bytes)
        policy = service.set_traffic(request.path_params["model"], _json_or_empty(body))
        return JSONResponse(policy.to_dict())

    async def metrics(_: Request) -> Response:
        service.refresh_gauges()
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2/health/live", guarded(live, open_=True)),
        Route("/v2/health/ready", guarded(ready, open_=True)),
        Route("/v2", guarded(server_metadata)),
        Route(model, guarded(model_metadata)),
        Route(versioned, guarded(model_metadata)),
        Route(model + "/ready", guarded(model_ready)),
        Route(versioned + "/ready", guarded(model_ready)),
        Route(model + "/infer", guarded(infer), methods=["POST"]),
        Route(model + "/predict", guarded(predict_upload), methods=["POST"]),
        Route(model + "/traffic", guarded(get_traffic), methods=["GET"]),
        Route(model + "/traffic", guarded(set_traffic, admin=True), methods=["POST"]),
        Route(versioned + "/infer", guarded(infer), methods=["POST"]),
        Route("/v2/repository/index", guarded(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", guarded(repository_load, admin=True), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", guarded(repository_unload, admin=True), methods=["POST"]),
        Route("/metrics", guarded(metrics)),
        Route("/{model}/prediction", guarded(paddle_prediction), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return InferShortcut(app, guarded(infer))


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 and 405, in the protocol's error shape."""
    message = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed here"}
    return JSONResponse(
        {"error": message.get(exc.status_code, exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


class InferShortcut:
    """Sends `POST .../infer` straight to its handler and everything else through the Starlette app.

    Starlette's two middlewares and its scan of 17 routes cost a small inference about a fifth of the
    event loop's time. The handler loses nothing by skipping them: `guarded` already checks the key and
    turns every exception into a response.
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
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def metrics_app(service: Service) -> Starlette:
    """Only /metrics, for --metrics-port."""

    async def metrics(_: Request) -> Response:
        service.refresh_gauges()
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", metrics)])
