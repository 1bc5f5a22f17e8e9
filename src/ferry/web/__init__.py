"""The web part: `ferry export web` writes a static site that runs a package in the page on
onnxruntime-web (`export.py`), with the runtime files from npm (`runtime.py`), and `ferry serve-web`
serves one locally (`preview.py`). The page's side is in `assets/`."""

from ferry.web.export import WebExport, export_web

__all__ = ["WebExport", "export_web"]
