"""Serving benchmark: ferry against PyTriton, LitServe, BentoML and a bare FastAPI endpoint, on the same
ONNX Runtime model; wrk (HTTP) and h2load (gRPC) as load generators; 127.0.0.1 only, bounded runs, one
server at a time.

    bash benchmarks/setup_serving_peers.sh          # venvs for the peers (PyTriton pins its own numpy)
    python benchmarks/serving.py --seconds 10

gRPC load comes from nghttp2's h2load (Debian's nghttp2-client) posting one length-prefixed
ModelInferRequest with raw contents; PyTriton's gRPC port answers the same message.

The model is a tiny MLP (64 -> 128 -> 10). ferry and PyTriton get the Open Inference Protocol JSON body
(`{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [...]}]}`); FastAPI gets
`{"x": [...]}`, as the floor of what a bare Python endpoint does. Both ferry and PyTriton batch dynamically.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
PYTRITON_APP = """
import sys, numpy as np, onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
model, http_port, grpc_port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
@batch
def infer(x):
    return {"y": sess.run(None, {"x": x})[0]}
config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1", grpc_port=grpc_port,
                      metrics_address="127.0.0.1", metrics_port=metrics_port)
with Triton(config=config) as triton:
    triton.bind(model_name="mlp", infer_func=infer, inputs=[Tensor(name="x", dtype=np.float32, shape=(64,))],
                outputs=[Tensor(name="y", dtype=np.float32, shape=(10,))],
                config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=500)))
    triton.serve()
"""
FASTAPI_APP = """
import os, numpy as np, onnxruntime as ort
from fastapi import FastAPI, Request
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(os.environ["MODEL"], so, providers=["CPUExecutionProvider"])
app = FastAPI()
@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    x = np.asarray(body["x"], dtype=np.float32).reshape(1, 64)
    return {"y": sess.run(None, {"x": x})[0].tolist()}
"""
LITSERVE_APP = """
import os, numpy as np, onnxruntime as ort, litserve as ls
class MLP(ls.LitAPI):
    def setup(self, device):
        so = ort.SessionOptions(); so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(os.environ["MODEL"], so, providers=["CPUExecutionProvider"])
    def decode_request(self, request):
        return np.asarray(request["x"], dtype=np.float32).reshape(1, 64)
    def predict(self, x):
        return self.sess.run(None, {"x": x})[0]
    def encode_response(self, output):
        return {"y": output.tolist()}
if __name__ == "__main__":
    ls.LitServer(MLP(), accelerator="cpu").run(
        host="127.0.0.1", port=int(os.environ["PORT"]), generate_client_file=False
    )
"""
BENTO_APP = """
import os, numpy as np, onnxruntime as ort, bentoml
@bentoml.service(workers=1)
class MLP:
    def __init__(self):
        so = ort.SessionOptions(); so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(os.environ["MODEL"], so, providers=["CPUExecutionProvider"])
    @bentoml.api
    def predict(self, x: list[float]) -> dict:
        return {"y": self.sess.run(None, {"x": np.asarray(x, dtype=np.float32).reshape(1, 64)})[0].tolist()}
"""
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "r")
wrk.body = f:read("*a")
f:close()
"""


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def run_wrk(url: str, lua: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def run_h2load(url: str, body: Path, connections: int, requests: int) -> dict[str, float]:
    """gRPC load from nghttp2's h2load: the body is one length-prefixed ModelInferRequest."""
    out = subprocess.run(
        ["h2load", "-c", str(connections), "-m", "1", "-n", str(requests),
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if found is None:
        raise RuntimeError(f"h2load said:\n{out[-2000:]}")
    rps = float(found.group(1))
    failed = re.search(r"(\d+) failed, (\d+) errored", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean.group(2)] if mean else float("nan")
    return {
        "rps": rps,
        "mean_ms": float(mean.group(1)) * unit if mean else float("nan"),
        "errors": float(int(failed.group(1)) + int(failed.group(2))) if failed else 0.0,
    }


def grpc_body(work: Path) -> Path:
    from ferry.protocol.messages import messages

    m = messages()
    req = m.ModelInferRequest(model_name="mlp")
    tensor = req.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend([1, 64])
    req.raw_input_contents.append(np.random.default_rng(0).random((1, 64)).astype(np.float32).tobytes())
    data = req.SerializeToString()
    path = work / "grpc.bin"
    path.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)
    return path


def make_model(work: Path) -> Path:
    import torch

    import ferry

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()
    pkg = work / "mlp"
    ferry.export(module, torch.randn(2, 64), pkg, input_names=["x"], output_names=["y"], exporter="torchscript",
                 overwrite=True)  # fmt: skip
    x = np.random.default_rng(0).random(64).round(4).tolist()
    (work / "oip.json").write_text(
        json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x}]})
    )
    (work / "plain.json").write_text(json.dumps({"x": x}))
    for name in ("oip", "plain"):
        (work / f"{name}.lua").write_text(LUA.format(body=work / f"{name}.json"))
    return pkg


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    # A session of its own, so that stop() reaches the workers some servers spawn (LitServe, tritonserver).
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--grpc-requests", type=int, default=10000, help="requests per gRPC run")
    parser.add_argument("--triton-python", default="/tmp/venv-triton/bin/python")
    parser.add_argument("--fastapi-python", default="/tmp/venv-fastapi/bin/python")
    parser.add_argument("--litserve-python", default="/tmp/venv-litserve/bin/python")
    parser.add_argument("--bentoml-python", default="/tmp/venv-bento/bin/python")
    parser.add_argument("--only", default="", help="comma-separated server names (or their starts) to run")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another ferry's src/ folder (a git worktree of an older commit), "
        "served as 'ferry baseline (1 worker)' for an A/B in the same run"
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-serving-bench-"))
    pkg = make_model(work)
    conns = [int(c) for c in args.connections.split(",")]
    port = 18500
    servers = {
        "ferry (1 worker)": (
            [sys.executable, "-m", "ferry", "serve", str(pkg), "--http-port", str(port), "--grpc-port", str(port + 1)],
            None, f"http://127.0.0.1:{port}/v2/models/mlp/infer", work / "oip.lua",
        ),
        "ferry (2 workers)": (
            [sys.executable, "-m", "ferry", "serve", str(pkg), "--http-port", str(port), "--grpc-port", str(port + 1),
             "--workers", "2"],
            None, f"http://127.0.0.1:{port}/v2/models/mlp/infer", work / "oip.lua",
        ),
    }  # fmt: skip
    if args.baseline is not None:
        cmd, _, url, lua = servers["ferry (1 worker)"]
        servers["ferry baseline (1 worker)"] = (cmd, {"PYTHONPATH": str(args.baseline.resolve())}, url, lua)
    if Path(args.triton_python).exists():
        app = work / "pytriton_app.py"
        app.write_text(PYTRITON_APP)
        # PyTriton's Python-backend stub links the system libpython unless pointed at this Python's LIBDIR.
        libdir = subprocess.run(
            [args.triton_python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        servers["PyTriton"] = (
            [args.triton_python, str(app), str(pkg / "model.onnx"), str(port), str(port + 1), str(port + 2)],
            {"LD_LIBRARY_PATH": libdir}, f"http://127.0.0.1:{port}/v2/models/mlp/infer", work / "oip.lua",
        )  # fmt: skip
    if Path(args.fastapi_python).exists():
        port += 10  # PyTriton's tritonserver may hold its ports for a moment after it is stopped
        (work / "fastapi_app.py").write_text(FASTAPI_APP)
        servers["FastAPI + uvicorn (floor)"] = (
            [args.fastapi_python, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
             "--app-dir", str(work), "--log-level", "warning", "--no-access-log"],
            {"MODEL": str(pkg / "model.onnx")}, f"http://127.0.0.1:{port}/predict", work / "plain.lua",
        )  # fmt: skip
    if Path(args.litserve_python).exists():
        port += 10
        (work / "litserve_app.py").write_text(LITSERVE_APP)
        servers["LitServe"] = (
            [args.litserve_python, str(work / "litserve_app.py")],
            {"MODEL": str(pkg / "model.onnx"), "PORT": str(port)},
            f"http://127.0.0.1:{port}/predict",
            work / "plain.lua",
        )
    if Path(args.bentoml_python).exists():
        port += 10
        (work / "bento_app.py").write_text(BENTO_APP)
        bentoml = str(Path(args.bentoml_python).with_name("bentoml"))
        servers["BentoML"] = (
            [bentoml, "serve", "bento_app:MLP", "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(work)],
            {"MODEL": str(pkg / "model.onnx"), "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(work / "bentoml")},
            f"http://127.0.0.1:{port}/predict", work / "plain.lua",
        )  # fmt: skip
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        servers = {n: v for n, v in servers.items() if any(n.startswith(w) for w in wanted)}
    grpc_servers = {"ferry (1 worker)", "ferry (2 workers)", "ferry baseline (1 worker)", "PyTriton"}
    body = grpc_body(work)
    grpc_results: dict[str, dict[int, dict[str, float]]] = {}
    results: dict[str, dict[int, dict[str, float]]] = {}
    for name, (cmd, env, url, lua) in servers.items():
        proc = start(cmd, env)
        try:
            ready = {"LitServe": "/health", "BentoML": "/readyz"}.get(name, "/docs")
            wait_ready(url.replace("/infer", "/ready") if "/v2/" in url else url.replace("/predict", ready))
            run_wrk(url, lua, 16, 2)  # warm up
            results[name] = {c: run_wrk(url, lua, c, args.seconds) for c in conns}
            print(name, json.dumps(results[name]), flush=True)
            if name in grpc_servers:
                http_port = int(url.split(":")[2].split("/")[0])
                grpc_url = f"http://127.0.0.1:{http_port + 1}/inference.GRPCInferenceService/ModelInfer"
                run_h2load(grpc_url, body, 16, 500)  # warm up
                grpc_results[name] = {c: run_h2load(grpc_url, body, c, args.grpc_requests) for c in conns}
                print(name, "gRPC", json.dumps(grpc_results[name]), flush=True)
        finally:
            stop(proc)
            time.sleep(1)
    print_table("server", results, conns, {"p50": "p50 ms", "p99": "p99 ms"})
    print_table("gRPC (h2load)", grpc_results, conns, {"mean_ms": "mean ms"})


def print_table(title: str, results: dict, conns: list[int], columns: dict[str, str]) -> None:
    """A markdown table: req/s and `columns` per connection count, and the ratio to PyTriton."""
    base = results.get("PyTriton")
    heads = " | ".join(f"c{c} req/s | " + " | ".join(f"c{c} {h}" for h in columns.values()) for c in conns)
    print()
    print(f"| {title} | {heads} | vs PyTriton |")
    print("|---|" + ("---|" * (1 + len(columns))) * len(conns) + "---|")
    for name, by_c in results.items():
        cells = " | ".join(f"{by_c[c]['rps']:.0f} | " + " | ".join(f"{by_c[c][k]:.2f}" for k in columns) for c in conns)
        ratio = " / ".join(f"{by_c[c]['rps'] / base[c]['rps']:.2f}x" for c in conns) if base else "–"
        print(f"| {name} | {cells} | {ratio} |")


if __name__ == "__main__":
    main()
