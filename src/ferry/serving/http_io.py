"""Reading a request off the connection: the body within its limit, and noticing a client that left.

Used by `http_app.py`'s handlers; the connection-level limits (timeouts, header and connection caps) are
in `http_limits.py`.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from ferry.errors import PayloadTooLargeError


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
