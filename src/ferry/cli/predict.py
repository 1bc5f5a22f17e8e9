"""`ferry predict PKG INPUTS... -o OUT`, and `ferry predict --demo`."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ferry.cli._options import DEMO_ROOT, demo_option, engine_options
from ferry.inference import make_config


@click.command()
@click.argument("package", required=False, type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write results to .npz or .jsonl.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue an interrupted run.")
@demo_option("The bundled digits model on its samples (--demo), or PP-OCR on your images (--demo ocr).")
@click.option(
    "--cast",
    type=click.Choice(["float32", "float16", "float64"]),
    default=None,
    help="Cast float inputs of another float type to this one (numpy saves float64 by default).",
)
@click.option(
    "--max-constant-mb",
    type=click.FloatRange(min=1),
    default=256.0,
    show_default=True,
    help="Refuse graphs that build constants larger than this.",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Run the batches on a Ray actor pool (pip install 'ferry[ray]'); order, resume and output as here.",
)
@click.option("--actors", type=click.IntRange(min=1), default=2, show_default=True, help="Ray actors (with --ray).")
@click.option("--ray-address", default=None,
              help="A running Ray cluster (HOST:PORT or 'auto'); by default a local one is started.")  # fmt: skip
@engine_options
def predict(package, inputs, output, batch_size, resume, demo, cast, max_constant_mb, use_ray, actors, ray_address,
            backend, threads, precision) -> None:  # fmt: skip
    """Run a package on .npy/.npz/.json/.jsonl/.csv files or images, in batches."""
    import ferry
    from ferry.batch import BatchJob, read_inputs, run_job

    if demo == "digits":
        package = DEMO_ROOT / "digits"
        inputs = inputs or (DEMO_ROOT / "samples",)
    elif demo == "ocr":
        from ferry.ocr import demo_repository

        inputs = tuple(p for p in (package, *inputs) if p is not None)
        package = demo_repository() / "ocr"
    if package is None or not inputs:
        raise click.UsageError("give a package and at least one input file (or --demo)")
    from ferry.batch.pipeline_job import is_pipeline

    if is_pipeline(package):
        _predict_pipeline(package, list(inputs), output)
        return
    pkg = ferry.load(package, max_constant_bytes=int(max_constant_mb * (1 << 20)))
    predictor = ferry.create_predictor(make_config(pkg, backend, threads, precision))
    samples = read_inputs(list(inputs), pkg)
    console = Console(stderr=True, soft_wrap=True)  # messages stay one line whatever the terminal's width
    if cast:
        for name, array in samples.arrays.items():
            if array.dtype.kind == "f" and array.dtype != np.dtype(cast):
                samples.arrays[name] = array.astype(cast)
                console.print(f"cast input {name!r} from {array.dtype} to {cast}")
    job = BatchJob(predictor, samples, batch_size, output, resume=resume)
    compute = None
    if use_ray:
        from ferry.integrations.ray import RayCompute

        compute = RayCompute(job, actors, threads=threads or 1, backend=backend, address=ray_address)
    where = f"{actors} Ray actors" if use_ray else predictor.backend
    console.print(f"{pkg.name}: {samples.count} samples in {job.batches} batches on {where}")
    with Progress(
        TextColumn("predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("batches", total=job.batches)
        done = [0]

        def advance(_index: int) -> None:
            done[0] += 1
            bar.advance(task)

        try:
            results = run_job(job, on_batch=advance, compute=compute)
        except KeyboardInterrupt:
            if output is not None:
                console.print(
                    f"interrupted after {done[0]} of {job.batches} batches; run the same command again to resume "
                    f"(finished batches are kept in {output.name}.partial/)"
                )
            raise
    for note in job.notes:
        console.print(note)
    if compute is not None and compute.nodes:
        spread = ", ".join(f"{n} on {node[:12]}" for node, n in compute.nodes.most_common())
        console.print(f"Ray ran {sum(compute.nodes.values())} batches on {len(compute.nodes)} node(s): {spread}")
    if output is not None:
        console.print(f"wrote {output}")
    if output is None or demo:
        _show(job, results, demo)


def _predict_pipeline(folder: Path, inputs: list[Path], output: Path | None) -> None:
    """A pipeline folder: every file one request, JSON lines out (or a table of the first 50 results)."""
    from ferry.batch.pipeline_job import run_pipeline
    from ferry.batch.readers import IMAGE_SUFFIXES

    files = [f for p in inputs for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if f.is_file()]
    if any(p.is_dir() for p in inputs):
        files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise click.UsageError("no input files found")
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"pipeline {folder.name}: {len(files)} files")
    with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("files", total=len(files))
        records = run_pipeline(folder, files, output, on_done=lambda _i: bar.advance(task))
    if output is not None:
        console.print(f"wrote {output}")
        return
    table = Table("sample", *[k for k in records[0] if k != "sample"][:1], title="predictions")
    for record in records[:50]:
        first = next((v for k, v in record.items() if k != "sample"), "")
        table.add_row(record["sample"], str(first)[:80])
    Console().print(table)
    if len(records) > 50:
        Console().print(f"showing 50 of {len(records)} files; write them all with -o results.jsonl")


def _show(job, results, demo: bool) -> None:
    from ferry.batch.job import jsonl_records

    records = list(jsonl_records(job, results))
    table = Table("sample", "prediction", "score", title="predictions")
    correct = 0
    shown = records[:50]
    for record in shown:
        top = record.get("top")
        if top:
            table.add_row(record["sample"], top[0]["label"], f"{top[0]['score']:.3f}")
        else:
            first = next(iter(record["outputs"].values()))
            table.add_row(record["sample"], str(first)[:60], "")
    for record in records:
        top = record.get("top")
        if demo and top and record["sample"][0] == top[0]["label"]:
            correct += 1
    Console().print(table)
    if len(shown) < len(records):
        Console().print(f"showing {len(shown)} of {len(records)} samples; write them all with -o results.jsonl")
    if demo:
        Console().print(f"{correct}/{len(records)} correct (the true digit is the first character of each file name)")
