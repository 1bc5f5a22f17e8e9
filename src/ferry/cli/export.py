"""`ferry export lite` (for device engines: numpy, ncnn, MNN, ONNX Runtime Mobile) and `ferry export web`."""

from __future__ import annotations

from pathlib import Path

import click

from ferry.compress.metrics import METRICS


@click.group()
def export() -> None:
    """Export a package for another runtime."""


@export.command("lite")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="numpy: the .flite file (with --bundle: a folder); ncnn, mnn, ort: a folder.")  # fmt: skip
@click.option("--target", type=click.Choice(["numpy", "ncnn", "mnn", "ort"]), default="numpy", show_default=True,
              help="The engine on the device: ferry's numpy engine, ncnn, MNN, or ONNX Runtime Mobile.")  # fmt: skip
@click.option("--int8", is_flag=True,
              help="numpy: per-channel int8 weights; mnn: int8 weights (4x smaller files, float compute); "
                   "ncnn, mnn with --calib: int8 weights and activations.")  # fmt: skip
@click.option("--calib", type=click.Path(exists=True, path_type=Path),
              help="ncnn, mnn: calibration data for --int8 (.npz, .jsonl, image folder with labels.txt).")  # fmt: skip
@click.option("--calib-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="How many calibration samples to use.")  # fmt: skip
@click.option("--eval", "eval_data", type=click.Path(exists=True, path_type=Path),
              help="ncnn, mnn, ort: data to measure the written files' accuracy against the package's.")  # fmt: skip
@click.option("--metric", type=click.Choice(METRICS), help="For --eval: default top1 with labels, else agreement.")
@click.option("--max-drop", type=click.FloatRange(min=0),
              help="For --eval: the largest accuracy drop accepted, in points (larger: nothing written).")  # fmt: skip
@click.option("--fp16", is_flag=True, help="ncnn, mnn: store the weights in half precision.")
@click.option("--shape", "shapes", multiple=True, metavar="INPUT=1x3x224x224",
              help="ncnn: the input shape to convert at (needed where an input has named dimensions).")  # fmt: skip
@click.option("--bundle", is_flag=True, help="numpy: a folder with the model plus the runtime (numpy alone runs it).")
@click.option("--no-optimize", is_flag=True, help="numpy: skip the graph optimizer.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="numpy: the batch size the memory plan is made for.")  # fmt: skip
def lite(package: Path, out: Path, target: str, int8: bool, calib: Path | None, calib_size: int,
         eval_data: Path | None, metric: str | None, max_drop: float | None, fp16: bool, shapes: tuple[str, ...],
         bundle: bool, no_optimize: bool, batch: int) -> None:  # fmt: skip
    """Write PACKAGE for a device engine, run the result here and print its parity with the package.

    numpy: ferry's lite file (graph in execution order, memory plan, memory-mapped weights), runs wherever
    numpy does. ncnn (.param + .bin), mnn (.mnn), ort (.ort + required_operators.config): what those
    engines' C++/Java/ObjC APIs load on a phone or board.
    """
    if target == "numpy":
        from ferry.exporters.lite import export_lite

        if fp16 or shapes or calib or eval_data or metric or max_drop is not None:
            raise click.UsageError("--fp16, --shape, --calib, --eval, --metric and --max-drop are for the ncnn, "
                                   "mnn and ort targets")  # fmt: skip
        result = export_lite(package, out, int8=int8, bundle=bundle, optimize=not no_optimize, batch=batch)
    else:
        from ferry.exporters.targets import export_target

        if bundle:
            raise click.UsageError("--bundle is for the numpy target")
        result = export_target(package, out, target, fp16=fp16, int8=int8, calib=calib, calib_size=calib_size,
                               eval_data=eval_data, metric=metric, max_drop=max_drop, shapes=_shapes(shapes),
                               progress=True)  # fmt: skip
    click.echo(result.summary())


def _shapes(items: tuple[str, ...]) -> dict[str, list[int]]:
    shapes = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise click.UsageError(f"--shape takes INPUT=1x3x224x224, got {item!r}") from None
        if not name or any(d < 1 for d in shapes[name]):
            raise click.UsageError(f"--shape takes INPUT=1x3x224x224 (positive sizes), got {item!r}")
    return shapes


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
