"""ferry on Ray, in network namespaces (Ray binds every interface): `ferry predict --ray` on one simulated
host and on a two-host cluster (a head and a worker joined by a veth pair), against local `ferry predict`;
a user's own dataset through `FerryPredictor`; and the Ray Serve deployment called by tritonclient."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import ferry
from ferry.batch import BatchJob, read_inputs, run_job
from netns import WAIT_READY, Hosts

DEMO = Path(ferry.__file__).parent / "demo"
DATA = DEMO / "samples" / "test.npz"
FERRY = [sys.executable, "-m", "ferry"]
QUIET = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # a closed test network


def local_predict(out: Path, batch_size: int = 32) -> dict[str, np.ndarray]:
    pkg = ferry.load(DEMO / "digits")
    job = BatchJob(ferry.create_predictor(ferry.Config(pkg)), read_inputs([DATA], pkg), batch_size, out)
    run_job(job)
    return dict(np.load(out))


def test_predict_on_ray_keeps_order_resumes_and_matches_local(tmp_path):
    want = local_predict(tmp_path / "local.npz", batch_size=16)
    out = tmp_path / "ray.npz"
    # an earlier run that stopped after 5 batches
    pkg = ferry.load(DEMO / "digits")
    job = BatchJob(ferry.create_predictor(ferry.Config(pkg)), read_inputs([DATA], pkg), 16, out)

    def stops_early(pending):
        for index in pending[:5]:
            yield index, job.predictor.predict(job.batch_inputs(index))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(job, compute=stops_early)
    assert not out.exists() and len(list((tmp_path / "ray.npz.partial").glob("batch-*.npz"))) == 5
    with Hosts(1, tmp_path / "hosts") as (host,):
        result = host.run([*FERRY, "predict", str(DEMO / "digits"), str(DATA), "-o", str(out), "--ray", "--actors",
                           "2", "--batch-size", "16"], env=QUIET)  # fmt: skip
    assert f"resuming: 5 of {job.batches} batches were done by an earlier run" in result.stderr
    assert f"Ray ran {job.batches - 5} batches on 1 node(s)" in result.stderr
    got = dict(np.load(out))
    assert got.keys() == want.keys()
    np.testing.assert_array_equal(got["logits"], want["logits"])  # every row once, in input order
    assert not (tmp_path / "ray.npz.partial").exists()


def test_two_hosts_share_the_work_and_every_row_comes_back_once_in_order(tmp_path):
    want = local_predict(tmp_path / "local.npz", batch_size=8)
    out = tmp_path / "ray.npz"
    with Hosts(2, tmp_path / "hosts") as (head, worker):
        ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1"]
        head.start([*ray, "--head", "--node-ip-address", head.address, "--port", "6379", "--include-dashboard",
                    "false", "--disable-usage-stats"], env=QUIET, log=tmp_path / "head.log")  # fmt: skip
        worker.start([*ray, "--address", f"{head.address}:6379", "--node-ip-address", worker.address], env=QUIET,
                     log=tmp_path / "worker.log")  # fmt: skip
        wait = ("import ray, time; ray.init(address='auto', log_to_driver=False)\n"
                "t = time.time()\n"
                "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.time() - t < 120: time.sleep(0.5)\n"
                "print(sum(n['Alive'] for n in ray.nodes()))")  # fmt: skip
        try:
            assert head.run([sys.executable, "-c", wait], env={**QUIET, "RAY_ADDRESS": f"{head.address}:6379"}
                            ).stdout.strip().endswith("2")  # fmt: skip
            result = head.run([*FERRY, "predict", str(DEMO / "digits"), str(DATA), "-o", str(out), "--ray",
                               "--actors", "2", "--batch-size", "8", "--ray-address", f"{head.address}:6379"],
                              env=QUIET)  # fmt: skip
        except AssertionError:
            print((tmp_path / "head.log").read_text()[-2000:], (tmp_path / "worker.log").read_text()[-2000:])
            raise
    assert "on 2 node(s)" in result.stderr, result.stderr
    got = dict(np.load(out))
    np.testing.assert_array_equal(got["logits"], want["logits"])


DATASET = r"""
import json, sys
import numpy as np, ray
from ray.data import ActorPoolStrategy
from ferry.integrations.ray import FerryPredictor, predict_dataset
x = np.load(sys.argv[2])["image"][:100].astype(np.float32)
ray.init(log_to_driver=False, include_dashboard=False)
ds = ray.data.from_items([{"id": i, "image": x[i]} for i in range(len(x))])
rows = predict_dataset(ds, sys.argv[1], actors=2, batch_size=16).take_all()
try:
    wrong = ray.data.from_items([{"id": 0, "pixels": x[0]}])
    wrong.map_batches(FerryPredictor, fn_constructor_kwargs={"package": sys.argv[1]},
                      compute=ActorPoolStrategy(size=1)).take_all()
    error = "no error"
except Exception as exc:
    error = str(exc)
print(json.dumps({"ids": [int(r["id"]) for r in rows], "logits": {int(r["id"]): r["logits"].tolist() for r in rows},
                  "error": error}))
"""


def test_a_users_dataset_gets_the_outputs_as_columns(tmp_path):
    with Hosts(1, tmp_path / "hosts") as (host,):
        result = host.run([sys.executable, "-c", DATASET, str(DEMO / "digits"), str(DATA)], env=QUIET)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(got["ids"]) == list(range(100))  # each row once (the order is Ray's)
    x = np.load(DATA)["image"][:100].astype(np.float32)
    want = ferry.create_predictor(ferry.Config(ferry.load(DEMO / "digits"))).predict(x)["logits"]
    logits = np.array([got["logits"][str(i)] for i in range(100)], dtype=np.float32)
    np.testing.assert_allclose(logits, want, atol=1e-6)
    assert "no column(s) ['image'] for the model's inputs" in got["error"]


SERVE_CLIENT = (
    WAIT_READY
    + r"""
import json, sys, time
import numpy as np
import tritonclient.http as th
from tritonclient.utils import InferenceServerException
import ferry.client

name, npz = sys.argv[1], sys.argv[2]
x = np.load(npz)["image"][:64].astype(np.float32)
h = th.InferenceServerClient("127.0.0.1:8000", concurrency=16)
wait_ready(h, name, 180)

def send(i):
    inp = th.InferInput("image", [1, 1, 8, 8], "FP32"); inp.set_data_from_numpy(x[i : i + 1])
    return h.async_infer(name, [inp])

rows = []
for start in range(0, 64, 16):  # 64 requests, 16 in flight at a time: @serve.batch merges them
    pending = [send(i) for i in range(start, start + 16)]
    rows += [p.get_result().as_numpy("logits")[0].tolist() for p in pending]
client = ferry.client.Client("http://127.0.0.1:8000")
via_ferry = client.infer(name, {"image": x[:3]})["logits"].tolist()
bad = th.InferInput("image", [2, 64], "FP32"); bad.set_data_from_numpy(x[:2].reshape(2, 64))
try:
    h.infer(name, [bad]); error = "no error"
except InferenceServerException as exc:
    error = f"{exc.status()} {exc.message()}"
print(json.dumps({"rows": rows, "ferry_client": via_ferry, "error": error, "meta": h.get_model_metadata(name)}))
"""
)


SERVE_COMMANDS = {
    "ferry serve --ray": [*FERRY, "serve", str(DEMO / "digits"), "--ray", "--http-port", "8000", "--max-batch-size",
                          "16", "--batch-delay-ms", "5"],
    "serve run (Ray's CLI)": [sys.executable, "-m", "ray.serve.scripts", "run", "ferry.integrations.ray:app",
                              f"package={DEMO / 'digits'}", "max_batch_size=16", "max_delay_ms=5"],
}  # fmt: skip


@pytest.mark.parametrize("how", SERVE_COMMANDS)
def test_ray_serve_deployment_answers_tritonclient_and_ferry_client(tmp_path, how):
    with Hosts(1, tmp_path / "hosts") as (host,):
        host.start(SERVE_COMMANDS[how], env=QUIET, log=tmp_path / "serve.log")
        try:
            result = host.run([sys.executable, "-c", SERVE_CLIENT, "digits", str(DATA)], env=QUIET)
        except AssertionError:
            print((tmp_path / "serve.log").read_text()[-4000:])
            raise
    got = json.loads(result.stdout.strip().splitlines()[-1])
    x = np.load(DATA)["image"][:64].astype(np.float32)
    want = ferry.create_predictor(ferry.Config(ferry.load(DEMO / "digits"))).predict(x)["logits"]
    np.testing.assert_allclose(np.array(got["rows"], np.float32), want, atol=1e-5)
    np.testing.assert_allclose(np.array(got["ferry_client"], np.float32), want[:3], atol=1e-5)
    assert got["error"].startswith("400") and "expected rank 4" in got["error"], got["error"]
    assert got["meta"]["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
