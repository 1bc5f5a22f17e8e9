"""`ferry export lite`: a package as one compact file (or a folder with the runtime) for numpy-only devices."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Export a package for another runtime."""


@export.command("lite")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="The .flite file to write (with --bundle: a folder).")  # fmt: skip
@click.option("--int8", is_flag=True, help="Store large float weights as per-channel int8 (about 4x smaller).")
@click.option("--bundle", is_flag=True, help="Write a folder: the model plus the runtime, runnable with numpy alone.")
@click.option("--no-optimize", is_flag=True, help="Skip the graph optimizer.")
@click.option(
    "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size the memory plan is made for."
)
def lite(package: Path, out: Path, int8: bool, bundle: bool, no_optimize: bool, batch: int) -> None:
    """Write PACKAGE as a lite model: graph in execution order, memory plan, memory-mapped weights."""
    from ferry.exporters.lite import export_lite

    result = export_lite(package, out, int8=int8, bundle=bundle, optimize=not no_optimize, batch=batch)
    click.echo(result.summary())


@export.command("web")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="The folder to write (a site there is replaced).")  # fmt: skip
@click.option("--webgpu", is_flag=True,
              help="Add onnxruntime-web's WebGPU build (26.8 MB more; used where a GPU adapter exists).")  # fmt: skip
@click.option("--runtime-url", metavar="URL",
              help="Load onnxruntime-web from this URL (a CDN) instead of copying it into the site.")  # fmt: skip
@click.option("--runtime-from", type=click.Path(exists=True, path_type=Path),
              help="The onnxruntime-web npm tarball or unpacked package to take the runtime from "
                   "(no download).")  # fmt: skip
@click.option("--preview", is_flag=True, help="Serve the site on 127.0.0.1 when written (see `ferry serve-web`).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port for --preview.")
def web(package: Path, out: Path, webgpu: bool, runtime_url: str | None, runtime_from: Path | None,
        preview: bool, port: int) -> None:  # fmt: skip
    """Write PACKAGE as a static web site that runs the model in the page (onnxruntime-web)."""
    from ferry.web import export_web

    result = export_web(package, out, webgpu=webgpu, runtime_url=runtime_url, runtime_from=runtime_from)
    click.echo(result.summary())
    if preview:
        _serve(out, "127.0.0.1", port, isolation=True)


def _serve(site: Path, host: str, port: int, isolation: bool) -> None:
    from ferry.web.preview import SiteServer

    try:
        server = SiteServer(site, host, port, isolation=isolation)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port"
        ) from None
    click.echo(f"serving {site} at {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command("serve-web")
@click.argument("site", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--no-isolation", is_flag=True,
              help="Send no COOP/COEP headers, as many hosts do (the site's service worker adds them "
                   "from the second load).")  # fmt: skip
def serve_web(site: Path, host: str, port: int, no_isolation: bool) -> None:
    """Serve a site `ferry export web` wrote, with the MIME types and headers it needs, to try it."""
    _serve(site, host, port, isolation=not no_isolation)
