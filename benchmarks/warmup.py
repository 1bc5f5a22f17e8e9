"""First-request latency with and without warm-up, on a served ResNet-18-like CNN.

    python benchmarks/warmup.py --rounds 5 [--backend onnxruntime|openvino]

Each round starts `ferry serve` twice, on a repository whose config.json says `"warmup": false` and on
one with the default warm-up (one run at batch 1), in turn, and times the first inference request after
/ready, then the median of the next ten. 127.0.0.1 only; one server at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import models as bench_models  # noqa: E402
from serving import start, stop, wait_ready  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_round(repo: Path, backend: str, body: bytes, header_length: int) -> tuple[float, float]:
    import http.client

    port = free_port()
    proc = start([sys.executable, "-m", "ferry", "serve", str(repo), "--http-port", str(port), "--grpc-port", "0",
                  "--backend", backend])  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120)
        times = []
        for _ in range(11):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            started = time.perf_counter()
            conn.request("POST", "/v2/models/cnn/infer", body=body,
                         headers={"Inference-Header-Content-Length": str(header_length)})  # fmt: skip
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, response.status
            conn.close()
        return times[0], statistics.median(times[1:])
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    package = bench_models.cnn(args.work, "resnet18").package
    repos = {}
    for name, config in (("off", {"warmup": False}), ("on", {})):
        repo = Path(tempfile.mkdtemp(prefix=f"ferry-warmup-{name}-"))
        shutil.copytree(package, repo / "cnn" / "1")
        (repo / "cnn" / "config.json").write_text(json.dumps({**config, "max_batch_size": 1}))
        repos[name] = repo
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()  # fmt: skip
    body = header + x.tobytes()
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for name in ("off", "on"):
            results[name].append(one_round(repos[name], args.backend, body, len(header)))
            print(f"round {r + 1} warm-up {name}: first {results[name][-1][0]:.1f} ms, "
                  f"then {results[name][-1][1]:.1f} ms", flush=True)  # fmt: skip
    print(f"\n| warm-up ({args.backend}) | first request ms (median) | later requests ms (median) | first / later |")
    print("|---|---|---|---|")
    for name in ("off", "on"):
        first = statistics.median(f for f, _ in results[name])
        later = statistics.median(s for _, s in results[name])
        print(f"| {name} | {first:.1f} | {later:.1f} | {first / later:.2f}x |")


if __name__ == "__main__":
    main()
