"""`ferry bench PKG`: latency percentiles and throughput per backend, batch size and thread count."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers, e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: expected positive integers")
    return values


@click.command()
@click.argument("package", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--url", default=None, help="Drive a running server instead (http://... or grpc://...).")
@click.option("--model", default=None, help="With --url: the model to call.")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True, help="With --url.")
@click.option("--seconds", type=click.FloatRange(min=0.1, max=600), default=10.0, show_default=True, help="With --url.")
@click.option("--api-key", default=None, help="With --url.")
@click.option("--backend", "backends", default="all", show_default=True, help="all, or a comma-separated list.")
@click.option("--batch", "batches", default="1,32", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--threads", "threads", default="2", show_default=True, help="Thread counts, comma-separated.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--min-seconds", type=float, default=0.5, show_default=True, help="Time each setting at least this long.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write an HTML report with plots.")
@click.option("--tune", is_flag=True, help="Record the fastest backend per batch size in the package for 'auto'.")
@click.option("--dim", "dims", multiple=True, help="Size of a named dimension in the made-up inputs: NAME=SIZE.")
def bench(
    package, url, model, concurrency, seconds, api_key, backends, batches, threads, precision, warmup, runs,
    min_seconds, html_path, tune, dims,
) -> None:  # fmt: skip
    """Measure each installed backend on PACKAGE; with --tune, teach backend 'auto' the winners.

    With --url, drive a running server instead: latency percentiles and requests per second.
    """
    if url is not None:
        _bench_remote(url, model, concurrency, seconds, _ints(batches)[0], api_key)
        return
    if package is None:
        raise click.UsageError("give a package, or --url and --model for a running server")
    import ferry
    from ferry.bench import html_report, measure_each, tuning_record
    from ferry.errors import ConfigError
    from ferry.inference.backends import installed_backends

    pkg = ferry.load(package)
    available = installed_backends() + ["lite"]  # "all" means the big engines; name lite to time it too
    names = installed_backends() if backends == "all" else [b.strip() for b in backends.split(",")]
    unknown = [b for b in names if b not in available]
    if unknown:
        raise ConfigError(f"backend(s) {unknown} not installed; installed: {available}")
    thread_counts = _ints(threads)
    sizes = {}
    for item in dims:
        name, _, size = item.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise click.UsageError(f"--dim takes NAME=SIZE (a positive integer), got {item!r}")
        sizes[name] = int(size)
    console = Console()
    if backends == "all":
        console.print(
            "measuring the installed engines; lite (the numpy engine for devices) is not in 'all': name it to "
            f"time it too, e.g. --backend {','.join([*names, 'lite'])}",
            soft_wrap=True,  # one line whatever the terminal's width, so that it can be grepped
        )
    with console.status("measuring") as status:
        results, skipped = measure_each(pkg, names, _ints(batches), thread_counts, precision, warmup, runs,
                                        min_seconds, sizes, status.update)  # fmt: skip
    for backend, reason in skipped.items():
        console.print(f"{backend}: left out, it cannot run this model: {reason}", soft_wrap=True)
    if skipped and backends != "all":
        raise click.ClickException(f"backend(s) {sorted(skipped)} cannot run {pkg.name!r} (above)")
    table = Table("backend", "batch", "threads", "p50 ms", "p90 ms", "p99 ms", "items/s", title=pkg.name)
    for m in results:
        table.add_row(
            m.backend,
            str(m.batch),
            str(m.threads),
            f"{m.p50_ms:.3f}",
            f"{m.p90_ms:.3f}",
            f"{m.p99_ms:.3f}",
            f"{m.items_per_s:.1f}",
        )
    console.print(table)
    if html_path:
        html_path.write_text(html_report(f"ferry bench: {pkg.name}", results), encoding="utf-8")
        console.print(f"wrote {html_path}")
    if tune:
        tuning = dict(pkg.manifest.tuning)
        tuning[precision] = tuning_record(results, precision, package=pkg)
        pkg.save_tuning(tuning)
        console.print(f"recorded for backend 'auto' ({precision}): {tuning[precision]['fastest']}")


def _bench_remote(url: str, model: str | None, concurrency: int, seconds: float, batch: int, api_key) -> None:
    from ferry.bench.remote import drive

    if not model:
        raise click.UsageError("--url needs --model")
    result = drive(url, model, concurrency, seconds, batch, api_key)
    table = Table("requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", title=f"{model} at {url}")
    table.add_row(
        str(result.requests), str(result.errors), f"{result.per_second:.1f}",
        f"{result.p50_ms:.2f}", f"{result.p90_ms:.2f}", f"{result.p99_ms:.2f}",
    )  # fmt: skip
    Console().print(table)
    Console().print(f"{concurrency} threads, batch {batch}, {result.seconds:.1f} s")
