"""What uvicorn does not bound on its own: the time a client may take to send its headers and its body,
the bytes of its headers, and how many connections are open at once.

Measured on uvicorn alone before this: 20,400 connections that each sent half a request line held the
server at its file-descriptor limit, with health timing out, for as long as they stayed; 40 connections
dribbling 10 MiB of headers added 400 MB of resident memory (httptools buffers a header until it ends).

Each limit is a `ferry serve` flag (see `ConnectionLimits`). When the connection cap is reached, the
connection that has waited longest without a request running (still sending headers, or idle between
requests) is closed to make room, so that a health probe still gets in.

This is the one place that reaches into uvicorn's private protocol class (`HttpToolsProtocol`: its
parser callbacks and `connections` set); `tests/test_http_limits.py` exercises every hook, so an upgrade
that changes them fails there first.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

_STATUS = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large", 503: b"503 Service Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds from the first byte (or the connection) to the end of the headers
    body_timeout: float = 60.0  # seconds from the end of the headers to the end of the body
    idle_timeout: float = 5.0  # seconds a keep-alive connection may sit between requests (uvicorn's own timer)
    max_header_bytes: int = 64 << 10  # request line and headers together
    max_connections: int = 2048  # open HTTP connections; see `usable_connections` for the fd limit


def usable_connections(wanted: int, reserve: int = 256) -> int:
    """Raise the soft file-descriptor limit to the hard one, and keep `wanted` below it with room for
    model files, gRPC and the metrics port, so that the cap is reached before the fd limit is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(16, min(wanted, soft - reserve)) if soft != resource.RLIM_INFINITY else wanted


SWEEP_SECONDS = 0.1  # how often deadlines are checked: timeouts fire up to this late


def protocol_class(limits: ConnectionLimits) -> type:
    """uvicorn's httptools protocol with the limits above; pass it as `uvicorn.Config(http=...)`.

    A request costs the limits a few attribute writes: each connection holds the time its current phase
    must end by, and one sweep per event loop (every `SWEEP_SECONDS`) closes those past it. A timer per
    phase instead (call_later and cancel, twice a request) cost the tiny-MLP benchmark about 5% of its
    req/s."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    sweeps: set[asyncio.AbstractEventLoop] = set()

    def sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        now = loop.time()
        for conn in list(connections):
            deadline = getattr(conn, "deadline", None)
            if deadline is not None and now > deadline:
                conn.expire()
        loop.call_later(SWEEP_SECONDS, sweep, loop, connections)

    class LimitedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.loop not in sweeps:
                sweeps.add(self.loop)
                self.loop.call_later(SWEEP_SECONDS, sweep, self.loop, self.connections)
            self.reading_headers = True
            self.header_bytes = 0
            self.waiting_since = self.loop.time()
            self.deadline: float | None = self.waiting_since + limits.header_timeout
            if len(self.connections) > limits.max_connections and not _shed_one(self.connections, self):
                self.refuse(503, "too many connections")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.reading_headers and not self.transport.is_closing():
                # Headers not complete after this chunk: every byte so far was request line and headers.
                self.header_bytes += len(data)
                if self.header_bytes > limits.max_header_bytes:
                    self.refuse(431, f"request headers over {limits.max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.reading_headers, self.header_bytes = True, 0
            self.waiting_since = self.loop.time()
            self.deadline = self.waiting_since + limits.header_timeout

        def on_headers_complete(self) -> None:
            self.reading_headers = False
            self.deadline = self.loop.time() + limits.body_timeout
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.deadline = None  # the request is whole; the app's time is not the client's
            super().on_message_complete()

        def expire(self) -> None:
            what = "headers" if self.reading_headers else "body"
            self.refuse(408, f"the request's {what} did not arrive in time")

        def idle(self) -> bool:
            """Nothing of ours runs for this connection: it is sending headers, or waits between requests."""
            return self.reading_headers or self.cycle is None or self.cycle.response_complete

        def refuse(self, status: int, message: str) -> None:
            self.deadline = None
            if self.transport.is_closing():
                return
            if self.idle():
                body = message.encode()
                self.transport.write(
                    b"HTTP/1.1 " + _STATUS[status] + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            self.transport.close()

    return LimitedProtocol


def _shed_one(connections: set[Any], newcomer: Any) -> bool:
    """Close the idle connection that has waited longest; False when every other one is busy."""
    idle = [c for c in connections if c is not newcomer and getattr(c, "idle", None) and c.idle()]
    if not idle:
        return False
    oldest = min(idle, key=lambda c: c.waiting_since)
    oldest.refuse(503, "closed to make room for a new connection")
    return True
