"""Beyond one machine, measured on one: Ray Data, Ray Serve and KServe with ferry against the plain way.

    sudo python benchmarks/scale.py                 # all three parts (root: network namespaces)
    sudo python benchmarks/scale.py --parts data --images 512

Ray and KServe bind every interface, so each part runs inside a network namespace (tests/netns.py).
- data: `ferry predict`'s job on Ray Data (`RayCompute`) with 1 and 2 actors of 1 CPU and 1 engine thread
  each, against the same job run locally (2 threads), on the ResNet-18-like CNN at batch 32; rounds
  interleaved; Ray's start is outside the timing, the actors' start inside.
- serve: ferry's Ray Serve deployment (`@serve.batch`) against a plain Ray Serve deployment that runs
  ONNX Runtime once per request, and `ferry serve`, on a tiny MLP and the ResNet-18-like CNN, at
  concurrency 16 and 64.
- kserve: ferry's `FerryModel` in KServe's server against KServe's server with a plain ONNX Runtime
  `kserve.Model`, same model, same client.
The client is one asyncio process (httpx, JSON bodies, one row per request), the same for every server.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import models as bench_models  # noqa: E402

from netns import Hosts  # noqa: E402

QUIET = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
PY = sys.executable

LOAD = r"""
import asyncio, json, sys, time
import httpx, numpy as np
url, model, npz, concurrency, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
arrays = dict(np.load(npz))
name, x = next(iter(arrays.items()))
def body(row):  # the protocol's binary form, as tritonclient sends it: a JSON header, then the raw tensor
    raw = np.ascontiguousarray(row[None]).tobytes()
    header = json.dumps({"inputs": [{"name": name, "shape": [1, *row.shape], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": False}}).encode()
    return header + raw, {"inference-header-content-length": str(len(header)),
                          "content-type": "application/octet-stream"}
bodies = [body(x[i % len(x)]) for i in range(64)]
async def main():
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        deadline = time.time() + 300
        while True:
            try:
                if (await client.get(f"{url}/v2/models/{model}/ready")).status_code == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                raise SystemExit("server not ready")
            await asyncio.sleep(0.5)
        for i in range(concurrency):  # warm-up
            content, headers = bodies[i % 64]
            (await client.post(f"{url}/v2/models/{model}/infer", content=content, headers=headers)).raise_for_status()
        latencies, sent = [], iter(range(total))
        async def worker():
            for i in sent:
                content, headers = bodies[i % 64]
                t = time.perf_counter()
                r = await client.post(f"{url}/v2/models/{model}/infer", content=content, headers=headers)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    print(json.dumps({"rps": total / wall, "p50": float(np.median(lat)), "p99": float(np.percentile(lat, 99))}))
asyncio.run(main())
"""

PLAIN_RAY = r"""
import json, sys, time
import numpy as np, onnxruntime as ort, ray
from ray import serve

@serve.deployment(ray_actor_options={"num_cpus": 2}, max_ongoing_requests=256)  # as ferry's: 2 CPUs, 2 threads
class Plain:
    def __init__(self, path):
        so = ort.SessionOptions(); so.intra_op_num_threads = 2
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    async def __call__(self, request):
        if request.url.path.endswith("/ready"):
            return {"ready": True}
        body = await request.body()
        length = int(request.headers["inference-header-content-length"])
        t = json.loads(body[:length])["inputs"][0]
        x = np.frombuffer(body[length:], np.float32).reshape(t["shape"])
        if sys.argv[2] == "noop":  # Ray Serve's own cost: the same request path without the model
            return {"outputs": []}
        out = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        return {"outputs": [{"name": "y", "datatype": "FP32", "shape": list(out.shape), "data": out.ravel().tolist()}]}

ray.init(include_dashboard=False)
serve.start(http_options={"host": "127.0.0.1", "port": 8000})
serve.run(Plain.bind(sys.argv[1]), route_prefix="/")  # argv[2]: "run" or "noop"
print("ready", flush=True)
while True:
    time.sleep(3600)
"""

PLAIN_KSERVE = r"""
import sys
import numpy as np, onnxruntime as ort, kserve
from kserve.protocol.infer_type import InferOutput, InferResponse

class Plain(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        so = ort.SessionOptions(); so.intra_op_num_threads = 2  # as FerryModel's --threads 2
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.ready = True
    async def predict(self, payload, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy()
        out = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        o = InferOutput(name="y", shape=list(out.shape), datatype="FP32")
        o.set_data_from_numpy(out, binary_data=False)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[o])

kserve.ModelServer(http_port=8080, grpc_port=8081, enable_grpc=False).start([Plain(sys.argv[1], sys.argv[2])])
"""

DATA_JOB = r"""
import json, sys, time
import numpy as np, ray
from pathlib import Path
import ferry
from ferry.batch import BatchJob, read_inputs, run_job
from ferry.integrations.ray import RayCompute
pkg_path, npz, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
pkg = ferry.load(pkg_path)
def job(threads):
    config = ferry.Config(pkg); config.set_cpu_threads(threads)
    return BatchJob(ferry.create_predictor(config), read_inputs([Path(npz)], pkg), 32)
ray.init(include_dashboard=False, log_to_driver=False)
results = {"local 2 threads": [], "ray 1 actor": [], "ray 2 actors": []}
rows = job(1).samples.count
for _ in range(rounds):
    for key in results:
        j = job(2 if key.startswith("local") else 1)
        compute = None if key.startswith("local") else RayCompute(j, actors=int(key.split()[1]), threads=1)
        t = time.perf_counter()
        run_job(j, compute=compute)
        results[key].append(rows / (time.perf_counter() - t))
print(json.dumps({k: float(np.median(v)) for k, v in results.items()}))
"""


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def load(host, url: str, model: str, npz: Path, concurrency: int, total: int) -> dict:
    return last_json(host.run([PY, "-c", LOAD, url, model, str(npz), str(concurrency), str(total)], env=QUIET))


def part_data(tmp: Path, images: int, rounds: int) -> dict:
    bm = bench_models.cnn(tmp, "resnet18")
    npz = tmp / "images.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((images, 3, 224, 224)).astype(np.float32))
    with Hosts(1, tmp / "hosts-data") as (host,):
        return last_json(
            host.run([PY, "-c", DATA_JOB, str(bm.package), str(npz), str(rounds)], env=QUIET, timeout=3600)
        )


def serve_models(tmp: Path) -> dict[str, tuple[Path, Path]]:
    mlp = bench_models.tiny_mlp(tmp)
    cnn = bench_models.cnn(tmp, "resnet18")
    out = {}
    for name, bm, shape in (("tiny MLP", mlp, None), ("ResNet-18-like", cnn, (3, 224, 224))):
        spec = __import__("ferry").load(bm.package).signature.inputs[0]
        shape = shape or tuple(d for d in spec.shape[1:])
        npz = tmp / f"{bm.package.name}-rows.npz"
        np.savez(npz, **{spec.name: np.random.default_rng(1).standard_normal((64, *shape)).astype(np.float32)})
        out[name] = (bm.package, npz)
    return out


def measure(host, port: int, name: str, kind: str, model: str, npz: Path, total: int, results: dict) -> None:
    """The server on `host` under the load client at concurrency 16 and 64 (the CNN gets 1/8 the requests)."""
    for concurrency in (16, 64):
        r = load(host, f"http://127.0.0.1:{port}", model, npz, concurrency, total if "MLP" in name else total // 8)
        results[f"{name} | {kind} | c{concurrency}"] = r
        print(f"  {name:15} {kind:20} c{concurrency:<3} {r['rps']:8.1f} req/s  p50 {r['p50']:7.1f} ms  "
              f"p99 {r['p99']:7.1f} ms", flush=True)  # fmt: skip


def part_serve(tmp: Path, total: int) -> dict:
    import ferry

    results = {}
    for name, (package, npz) in serve_models(tmp).items():
        model = ferry.load(package).name
        kinds = ["ferry on Ray Serve", "plain Ray Serve", "ferry serve"] + (
            ["no-op Ray Serve"] if "MLP" in name else []
        )
        for kind in kinds:
            with Hosts(1, tmp / "hosts-serve") as (host,):
                if kind == "ferry on Ray Serve":
                    argv = [PY, "-m", "ferry", "serve", str(package), "--ray", "--threads", "2", "--max-batch-size",
                            "32", "--batch-delay-ms", "2", "--http-port", "8000"]  # fmt: skip
                elif kind in ("plain Ray Serve", "no-op Ray Serve"):
                    argv = [PY, "-c", PLAIN_RAY, str(package / "model.onnx"), "noop" if "no-op" in kind else "run"]
                else:
                    argv = [PY, "-m", "ferry", "serve", str(package), "--http-port", "8000", "--grpc-port", "0",
                            "--threads", "2", "--max-batch-size", "32", "--batch-delay-ms", "2"]  # fmt: skip
                host.start(argv, env=QUIET, log=tmp / "server.log")
                measure(host, 8000, name, kind, model, npz, total, results)
    return results


def part_kserve(tmp: Path, total: int) -> dict:
    import ferry

    results = {}
    for name, (package, npz) in serve_models(tmp).items():
        model = ferry.load(package).name
        for kind in ("ferry FerryModel", "plain kserve.Model"):
            with Hosts(1, tmp / "hosts-kserve") as (host,):
                if kind == "ferry FerryModel":
                    argv = [PY, "-m", "ferry.integrations.kserve", str(package), "--model_name", model, "--http_port",
                            "8080", "--enable_grpc", "false", "--threads", "2"]  # fmt: skip
                else:
                    argv = [PY, "-c", PLAIN_KSERVE, model, str(package / "model.onnx")]
                host.start(argv, env=QUIET, log=tmp / "kserve.log")
                measure(host, 8080, name, kind, model, npz, total, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["data", "serve", "kserve"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000, help="per setting on the MLP (1/8 on the CNN)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        tmp = Path(d)
        if "data" in args.parts:
            r = out["data"] = part_data(tmp, args.images, args.rounds)
            print(f"Ray Data, ResNet-18-like b32, {args.images} images (rows/s): " + ", ".join(
                f"{k} {v:.1f}" for k, v in r.items()))  # fmt: skip
            print(f"  2 actors / 1 actor {r['ray 2 actors'] / r['ray 1 actor']:.2f}x; "
                  f"ray 2 actors / local {r['ray 2 actors'] / r['local 2 threads']:.2f}x")  # fmt: skip
        if "serve" in args.parts:
            print("Ray Serve and ferry serve")
            out["serve"] = part_serve(tmp, args.requests)
        if "kserve" in args.parts:
            print("KServe's model server")
            out["kserve"] = part_kserve(tmp, args.requests)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
