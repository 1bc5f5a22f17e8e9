"""`ferry inspect PKG`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


@click.command()
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.option("--dim", "dims", multiple=True, help="Size of a dynamic dimension for the FLOPs estimate: NAME=INT.")
def inspect(package: Path, as_json: bool, dims: tuple[str, ...]) -> None:
    """Show a package's signature, ops, parameters, FLOPs estimate, files and provenance."""
    import ferry
    from ferry.stats import describe

    sizes = {}
    for item in dims:
        key, _, value = item.partition("=")
        if not value.isdigit():
            raise click.BadParameter(f"{item!r}: expected NAME=INT, e.g. batch=1")
        sizes[key] = int(value)
    info = describe(ferry.load(package), sizes)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    console = Console(soft_wrap=True)
    console.print(f"[bold]{info['name']}[/bold] version {info['version']}  ({info['path']})")
    sig = Table("", "name", "dtype", "shape", "description", title="signature")
    for side in ("inputs", "outputs"):
        for spec in info["signature"][side]:
            sig.add_row(side[:-1], spec["name"], spec["dtype"], str(spec["shape"]), spec.get("description", ""))
    console.print(sig)
    dims_note = ", ".join(f"{k}={v}" for k, v in info["flops_dims"].items()) or "dynamic dims = 1"
    console.print(
        f"nodes {info['nodes']}  parameters {_human(info['parameters'])}  "
        f"FLOPs ~{_human(info['flops_estimate'])} ({dims_note})  size {_human(info['total_bytes'], 'B')}"
    )
    ops = Table("op", "count", title="ops")
    for op, count in info["ops"].items():
        ops.add_row(op, str(count))
    console.print(ops)
    files = Table("file", "bytes", title="files")
    for name, size in info["files"].items():
        files.add_row(name, str(size))
    console.print(files)
    prov = info["provenance"]
    console.print(
        f"from {prov['framework']} {prov['framework_version']} by {prov['converter']} "
        f"(opset {prov['opset']}, {prov['created']})"
    )
    for step in prov.get("derived_from", []):
        details = ", ".join(f"{k} {v}" for k, v in step.items() if k not in ("step", "from", "at") and v)
        said = f"  then {step['step']} of {step.get('from', '?')} ({step.get('at', '')})"
        console.print(said + (f": {details}" if details else ""))
    if info["preprocessing"]:
        console.print("preprocessing: " + " -> ".join(s["op"] for s in info["preprocessing"]))
    if info["postprocessing"]:
        console.print("postprocessing: " + " -> ".join(s["op"] for s in info["postprocessing"]))
    if info["labels"]:
        console.print(f"labels: {len(info['labels'])} ({', '.join(info['labels'][:10])}...)")
    if info["compression"]:
        done = {k: v for k, v in info["compression"].items() if k not in ("report", "layers") and v not in (None, [])}
        console.print(f"compression: {json.dumps(done)}")
    if info["tuning"]:
        console.print(f"tuning: {json.dumps({k: v.get('fastest') for k, v in info['tuning'].items()})}")
