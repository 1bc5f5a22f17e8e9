"""Run an engine's converted files, alone, on made-up inputs and compare with the package on ONNX Runtime,
in a child process: `check(package, folder, model)`.

A converted model can crash its engine outright (ncnn 1.0.20261020 segfaulted on a Keras EfficientNet-B0
that pnnx converted without a word), which would take the caller's process with it; so the first run
happens in a child (`python -m ferry.exporters.engine_check`), and a crash becomes a ConversionError.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ferry.converters.parity import ParityReport, compare, random_feeds
from ferry.errors import ConversionError, ParityError
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage, load

# atol, rtol (|diff| <= atol + rtol * |ONNX Runtime's|). PARITY is fp32's target: an export reports
# whether it holds, and a backend logs a warning when it does not (MNN, Winograd convolutions, was 1.6e-3
# off on a random-weight ResNet-18). REFUSE is where an engine computes something else: NaN (ncnn on
# transformers' EfficientNet, on some inputs) or MNN's 0.06 on BERT's hidden states, and the conversion
# is refused. Made-up inputs catch what they catch: ncnn's NaN came on the zoo's inputs and not on these.
PARITY = (1e-4, 1e-3)
REFUSE = (1e-2, 1e-2)
CHUNK = 32  # samples an engine runs at once when checked on given data
MADE_UP_SIZE = 64  # named dimensions past the batch axis (an image's height and width): PP-OCR's
# detector, which downsamples by 32, runs at 64 and not at 8.


def check(
    package: ModelPackage,
    folder: Path,
    model: EngineModel,
    atol: float,
    rtol: float,
    feeds: dict[str, np.ndarray] | None = None,
) -> tuple[ParityReport, bool]:
    """The parity report of the files in `folder` against the package, on `feeds` (made-up inputs when
    None), and whether it holds PARITY; a ParityError beyond atol/rtol, a ConversionError when the engine
    fails or crashes."""
    return judge(package, *outputs(package, folder, model, feeds), atol, rtol)


def judge(
    package: ModelPackage, want: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float, rtol: float
) -> tuple[ParityReport, bool]:
    """`check` on outputs already computed."""
    names = package.signature.output_names
    want_list, got_list = [want[n] for n in names], [got[n] for n in names]
    try:
        return compare(package.name, names, want_list, got_list, *PARITY), True
    except ParityError as exc:
        if exc.report is None:  # outputs of another count or shape: nothing to measure
            raise
        report = exc.report  # measured against PARITY's bounds: the relative difference above its atol
    compare(package.name, names, want_list, got_list, atol=atol, rtol=rtol)
    return report, False


def outputs(
    package: ModelPackage,
    folder: Path,
    model: EngineModel,
    feeds: dict[str, np.ndarray] | None = None,
    winograd: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`run` in a child process: (the package's outputs on ONNX Runtime, the engine's); a ConversionError
    when the engine fails or crashes. `winograd=False`: MNN without its Winograd convolutions."""
    where = str(package.root or package.model_path)
    with tempfile.TemporaryDirectory(prefix="ferry-check-") as tmp:
        result = Path(tmp) / "outputs.npz"
        command = [sys.executable, "-m", "ferry.exporters.engine_check", where, str(folder), str(result)]
        if feeds is not None:
            np.savez(Path(tmp) / "feeds.npz", **feeds)
            command.append(str(Path(tmp) / "feeds.npz"))
        given = json.dumps({"model": model.to_dict(), "winograd": winograd})
        done = subprocess.run(command, input=given, capture_output=True, text=True)
        if done.returncode == 0:
            with np.load(result, allow_pickle=False) as data:
                arrays = dict(data)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ConversionError(f"{model.engine} crashed ({name}) running {package.name!r} as converted")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ConversionError(
            f"{model.engine} could not run {package.name!r} as converted: {lines[-1] if lines else ''}"
        )
    names = package.signature.output_names
    return {n: arrays[f"want/{n}"] for n in names}, {n: arrays[f"got/{n}"] for n in names}


def run(
    package: ModelPackage,
    folder: Path,
    model: EngineModel,
    threads: int = 2,
    feeds: dict | None = None,
    winograd: bool = True,
) -> tuple[dict, dict]:
    """(the package's outputs on ONNX Runtime, the engine's) on the same inputs: `feeds` (in chunks of
    CHUNK samples), or made up."""
    if feeds is None:
        dims = dict.fromkeys(package.signature.named_inner_dims, MADE_UP_SIZE)
        for spec in package.signature.inputs:  # ncnn: the shapes it was converted at
            fixed = model.shapes.get(spec.name, [])
            dims.update({d: fixed[axis] for axis, d in enumerate(spec.shape) if isinstance(d, str) and fixed})
        feeds = random_feeds(package.signature, batch=1, dims=dims)
    names = package.signature.output_names
    import onnxruntime as ort

    # The reference is the package's own graph on plain ONNX Runtime (not a predictor, which would ask for
    # the engine files being checked here when the engine is ORT's fused graph).
    reference = ort.InferenceSession(str(package.model_path), providers=["CPUExecutionProvider"])
    engine = _session(package, folder, model, threads, winograd)
    count = len(next(iter(feeds.values())))
    want: dict[str, list] = {n: [] for n in names}
    got: dict[str, list] = {n: [] for n in names}
    for start in range(0, count, CHUNK):
        chunk = {k: v[start : start + CHUNK] for k, v in feeds.items()}
        for n, a, b in zip(names, reference.run(names, chunk), engine(chunk, names)):
            want[n].append(a)
            got[n].append(np.asarray(b))
    return {n: np.concatenate(want[n]) for n in names}, {n: np.concatenate(got[n]) for n in names}


def _session(package: ModelPackage, folder: Path, model: EngineModel, threads: int, winograd: bool) -> Callable:
    """The engine's run(feeds, output names) over the files in `folder` alone."""
    if model.engine == "ncnn":
        from ferry.inference.backends.ncnn import open_session

        shapes = {s.name: tuple(s.shape[1:]) for s in package.signature.outputs}
        return open_session(folder, model, shapes, threads, "fp32").run
    if model.engine == "mnn":
        from ferry.inference.backends.mnn import MnnSession

        settings = {"backend": "CPU", "numThread": threads, "precision": "high"}
        dtypes = {s.name: s.dtype for s in package.signature.outputs}
        return MnnSession(folder / model.files[0], model, settings, False, dtypes, winograd).run
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / model.files[0]), providers=["CPUExecutionProvider"])
    return lambda feeds, names: session.run(names, feeds)


def main() -> None:
    where, folder, result = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    given = json.loads(sys.stdin.read())
    model = EngineModel.from_dict(given["model"])
    feeds = None
    if len(sys.argv) > 4:
        with np.load(sys.argv[4], allow_pickle=False) as data:
            feeds = dict(data)
    want, got = run(load(where), folder, model, feeds=feeds, winograd=given["winograd"])
    arrays = {f"want/{k}": v for k, v in want.items()} | {f"got/{k}": np.asarray(v) for k, v in got.items()}
    np.savez(result, **arrays)


if __name__ == "__main__":
    main()
