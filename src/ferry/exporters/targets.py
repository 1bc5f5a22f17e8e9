"""`ferry export lite --target ncnn|mnn|ort|numpy`: a package in the format a device engine loads, checked.

Each target writes a folder with the engine's own files (ncnn `.param` + `.bin`, MNN `.mnn`, ONNX
Runtime's `.ort` and `required_operators.config` for a reduced-size build) and `engine.json` (which name
each input and output has in those files, the shapes it was converted at, the converter). The result is
then run here from the written files alone, through the engine's Python binding, and compared with the
package on ONNX Runtime. `numpy` is ferry's own `.flite` (see `exporters/lite.py`). When a target cannot
take the model, the error names the op and says which targets can.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.compress.data import Dataset, load_dataset
from ferry.compress.metrics import cosine
from ferry.converters.parity import ParityReport
from ferry.errors import ConversionError, ParityError
from ferry.exporters import engine_check
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage, load
from ferry.package.package import swap_in

TARGETS = ("ncnn", "mnn", "ort", "numpy")
RECORD = "engine.json"
CHECKED_SAMPLES = 16  # int8 with calibration data: parity measured on its first samples
# int8 without evaluation data: below this mean cosine similarity to the package (first output, on the
# calibration samples) the export is refused. Measured (made-up inputs): ncnn 0.9993 on ResNet-18, 0.9998
# on MobileNetV2, 0.95 on PP-OCRv4 rec fed noise; MNN 0.9997 on MobileNetV2 but 0.74 on ResNet-18, whose
# top-1 then agreed with the package on none of 16 samples (MNN's int8 3x3 convolutions; alibaba/MNN#2614).
INT8_COSINE = 0.9


@dataclass
class Accuracy:
    """A metric of the package (ONNX Runtime) and of the written files, on the same evaluation data."""

    metric: str
    count: int
    package: float
    export: float

    @property
    def drop(self) -> float:
        """In points (0.5 = half a percent)."""
        return (self.package - self.export) * 100

    def __str__(self) -> str:
        return (f"{self.metric} on {self.count} samples: package {self.package:.4f}, written files "
                f"{self.export:.4f} (drop {self.drop:.2f} points)")  # fmt: skip


@dataclass
class DeviceExport:
    path: Path
    target: str
    model: EngineModel
    sizes: dict[str, int]  # file name -> bytes
    onnx_bytes: int
    parity: ParityReport
    exact: bool  # within fp32's 1e-4 + 1e-3 x |x| of the package on ONNX Runtime
    operators: list[str] = field(default_factory=list)  # ort: what the reduced build must include
    checked_on: str = "made-up inputs"
    cosine: float | None = None  # int8: mean cosine similarity to the package on the calibration samples
    accuracy: Accuracy | None = None

    def summary(self) -> str:
        lines = [f"wrote {self.path} for {self.target} ({self.model.converter})"]
        width = max(len(name) for name in self.sizes)
        lines += [f"  {name:<{width}}  {size:>12,} bytes" for name, size in self.sizes.items()]
        lines.append(f"  {'(package ONNX)':<{width}}  {self.onnx_bytes:>12,} bytes")
        ins = ", ".join(f"{k} -> {v}" for k, v in self.model.inputs.items())
        outs = ", ".join(f"{k} -> {v}" for k, v in self.model.outputs.items())
        lines.append(f"names in the engine: inputs {ins}; outputs {outs}")
        if self.model.shapes:
            lines.append("converted at " + ", ".join(f"{k} {v}" for k, v in self.model.shapes.items()))
        int8 = self.model.options.get("int8")
        if int8:
            layers = f"{int8['layers']} layers, " if "layers" in int8 else ""
            lines.append(f"int8 weights and activations: {layers}{int8['calibration'].upper()} calibration on "
                         f"{int8['samples']} samples")  # fmt: skip
        if self.target == "mnn":
            lines.append("checked with MNN's Winograd convolutions off; its default runtime uses them for 3x3 "
                         "convolutions (1.6e-3 off on a ResNet-18): for fp32 parity on the device, set the "
                         "WINOGRAD_MEMORY_LEVEL hint to 0")  # fmt: skip
        if self.operators:
            lines.append(f"{len(self.operators)} operators for a reduced ORT build: {', '.join(self.operators)}")
        lines.append(f"run from the written files, on {self.checked_on}: {self.parity}")
        if self.cosine is not None:
            lines.append(f"  cosine similarity to the package: {self.cosine:.4f}")
        if not self.exact:
            reduced = [p for p in ("fp16", "int8", "int8_weights") if self.model.options.get(p)]
            why = f"expected at {'/'.join(reduced)}" if reduced else "the engine's arithmetic differs"
            check = "" if self.accuracy else "; check accuracy on your data (--eval)"
            lines.append(f"  beyond fp32's bound (1e-4 + 1e-3 x |x|): {why}{check}")
        if self.accuracy:
            lines.append(f"accuracy, {self.accuracy}")
        return "\n".join(lines)


def export_target(
    package: str | Path | ModelPackage,
    out: str | Path,
    target: str,
    *,
    fp16: bool = False,
    int8: bool = False,
    calib: Any = None,
    calib_size: int = 128,
    eval_data: Any = None,
    metric: str | None = None,
    max_drop: float | None = None,
    shapes: dict[str, list[int]] | None = None,
    threads: int = 2,
    progress: bool = False,
) -> DeviceExport:
    """Write `package` for `target` into the folder `out` (replacing one there), run it, compare.

    `int8` with `calib` (what `ferry quantize` takes: .npz, .jsonl, an image folder, a data reader):
    weights and activations in int8, calibrated on the first `calib_size` samples by the engine's method
    (ncnn: KL, MNN: EMA), and parity measured on those samples; `int8` alone: MNN's int8 weights.
    `eval_data`: `metric` (top1 with labels, else agreement with the package) of the written files and of
    the package; with `max_drop` (points), a larger drop is an error and nothing is written."""
    if target not in TARGETS[:3]:
        raise ConversionError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    pkg = package if isinstance(package, ModelPackage) else load(package)
    _check_options(target, fp16, int8, calib is not None)
    if max_drop is not None and eval_data is None:
        raise ConversionError("the accuracy guard (max drop) needs evaluation data: --eval DATA")
    data = load_dataset(calib, pkg, limit=calib_size) if calib is not None else None
    evaluation = load_dataset(eval_data, pkg) if eval_data is not None else None
    if evaluation is not None:  # said before converting, not after
        metric = _metric(metric, evaluation)
    if target == "ncnn" and data is not None and not shapes:  # converted at the samples' shapes
        shapes = {n: [1, *a.shape[1:]] for n, a in data.inputs.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            model = _convert(pkg, staging, target, fp16, int8 and data is None, shapes)
        except ConversionError as exc:
            others = [t for t in TARGETS if t != target and takes(pkg, t, shapes)]
            raise ConversionError(f"{exc}. Targets that take {pkg.name!r}: {', '.join(others) or 'none'}") from None
        feeds = None
        if data is not None:
            _quantize(staging, model, data, threads, progress)
            feeds = {n: a[:CHECKED_SAMPLES] for n, a in data.inputs.items()}
        (staging / RECORD).write_text(json.dumps({"signature": pkg.signature.to_dict(), **model.to_dict()}, indent=2))
        # fp16/int8: the difference is reported only; at fp32, beyond REFUSE is an error
        bounds = (float("inf"), float("inf")) if (fp16 or int8) else engine_check.REFUSE
        # MNN without Winograd: the check measures the conversion, not the device's choice of algorithm
        want, got = engine_check.outputs(pkg, staging, model, feeds, winograd=False)
        try:
            parity, exact = engine_check.judge(pkg, want, got, *bounds)
        except ParityError as exc:
            raise ConversionError(
                f"{target} runs the written files, but computes something else than the package on ONNX "
                f"Runtime (beyond atol {bounds[0]:g}, rtol {bounds[1]:g}): {'; '.join(exc.failures)}"
            ) from None
        similarity = None
        if data is not None:
            first = pkg.signature.output_names[0]
            similarity = cosine(got[first], want[first])
            if similarity < INT8_COSINE and evaluation is None:
                raise ConversionError(
                    f"{target}'s int8 computes something else than the package: cosine similarity "
                    f"{similarity:.3f} to it on {len(got[first])} calibration samples (below {INT8_COSINE}). "
                    "Judge by accuracy instead with --eval DATA --max-drop POINTS, or try another target"
                )
        accuracy = None
        if evaluation is not None:
            accuracy = _accuracy(pkg, staging, model, evaluation, metric)
            if max_drop is not None and accuracy.drop > max_drop:
                raise ConversionError(f"{target}: accuracy drops more than {max_drop:g} points: {accuracy}")
        operators = []
        if target == "ort":
            from ferry.exporters import ort_format

            operators = ort_format.operators(staging / ort_format.OPERATORS)
        sizes = {f.name: f.stat().st_size for f in sorted(staging.iterdir())}
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    onnx_bytes = sum(f.stat().st_size for f in pkg.model_path.parent.iterdir() if f.is_file() and f.suffix != ".json")
    checked = f"{len(next(iter(feeds.values())))} calibration samples" if feeds else "made-up inputs"
    return DeviceExport(out, target, model, sizes, onnx_bytes, parity, exact, operators, checked, similarity,
                        accuracy)  # fmt: skip


def takes(package: ModelPackage, target: str, shapes: dict[str, list[int]] | None = None) -> bool:
    """Whether `target` takes the model: converts it and computes the same outputs (in a scratch folder,
    then dropped)."""
    with tempfile.TemporaryDirectory(prefix="ferry-try-") as tmp:
        try:
            if target == "numpy":
                from ferry.exporters.lite import export_lite

                export_lite(package.root or package.model_path, Path(tmp) / "m.flite", optimize=False)
            else:
                model = _convert(package, Path(tmp), target, False, False, shapes)
                engine_check.check(package, Path(tmp), model, *engine_check.REFUSE)
        except Exception:  # noqa: BLE001 (any failure means: not this target)
            return False
    return True


def _metric(metric: str | None, data: Dataset) -> str:
    """The metric to score evaluation data with: top1 where it has labels, else agreement."""
    from ferry.compress import metrics

    metric = metric or ("top1" if data.labels is not None else "agreement")
    if metric not in metrics.METRICS:
        raise ConversionError(f"unknown metric {metric!r}; choose one of {', '.join(metrics.METRICS)}")
    if metric in metrics.NEEDS_LABELS and data.labels is None:
        raise ConversionError(f"metric {metric!r} needs labels, and the evaluation data has none")
    return metric


def _accuracy(pkg: ModelPackage, folder: Path, model: EngineModel, data: Dataset, metric: str) -> Accuracy:
    from ferry.compress import metrics

    want, got = engine_check.outputs(pkg, folder, model, data.inputs, winograd=False)
    first = pkg.signature.output_names[0]
    args = (data.labels, want[first], pkg.manifest.labels)
    before, after = metrics.score(metric, want[first], *args), metrics.score(metric, got[first], *args)
    return Accuracy(metric, data.count, before, after)


def _check_options(target: str, fp16: bool, int8: bool, calib: bool) -> None:
    if calib and not int8:
        raise ConversionError("calibration data is for int8: add --int8")
    if target == "ncnn" and int8 and not calib:
        raise ConversionError(
            "ncnn's int8 runs activations in int8 too, so it needs calibration data: --calib DATA (.npz, "
            ".jsonl, or an image folder, as `ferry quantize` takes)"
        )
    if target == "ort" and (fp16 or int8):
        raise ConversionError("the ort target keeps the package's precision: run `ferry quantize` or "
                              "`ferry convert-precision` on the package first")  # fmt: skip


def _quantize(folder: Path, model: EngineModel, data: Dataset, threads: int, progress: bool) -> None:
    """Turn the float files in `folder` into the engine's int8 ones, calibrated on `data`; recorded in
    `model.options`."""
    if model.engine == "ncnn":
        from ferry.exporters import ncnn, ncnn_int8

        samples = [{n: a[i] for n, a in data.inputs.items()} for i in range(data.count)]
        for name, value in samples[0].items():
            if list(value.shape) != model.shapes[name][1:]:
                raise ConversionError(
                    f"calibration samples of {name!r} are {list(value.shape)}, ncnn converted the model at "
                    f"{model.shapes[name][1:]} (give --shape {name}=1x...)"
                )
        layers = ncnn_int8.quantize_files(folder / ncnn.PARAM, folder / ncnn.BIN, model.inputs, samples, threads,
                                          progress)  # fmt: skip
        model.options.update(int8={"calibration": "kl", "samples": data.count, "layers": layers})
    else:
        from ferry.exporters import mnn

        mnn.quantize(folder / mnn.MODEL, [{n: a[i : i + 1] for n, a in data.inputs.items()} for i in range(data.count)])
        model.options.update(int8={"calibration": "ema", "samples": data.count})


def _convert(pkg: ModelPackage, out: Path, target: str, fp16: bool, int8: bool, shapes: Any) -> EngineModel:
    if target == "ncnn":
        from ferry.exporters import ncnn

        return ncnn.convert(pkg, out, fp16=fp16, shapes=shapes)
    if target == "mnn":
        from ferry.exporters import mnn

        return mnn.convert(pkg, out, fp16=fp16, int8_weights=int8)
    from ferry.exporters import ort_format

    return ort_format.convert(pkg, out)
