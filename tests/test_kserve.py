"""ferry under KServe: `ferry.integrations.kserve.FerryModel` in KServe's own model server, and `ferry
serve` started the way a ServingRuntime starts it, side by side in a private network namespace (KServe's
server binds every interface), called by tritonclient over HTTP and gRPC."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import ferry
from ferry.serving.batching import BatchPolicy
from ferry.serving.repository import discover
from netns import WAIT_READY, Hosts

# kserve is not imported here: its generated protos and tritonclient's both register `inference.*` in
# protobuf's default pool, so the two cannot live in one process. Its server runs in a child process.
DEMO = Path(ferry.__file__).parent / "demo"
NAME = "digits-isvc"  # an InferenceService's name, which both servers take as the model's

# Runs inside the namespace: waits for both servers, sends the same requests to each, prints what came back.
CLIENT = (
    WAIT_READY
    + r"""
import json, sys, time
import httpx
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

name, npz, image = sys.argv[1], sys.argv[2], sys.argv[3]
x = np.load(npz)["image"][:5].astype(np.float32)
servers = {"kserve": (8080, 8081), "ferry": (8000, 8001)}
out = {}
for server, (http_port, grpc_port) in servers.items():
    h = th.InferenceServerClient(f"127.0.0.1:{http_port}")
    g = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    wait_ready(h, name, 120)
    res = {"meta": h.get_model_metadata(name)}
    i = th.InferInput("image", list(x.shape), "FP32"); i.set_data_from_numpy(x, binary_data=True)
    res["http"] = h.infer(name, [i]).as_numpy("logits").tolist()
    i = tg.InferInput("image", list(x.shape), "FP32"); i.set_data_from_numpy(x)
    res["grpc"] = g.infer(name, [i]).as_numpy("logits").tolist()
    body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = httpx.post(f"http://127.0.0.1:{http_port}/v2/models/{name}/infer", json=body)  # plain JSON, as curl sends
    res["http_json"] = np.float32(r.json()["outputs"][0]["data"]).reshape(5, 10).tolist()
    bad = th.InferInput("image", [5, 64], "FP32"); bad.set_data_from_numpy(x.reshape(5, 64))
    try:
        h.infer(name, [bad]); res["bad"] = "no error"
    except InferenceServerException as exc:
        res["bad"] = f"{exc.status()} {exc.message()}"
    # over gRPC: KServe's REST decoder turns binary BYTES back into UTF-8 text and refuses a PNG (a 500)
    img = tg.InferInput("image", [1], "BYTES")
    img.set_data_from_numpy(np.array([open(image, "rb").read()], dtype=object))
    r = g.infer(name, [img])
    res["labels"] = [v.decode() for v in r.as_numpy("labels").ravel()]
    res["scores"] = r.as_numpy("scores").ravel().tolist()
    out[server] = res
print(json.dumps(out))
"""
)


def test_ferry_model_in_kserves_server_answers_as_ferry_serve(tmp_path):
    with Hosts(1, tmp_path) as (host,):
        host.start([sys.executable, "-m", "ferry.integrations.kserve", str(DEMO / "digits"), "--model_name", NAME,
                    "--http_port", "8080", "--grpc_port", "8081"], log=tmp_path / "kserve.log")  # fmt: skip
        host.start([sys.executable, "-m", "ferry", "serve", "--model_dir", str(DEMO / "digits"), "--model_name", NAME,
                    "--http_port", "8000", "--grpc_port", "8001"], log=tmp_path / "ferry.log")  # fmt: skip
        image = DEMO / "samples" / "4_0.png"
        try:
            result = host.run([sys.executable, "-c", CLIENT, NAME, str(DEMO / "samples" / "test.npz"), str(image)])
        except AssertionError:
            print((tmp_path / "kserve.log").read_text()[-3000:], (tmp_path / "ferry.log").read_text()[-3000:])
            raise
    got = json.loads(result.stdout.strip().splitlines()[-1])
    k, f = got["kserve"], got["ferry"]
    for key in ("http", "grpc", "http_json"):
        assert k[key] == f[key], key  # the same engine on the same inputs: equal, not close
    assert len(k["grpc"]) == 5 and len(k["grpc"][0]) == 10
    assert k["meta"]["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert k["meta"]["outputs"][0]["name"] == "logits"
    assert k["bad"].startswith("400") and "expected rank 4" in k["bad"], k["bad"]
    assert f["bad"].startswith("400") and "expected rank 4" in f["bad"], f["bad"]
    assert k["labels"] == f["labels"] and k["labels"][0] == "4"
    assert k["scores"] == pytest.approx(f["scores"], abs=1e-6)


def test_a_single_package_takes_the_name_kserve_gives():
    spec = discover(DEMO / "digits", BatchPolicy(), name=NAME)
    assert [s.name for s in spec] == [NAME]
    assert [s.name for s in discover(DEMO / "digits", BatchPolicy())] == ["digits"]


def test_a_model_name_for_a_repository_is_refused(tmp_path):
    (tmp_path / "repo" / "digits").mkdir(parents=True)
    with pytest.raises(ferry.errors.ConfigError, match="a model name is for one package"):
        discover(tmp_path / "repo", BatchPolicy(), name=NAME)
