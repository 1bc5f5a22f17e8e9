"""The lite engine against ONNX Runtime and onnx's ReferenceEvaluator, the memory plan's effect on peak
resident memory, and the optimizer's effect in ONNX Runtime with ONNX Runtime's own optimisations off.

    python benchmarks/lite.py                     # all three models, batch 1 and 8
    python benchmarks/lite.py --models resnet18 --batches 1

Every engine gets 2 threads (ONNX Runtime intra-op threads; OpenBLAS threads for numpy, which the lite
engine and the reference evaluator use). Latency is the median of timed blocks, engines interleaved.
Peak memory is measured in a fresh subprocess per setting (ru_maxrss), running the exported .flite file.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")  # before numpy loads

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import models as bench_models  # noqa: E402

from ferry.exporters.lite import export_lite  # noqa: E402
from ferry.lite import load  # noqa: E402
from ferry.optimize import optimize_model  # noqa: E402

BUILDERS = {
    "resnet18": lambda r: bench_models.cnn(r, "resnet18"),
    "mobilenet_v2": lambda r: bench_models.cnn(r, "mobilenet_v2"),
    "bert": bench_models.small_bert,
}
# VmHWM (peak resident set) of this process alone: ru_maxrss would carry the parent's peak across exec.
MEMORY_PROBE = """
import os, sys
os.environ["OPENBLAS_NUM_THREADS"] = "2"
import numpy as np
from ferry.lite import load
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
model = load(sys.argv[1], memory=sys.argv[2])
feeds = dict(np.load(sys.argv[3]))
for array in model.graph.weights.values():
    array.sum()  # touch the memory-mapped weights, so that they count before the runs
before = status("VmRSS:")
for _ in range(3):
    model.run(feeds)
plan = model.plan_for(feeds)  # the arena's run only: what no plan for this step order can go below
print(before, status("VmHWM:"), plan.live_peak() if plan else 0)
"""


def ort_session(model_bytes: bytes, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def timed(fn, seconds: float, min_calls: int = 2) -> float:
    """Median ms per call over blocks of about `seconds`."""
    fn()
    samples = []
    deadline = time.perf_counter() + seconds
    while len(samples) < min_calls or time.perf_counter() < deadline:
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def peak_memory(flite: Path, feeds_file: Path, memory: str) -> tuple[float, float, float]:
    """MiB: resident after loading, peak over the runs, and (arena only) the most intermediates alive at once."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(flite), memory, str(feeds_file)],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]) / 1024, int(out[1]) / 1024, int(out[2]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seconds", type=float, default=6.0, help="per engine and setting")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per setting (the VM drifts)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from onnx.reference import ReferenceEvaluator

    rows = []
    for key in args.models.split(","):
        bm = BUILDERS[key](args.work)
        import ferry

        pkg = ferry.load(bm.package)
        original = pkg.full_model()
        optimized, applied = optimize_model(original)
        flite = args.work / f"{key}.flite"
        export_lite(bm.package, flite)
        lite = load(flite)
        ort_full = ort_session(original.SerializeToString())
        ort_plain = ort_session(original.SerializeToString(), optimize=False)
        ort_fused = ort_session(optimized.SerializeToString(), optimize=False)
        reference = ReferenceEvaluator(original)
        for batch in [int(b) for b in args.batches.split(",")]:
            feeds = bm.feeds(batch)
            want = ort_full.run(None, feeds)[0]
            got = lite.run(feeds)[lite.output_names[0]]
            err = float(np.abs(got - want).max())
            runners = {
                "ort": functools.partial(ort_full.run, None, feeds),
                "lite": functools.partial(lite.run, feeds),
                "ort_noopt": functools.partial(ort_plain.run, None, feeds),
                "ort_fused": functools.partial(ort_fused.run, None, feeds),
            }
            results: dict[str, list[float]] = {k: [] for k in runners}
            for _ in range(args.rounds):  # interleaved, so drift on this VM hits every engine alike
                for name, fn in runners.items():
                    results[name].append(timed(fn, args.seconds / args.rounds))
            try:
                ref_ms = timed(functools.partial(reference.run, None, feeds), 0.0, min_calls=2)
            except Exception as exc:  # noqa: BLE001  (the reference evaluator has bugs of its own)
                print(f"reference evaluator failed on {bm.name}: {type(exc).__name__}: {exc}", flush=True)
                ref_ms = float("nan")
            feeds_file = args.work / f"{key}-b{batch}.npz"
            np.savez(feeds_file, **feeds)
            mem = {m: peak_memory(flite, feeds_file, m) for m in ("arena", "keep", "free")}
            row = {"model": bm.name, "batch": batch, "max_abs_diff": err, "reference_ms": ref_ms,
                   "passes": applied.applied, **{k: statistics.median(v) for k, v in results.items()},
                   "memory": mem}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| model | batch | ONNX Runtime ms | lite ms | lite / ORT | reference ms | reference / lite | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio, ref = r["lite"] / r["ort"], r["reference_ms"] / r["lite"]
        print(f"| {r['model']} | {r['batch']} | {r['ort']:.2f} | {r['lite']:.2f} | {ratio:.2f}x | "
              f"{r['reference_ms']:.0f} | {ref:.0f}x | {r['max_abs_diff']:.1e} |")  # fmt: skip
    print()
    # The floor: resident after loading plus the intermediates alive at the busiest step. No plan goes below
    # it, so where it is above 0.6x of "keep" the memory target cannot be met by planning.
    print("| model | batch | peak RSS arena MiB | keep MiB | free MiB | arena / keep | growth arena / keep "
          "| floor MiB | floor / keep |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["memory"]
        growth = (m["arena"][1] - m["arena"][0]) / max(m["keep"][1] - m["keep"][0], 1e-9)
        floor, keep = m["arena"][0] + m["arena"][2], m["keep"][1]
        print(f"| {r['model']} | {r['batch']} | {m['arena'][1]:.0f} | {keep:.0f} | {m['free'][1]:.0f} | "
              f"{m['arena'][1] / keep:.2f}x | {growth:.2f}x | {floor:.0f} | {floor / keep:.2f}x |")  # fmt: skip
    print()
    print("| model | batch | ORT, its optimisations off: original ms | with ferry's passes ms | speed-up | passes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ort_noopt']:.2f} | {r['ort_fused']:.2f} | "
              f"{r['ort_noopt'] / r['ort_fused'] - 1:+.0%} | {', '.join(r['passes'])} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
