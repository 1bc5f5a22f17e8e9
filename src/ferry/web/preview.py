"""`ferry serve-web SITE`: a static server for trying a site, with the MIME types and headers it needs.

The standard library's server, on 127.0.0.1 by default. It sends Cross-Origin-Opener-Policy and
Cross-Origin-Embedder-Policy (threads work from the first visit) unless `isolation=False`, which shows
what a host that sends no headers gives (the site's service worker then adds them from the second load).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

from ferry.errors import ConfigError

MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".ort": "application/octet-stream",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}
    isolation = True

    def end_headers(self) -> None:
        if self.isolation:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")  # a fresh export shows at once
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        if os.environ.get("FERRY_DEBUG"):
            super().log_message(format, *args)


class SiteServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, isolation: bool = True):
        site = Path(site)
        if not (site / "model.json").is_file():
            raise ConfigError(f"{site}: no model.json; is this a folder `ferry export web` wrote?")
        handler = type("Handler", (_Handler,), {"isolation": isolation})
        super().__init__((host, port), functools.partial(handler, directory=str(site)))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> SiteServer:
        """Serve from a background thread (for tests and scripts); `shutdown()` stops it."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self
