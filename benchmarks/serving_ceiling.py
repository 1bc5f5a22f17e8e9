"""Served images/s with dynamic batching against the engine's offline ceiling, on the ResNet-18-like CNN.

    python benchmarks/serving_ceiling.py --seconds 15

Offline: ferry's ONNX Runtime predictor on the same package, at each batch size, as one stream with
2 engine threads and as 2 streams of 1 thread each (two model instances). The best of these is the
ceiling. Served: `ferry serve` receives binary OIP requests of one image each from `wrk -c64`; each
server setting is one row, with its images/s as a fraction of the ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import models as bench_models  # noqa: E402
from serving import run_wrk, start, stop, wait_ready  # noqa: E402

import ferry  # noqa: E402

BINARY_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "{header_length}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""
SETTINGS = {
    "1 instance x 2 threads, batch 8": ["--threads", "2", "--max-batch-size", "8", "--batch-delay-ms", "5"],
    "2 instances x 1 thread, batch 8": ["--threads", "1", "--instances", "2", "--max-batch-size", "8",
                                        "--batch-delay-ms", "5"],
    "2 instances x 1 thread, batch 16": ["--threads", "1", "--instances", "2", "--max-batch-size", "16",
                                         "--batch-delay-ms", "10"],
    "2 instances x 1 thread, batch 32": ["--threads", "1", "--instances", "2", "--max-batch-size", "32",
                                         "--batch-delay-ms", "20"],
}  # fmt: skip


def offline(pkg: Path, batch: int, streams: int, threads: int, seconds: float) -> float:
    """Images/s of `streams` threads each calling one shared predictor (clones share the engine session)."""
    config = ferry.Config(pkg)
    config.set_backend("onnxruntime")
    config.set_cpu_threads(threads)
    first = ferry.create_predictor(config)
    predictors = [first] + [first.clone() for _ in range(streams - 1)]
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    for p in predictors:
        p.predict({"x": x})
    counts = [0] * streams
    stop_at = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop_at:
            predictors[i].predict({"x": x})
            counts[i] += batch

    started = time.monotonic()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - started)


def binary_body(work: Path, output: str) -> Path:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3, 224, 224], "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": output, "parameters": {"binary_data": True}}]}
    ).encode()  # fmt: skip
    (work / "image.bin").write_bytes(header + x.tobytes())
    lua = work / "image.lua"
    lua.write_text(BINARY_LUA.format(header_length=len(header), body=work / "image.bin"))
    return lua


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    parser.add_argument("--paired", type=int, default=0, help="then this many back-to-back offline/served rounds")
    parser.add_argument("--skip-table", action="store_true", help="only the paired rounds")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pkg = bench_models.cnn(args.work, "resnet18").package
    package = ferry.load(pkg)
    output, name = package.signature.outputs[0].name, package.name
    lua = binary_body(args.work, output)

    if args.skip_table:
        paired(pkg, name, lua, args)
        return
    print("offline (images/s)")
    ceiling = 0.0
    for streams, threads in ((1, 2), (2, 1)):
        cells = []
        for batch in (1, 8, 16, 32):
            rate = offline(pkg, batch, streams, threads, seconds=max(3.0, args.seconds / 3))
            ceiling = max(ceiling, rate)
            cells.append(f"b{batch} {rate:6.1f}")
        print(f"  {streams} stream(s) x {threads} thread(s): " + "  ".join(cells))
    print(f"  ceiling: {ceiling:.1f} images/s\n")

    print(f"served, wrk -c{args.connections}, {args.seconds} s, one image per request")
    print("| server settings | images/s (steady) | of the ceiling | wrk's own req/s | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for label, flags in SETTINGS.items():
        r = serve_rate(pkg, name, lua, flags, args.connections, args.seconds)
        print(
            f"| {label} | {r['rps']:.1f} | {r['rps'] / ceiling:.2f}x | {r['wrk_rps']:.1f} | {r['p99']:.0f} "
            f"| {r['errors']:.0f} |"
        )

    if args.paired:
        paired(pkg, name, lua, args)


def serve_rate(pkg: Path, name: str, lua: Path, flags: list[str], connections: int, seconds: int) -> dict:
    """Steady-state images/s: the server's count of answered requests between two scrapes taken while
    one wrk run keeps the load on. A wrk run's own req/s also counts its first batches, which wait out
    the batch delay and a whole run (0.7 s here) before anything comes back, and the batches the
    previous run left behind; both are reported."""
    port = 8310
    cmd = [sys.executable, "-m", "ferry", "serve", str(pkg), "--backend", "onnxruntime", "--grpc-port", "0",
           "--http-port", str(port), *flags]  # fmt: skip
    proc = start(cmd)
    base = f"http://127.0.0.1:{port}"
    warm = 5
    try:
        wait_ready(f"{base}/v2/health/ready")
        result: dict = {}
        url = f"{base}/v2/models/{name}/infer"
        load = threading.Thread(target=lambda: result.update(run_wrk(url, lua, connections, seconds + 2 * warm)))
        load.start()
        time.sleep(warm)
        before, t0 = answered(base), time.monotonic()
        time.sleep(seconds)
        after, t1 = answered(base), time.monotonic()
        load.join()
        return {**result, "wrk_rps": result["rps"], "rps": (after - before) / (t1 - t0)}
    finally:
        stop(proc)


def answered(base: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ferry_requests_total{") and 'outcome="success"' in line
    )


def paired(pkg: Path, name: str, lua: Path, args: argparse.Namespace) -> None:
    """Offline and served measured back to back, several times: each ratio compares two numbers taken a
    minute apart, so the VM's drift (which moved the ceiling by 17% between runs) cancels out."""
    flags = SETTINGS["2 instances x 1 thread, batch 16"]
    print(f"\npaired rounds, setting '2 instances x 1 thread, batch 16', wrk -c{args.connections}")
    print("| round | offline best of 2x1 / 1x2 at batch 16 | served (steady) | ratio | wrk's own req/s |")
    print("|---|---|---|---|---|")
    ratios = []
    for i in range(args.paired):
        ceiling = max(offline(pkg, 16, 2, 1, 5.0), offline(pkg, 16, 1, 2, 5.0))
        r = serve_rate(pkg, name, lua, flags, args.connections, args.seconds)
        served = r["rps"]
        ratios.append(served / ceiling)
        print(f"| {i + 1} | {ceiling:.1f} | {served:.1f} | {served / ceiling:.2f}x | {r['wrk_rps']:.1f} |", flush=True)
    print(f"median ratio {sorted(ratios)[len(ratios) // 2]:.2f}x")


if __name__ == "__main__":
    main()
