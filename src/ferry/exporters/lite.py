"""Package -> the lite engine's compact file (`.flite`), or a folder that runs with numpy alone. Runs on the
build machine, with onnx; the graph translation is `onnx_to_lite.py`."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferry.converters.parity import random_feeds
from ferry.exporters.onnx_to_lite import from_onnx
from ferry.lite.engine import Engine, shape_key
from ferry.lite.errors import UnsupportedOpError
from ferry.lite.format import save
from ferry.lite.planner import Plan
from ferry.package.package import swap_in

# --- export: package -> .flite (and a folder that runs with numpy alone) ------------------------------------


@dataclass
class LiteExport:
    path: Path
    bytes: int
    onnx_bytes: int
    int8: bool
    ops: dict[str, int]
    plan: Plan | None
    bundle: Path | None = None
    optimized: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # the bundle's example inputs, by input name

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} ({self.bytes / 2**20:.2f} MiB; the ONNX weights were {self.onnx_bytes / 2**20:.2f} MiB"
            + (", weights stored as per-channel int8: smaller, not faster)" if self.int8 else ")"),
            f"{sum(self.ops.values())} nodes, {len(self.ops)} op types",
        ]
        if self.optimized:
            lines.append("optimizer: " + ", ".join(self.optimized))
        if self.plan is not None:
            lines.append("memory plan: " + self.plan.summary())
        if self.bundle is not None:
            lines.append(f"bundle: {self.bundle} (run: cd {self.bundle} && {run_line(self.inputs, repeat=10)})")
        return "\n".join(lines)


def export_lite(
    package: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    bundle: bool = False,
    optimize: bool = True,
    batch: int = 1,
) -> LiteExport:
    """Write `package` as a compact lite model at `out` (a .flite file, or with `bundle` a folder holding the
    model and the runtime). Unsupported ops are refused here, all listed, before anything is written."""
    from ferry.errors import UnsupportedModelError
    from ferry.package import load

    pkg = load(package)
    model = pkg.full_model()
    passes: list[str] = []
    if optimize:
        from ferry.optimize import optimize_model

        model, report = optimize_model(model)
        passes = report.applied
    graph = from_onnx(model)
    graph.name = pkg.name
    try:
        engine = Engine(graph)
    except UnsupportedOpError as exc:
        raise UnsupportedModelError(f"model {pkg.name!r} cannot run on the lite engine: {exc}") from None
    feeds = random_feeds(pkg.signature, batch=batch)
    engine.run(feeds)  # the first run records tensor sizes and makes the memory plan
    plan = engine.plan_for(feeds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plans = {shape_key(feeds): plan} if plan else None
    if bundle:
        # The folder is built aside and moved in whole; a file is written whole by lite.format.save.
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            save(graph, staging / "model.flite", plans=plans, int8_min_elements=1024 if int8 else None)
            _copy_runtime(staging, feeds)
            swap_in(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        target = out / "model.flite"
    else:
        target = out
        save(graph, target, plans=plans, int8_min_elements=1024 if int8 else None)
    ops: dict[str, int] = {}
    for node in graph.nodes:
        ops[node.op] = ops.get(node.op, 0) + 1
    onnx_bytes = sum(a.nbytes for a in graph.weights.values())
    inputs = sorted(feeds) if bundle else []
    return LiteExport(
        target, target.stat().st_size, onnx_bytes, int8, ops, plan, out if bundle else None, passes, inputs
    )


def _copy_runtime(folder: Path, feeds: dict[str, np.ndarray]) -> None:
    """The lite runtime as a top-level package `ferry_lite` beside the model (numpy is all it needs), and
    the inputs the export ran with, so that the bundle's run line works as pasted."""
    import ferry.lite

    source = Path(ferry.lite.__file__).parent
    shutil.copytree(source, folder / "ferry_lite", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "example_inputs").mkdir()
    for name, array in feeds.items():
        np.save(folder / "example_inputs" / f"{_file_name(name)}.npy", array)
    (folder / "README.txt").write_text(
        "A ferry lite model and its runtime. Needs Python 3.10+ and numpy, nothing else.\n\n"
        f"    {run_line(sorted(feeds), output=True)}\n"
        "    python -c \"import ferry_lite; m = ferry_lite.load('model.flite'); print(m.input_names)\"\n",
        encoding="utf-8",
    )


def _file_name(input_name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in input_name)


def run_line(inputs: list[str], output: bool = False, repeat: int = 0) -> str:
    """The command that runs a bundle on its example inputs, from inside the bundle's folder."""
    parts = ["python -m ferry_lite model.flite"]
    parts += [f"--input {name}=example_inputs/{_file_name(name)}.npy" for name in inputs]
    if output:
        parts.append("--output out.npz")
    if repeat:
        parts.append(f"--repeat {repeat}")
    return " ".join(parts)
