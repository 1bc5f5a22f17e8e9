"""The model zoo: real architectures from every source framework, converted and run on every backend.

    python benchmarks/zoo.py                       # all models; writes docs/zoo.md
    python benchmarks/zoo.py --only bert vit       # some
    python benchmarks/zoo.py --reports bert resnet18  # `ferry bench --html` reports into docs/zoo/

No downloads: random weights from configs (transformers, paddle.vision, keras.applications with
weights=None), estimators fitted here, and the ONNX files pip packages ship (PP-OCR's, from
rapidocr-onnxruntime); the models are in `zoo_models.py`. Each model is converted with its converter's
parity check against the source, then run on each backend: the cell is the largest difference from ONNX
Runtime's outputs and the median latency at batch 1, or the engine's reason for failing.
`tests/test_zoo.py` runs one model per source framework on every backend in CI.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

import ferry

sys.path.insert(0, str(Path(__file__).parent))
from zoo_models import ZOO, ZooModel  # noqa: E402 (the models, one module; this one runs them)
from zoo_web import WebRunner  # noqa: E402

BACKENDS = ("onnxruntime", "openvino", "lite", "ncnn", "mnn", "web")  # web: ferry.js on onnxruntime-web in chromium
TOLERANCE = 1e-3  # largest |difference| from ONNX Runtime that counts as the same answer


# Why the failures in the table are the engines' (or the machine's), not ferry's; printed under the table.
NOTES = [
    "scikit-learn's classic models become ONNX's `ai.onnx.ml` operators (LinearClassifier, TreeEnsemble*, "
    "SVMClassifier, ...). OpenVINO's ONNX frontend has none of them; the lite engine has none either (k-NN "
    "converts to plain tensor operators, so it runs there). ONNX Runtime runs them all: serve these models "
    "on `onnxruntime` (what `auto` picks for them).",
    "transformers' EfficientNet: OpenVINO 2026.4's ONNX frontend cannot convert its `AveragePool` (opset 17, "
    "ceil mode); ONNX Runtime and the lite engine run it.",
    "Text pipelines: skl2onnx lower-cases text with ONNX's StringNormalizer, whose default locale "
    "(`en_US.UTF-8`) ONNX Runtime cannot load on a machine without it (this one has C.UTF-8 only); ferry's "
    "converter writes a locale the machine has (`ferry.converters.sklearn.string_locale`). ONNX Runtime's "
    "tokenizer does not match scikit-learn's on non-ASCII words (`école`): the parity check catches it.",
    "web: the package exported with `ferry export web` and run by ferry.js on onnxruntime-web (wasm, "
    "2 threads, cross-origin isolated) in headless chromium; its latency is the page's own clock. "
    "onnxruntime-web's wasm build carries the `ai.onnx.ml` and string operators, so scikit-learn models run there.",
    "ncnn (through pnnx) and MNN are the device engines: each converts the package once (recorded in it), runs "
    "the result in a child process first, and is refused when it crashes or computes something else than "
    "ONNX Runtime (beyond 1e-2 + 1e-2 x |ONNX Runtime's|; beyond fp32's 1e-4 + 1e-3 x |x| it warns). pnnx "
    "leaves the attention-mask code of transformers' text exports (torch.where, logical_and, Tensor.to) as "
    "layers ncnn does not have; MNN runs them a little off; both run the vision transformers. ncnn converts "
    "a model with named dimensions at the first call's shapes (here: the batch-1 inputs of the table). ncnn "
    "crashed (SIGSEGV) on "
    "Keras' EfficientNet-B0: refused, not served. It gives NaN on transformers' EfficientNet for the table's "
    "inputs while the check's made-up inputs came out right: a check on made-up inputs is not a proof. MNN is "
    "1.2-1.6e-3 off on the random-weight Paddle CNNs (its Winograd convolutions) and 3-7e-3 on the "
    "transformers text models' masked attention: served with a warning.",
    "Parity is against the source framework (torch, Paddle Inference, scikit-learn, Keras on torch, "
    "TensorFlow, or ONNX Runtime on the original file); random-weight CNNs from paddle.vision give tiny outputs, hence "
    "differences like 1e-22.",
]


# --- running ---------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """The error in one line, without the temporary path: engines put the reason on later lines (OpenVINO's
    first lines are source positions; its reason follows "Summary:")."""
    text = str(exc)
    if "Summary:" in text:
        text = "OpenVINO: " + text.split("Summary:", 1)[1]
    text = " ".join(f"{type(exc).__name__}: {text}".split())
    text = re.sub(r"/\S*/model\.onnx: ", "", text)
    return text if len(text) <= 240 else text[:237] + "..."


def _feeds_dims(package: Any, dims: dict[str, int]) -> dict[str, int]:
    sizes = {"batch": 1, **dims}
    for spec in package.signature.inputs:  # image models with free height and width get 64x64
        for axis, d in enumerate(spec.shape):
            if isinstance(d, str) and d not in sizes and axis >= 2:
                sizes[d] = 64 if len(spec.shape) == 4 else 16
    return sizes


def _feeds(package: Any, dims: dict[str, int]) -> dict[str, np.ndarray]:
    from ferry.converters.parity import random_feeds

    return random_feeds(package.signature, batch=1, dims=_feeds_dims(package, dims))


def run_model(
    zm: ZooModel, root: Path, backends: tuple[str, ...] = BACKENDS, runs: int = 5, web: WebRunner | None = None
) -> dict[str, Any]:
    """Convert, then run on each backend: {"parity": ..., backend: {"diff", "ms"} or {"error"}}. The web
    backend needs `web`, an open WebRunner (one browser for many models)."""
    row: dict[str, Any] = {"name": zm.name, "source": zm.source}
    try:
        built = zm.build(root)
    except Exception as exc:  # noqa: BLE001 (the cell says what failed)
        row["convert_error"] = _first_line(exc)
        row["trace"] = traceback.format_exc(limit=3)
        return row
    package = built.package
    row["parity"] = built.parity.max_abs if built.parity else None
    from ferry.stats import parameter_count

    row["params"] = parameter_count(package.full_model())
    feeds = _feeds(package, zm.dims)
    reference = None
    for backend in backends:
        try:
            out, times = (
                web.run(package, feeds, runs) if backend == "web" else _run_local(package, backend, feeds, runs)
            )
            if reference is None:
                reference = out
            diff = max(_difference(out[k], reference[k]) for k in reference)
            row[backend] = {"diff": diff, "ms": statistics.median(times)}
        except Exception as exc:  # noqa: BLE001
            row[backend] = {"error": _first_line(exc)}
    return row


def _run_local(package: Any, backend: str, feeds: dict[str, np.ndarray], runs: int) -> tuple[dict, list[float]]:
    config = ferry.Config(package)
    config.set_backend(backend)
    config.set_cpu_threads(2)
    predictor = ferry.create_predictor(config)
    out = predictor.predict(feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        predictor.predict(feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return out, times


def _difference(got: Any, want: Any) -> float:
    """Largest |got - want| for numbers; 0 or inf for strings (equal or not)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    if want.dtype.kind not in "fiub":
        return 0.0 if (got.astype(str) == want.astype(str)).all() else float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0))


def _cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"fails: {result['error'].replace('|', '/')}"
    mark = "" if result["diff"] <= TOLERANCE else " (over 1e-3)"
    return f"{result['diff']:.1e}{mark}, {result['ms']:.2f} ms"


def write_table(rows: list[dict[str, Any]], path: Path, command: str) -> None:
    ok = sum(all("error" not in r.get(b, {"error": 1}) for b in BACKENDS) for r in rows if "convert_error" not in r)
    lines = [
        "# The model zoo",
        "",
        f"`{command}` on {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}. Random weights (no downloads); each",
        "model converted with its converter's parity check against the source framework, then run at batch 1",
        "with 2 threads on each backend. A cell: the largest |difference| from ONNX Runtime's outputs, and the",
        "median of 5 runs; or the engine's error. See `benchmarks/zoo.py`.",
        "",
        f"{len(rows)} models; {ok} convert and run on every backend.",
        "",
        "| model | from | parameters | parity vs source | " + " | ".join(BACKENDS) + " |",
        "|---|---|---|---|" + "---|" * len(BACKENDS),
    ]
    for r in rows:
        if "convert_error" in r:
            lines.append(f"| {r['name']} | {r['source']} | | conversion fails: {r['convert_error'].replace('|', '/')} |"
                         + " |" * len(BACKENDS))  # fmt: skip
            continue
        parity = "not checked" if r["parity"] is None else f"{r['parity']:.1e}"
        cells = " | ".join(_cell(r[b]) for b in BACKENDS)
        lines.append(f"| {r['name']} | {r['source']} | {r['params']:,} | {parity} | {cells} |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in NOTES]
    reports = sorted((path.parent / "zoo").glob("*.html"))
    if reports:
        how = ("`python benchmarks/zoo.py --reports NAME...` writes `ferry bench --html` for a model (ONNX Runtime "
               "and OpenVINO, batch 1, 8 and 32, 2 threads):")  # fmt: skip
        lines += ["", "## Reports", "", how, ""]
        lines += [f"- [{p.stem}](zoo/{p.name})" for p in reports]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_reports(names: list[str], folder: Path) -> None:
    """`ferry bench --html` for each model: onnxruntime and openvino, batch 1, 8 and 32, 2 threads."""
    from ferry.bench import html_report, measure

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            zm = next(z for z in ZOO if z.name == name)
            package = zm.build(Path(d)).package
            dims = {k: v for k, v in _feeds_dims(package, zm.dims).items() if k != "batch"}
            runs = [measure(package, b, n, 2, min_seconds=0.5, dims=dims) for b in ("onnxruntime", "openvino")
                    for n in (1, 8, 32)]  # fmt: skip
            path = folder / f"{name}.html"
            path.write_text(html_report(f"ferry bench: {name} (zoo)", runs), encoding="utf-8")
            print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("docs/zoo.md"))
    parser.add_argument("--reports", nargs="*", default=[], metavar="NAME",
                        help="Also write `ferry bench --html` reports of these models into docs/zoo/.")  # fmt: skip
    args = parser.parse_args()
    if args.reports:
        write_reports(args.reports, args.out.parent / "zoo")
        return
    chosen = [z for z in ZOO if not args.only or z.name in args.only]
    rows = []
    with tempfile.TemporaryDirectory() as d, WebRunner() as web:
        for zm in chosen:
            t = time.perf_counter()
            row = run_model(zm, Path(d), web=web)
            rows.append(row)
            status = row.get("convert_error") or "; ".join(f"{b}: {_cell(row[b])}" for b in BACKENDS)
            print(f"{zm.name:28} {time.perf_counter() - t:6.1f} s  {status}", flush=True)
    command = "python benchmarks/zoo.py" + (f" --only {' '.join(args.only)}" if args.only else "")
    write_table(rows, args.out, command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
