"""Faults stay contained: a broken package, a hostile model name, a cross-site admin write, a taken port,
a dead parent, a grace period that runs out. Each against a real `ferry serve` process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ferry
from serving_helpers import (
    free_port,
    get,
    infer_body,
    linear_model,
    post,
    running_server,
    sigterm_during,
    slow_model,
)

tritonhttp = pytest.importorskip("tritonclient.http")


def break_manifest(package_root: Path, **fields) -> None:
    manifest = package_root / "ferry.json"
    doc = json.loads(manifest.read_text())
    doc.update(fields)
    manifest.write_text(json.dumps(doc))


def wait_until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_a_wrong_typed_manifest_field_leaves_the_rest_serving(tmp_path):
    ferry.save(linear_model(), tmp_path / "good" / "1", name="good", version="1")
    bad = ferry.save(linear_model(), tmp_path / "bad" / "1", name="bad", version="1")
    break_manifest(bad.root, tuning=5)
    with running_server(tmp_path) as s:
        assert post(s, "/v2/models/good/infer", infer_body(np.ones((1, 4), np.float32)))[0] == 200
        index = {r["name"]: r for r in json.loads(post(s, "/v2/repository/index", b"{}")[2])}
        assert index["bad"]["state"] == "UNAVAILABLE" and "tuning" in index["bad"]["reason"]
        assert get(s, "/v2/health/ready")[0] == 503  # not every model is up, and it says so


def test_an_unreadable_model_config_leaves_the_rest_serving(tmp_path):
    ferry.save(linear_model(), tmp_path / "good" / "1", name="good", version="1")
    ferry.save(linear_model(), tmp_path / "bad" / "1", name="bad", version="1")
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with running_server(tmp_path) as s:
        assert post(s, "/v2/models/good/infer", infer_body(np.ones((1, 4), np.float32)))[0] == 200
        index = {r["name"]: r for r in json.loads(post(s, "/v2/repository/index", b"{}")[2])}
        assert index["bad"]["state"] == "UNAVAILABLE" and "not valid JSON" in index["bad"]["reason"]
        assert get(s, "/v2/health/ready")[0] == 503


def test_the_poller_survives_a_broken_version_and_loads_the_next_good_one(tmp_path):
    ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    with running_server(tmp_path, "--model-control", "poll", "--poll-interval", "0.2") as s:
        bad = ferry.save(linear_model(2.0), tmp_path / "m" / "2", name="m", version="2")
        break_manifest(bad.root, tuning=5)
        wait_until(lambda: any(r["version"] == "2" for r in json.loads(post(s, "/v2/repository/index", b"{}")[2])))
        ferry.save(linear_model(3.0), tmp_path / "m" / "3", name="m", version="3")
        wait_until(lambda: post(s, "/v2/models/m/versions/3/infer", infer_body(np.ones((1, 4), np.float32)))[0] == 200)
        s.process.send_signal(signal.SIGTERM)
        assert s.process.wait(timeout=30) == 0


@pytest.mark.parametrize("name", ["..%2Fx", "%2e%2e", "..", ".hidden", "a%2Fb", "%2Fetc"])
def test_explicit_load_takes_a_name_never_a_path(tmp_path, name):
    ferry.save(linear_model(), tmp_path / "repo" / "m" / "1", name="m", version="1")
    ferry.save(linear_model(), tmp_path / "outside" / "1", name="outside", version="1")
    with running_server(tmp_path / "repo", "--model-control", "explicit") as s:
        status, _, data = post(s, f"/v2/repository/models/{name}/load", b"{}")
        assert status in (400, 404), data
        assert status != 404 or "no such endpoint" in json.loads(data)["error"]
        status, _, _ = post(s, f"/v2/repository/models/{(tmp_path / 'outside').as_posix()}/load", b"{}")
        assert status in (400, 404)
        assert "outside" not in get(s, "/metrics")[1].decode()


def test_admin_writes_refuse_cross_site_requests_and_metrics_port_asks_for_the_key(tmp_path):
    ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    ferry.save(linear_model(2.0), tmp_path / "m" / "2", name="m", version="2")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"version_policy": {"all": True}}))
    split = json.dumps({"split": {"2": 100}}).encode()
    with running_server(tmp_path) as s:
        status, _, _ = post(s, "/v2/models/m/traffic", split, {"Content-Type": "text/plain"})
        assert status == 403
        status, _, _ = post(s, "/v2/models/m/traffic", split,
                            {"Content-Type": "application/json", "Origin": "http://evil.example"})  # fmt: skip
        assert status == 403
        assert json.loads(get(s, "/v2/models/m/traffic")[1])["split"] == {}  # nothing moved
        assert post(s, "/v2/models/m/traffic", split, {"Content-Type": "application/json"})[0] == 200
    metrics_port = free_port()
    with running_server(tmp_path, "--api-key", "k3y", "--metrics-port", str(metrics_port)) as s:
        assert get(f"127.0.0.1:{metrics_port}", "/metrics")[0] == 401
        assert get(f"127.0.0.1:{metrics_port}", "/metrics", {"x-api-key": "k3y"})[0] == 200


def serve_cmd(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ferry", "serve", str(path), *args]


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port"])
def test_a_port_in_use_is_one_line_naming_the_flag(tmp_path, flag):
    import socket

    ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--grpc-port" if flag == "--http-port" else "--http-port"
        run = subprocess.run(serve_cmd(tmp_path, flag, str(port), other, str(free_port())),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode != 0
    assert f"127.0.0.1:{port}" in run.stderr and flag in run.stderr
    assert "Traceback" not in run.stderr


def test_a_server_whose_every_model_failed_exits_with_the_reasons(tmp_path):
    bad = ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    (bad.root / "model.onnx").write_bytes(b"broken")
    args = ("--http-port", str(free_port()), "--grpc-port", str(free_port()))
    run = subprocess.run(serve_cmd(tmp_path, *args), capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "no model could be loaded" in run.stderr and "size is 6 bytes" in run.stderr


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    with running_server(tmp_path, "--workers", "2") as s:
        children = subprocess.run(["pgrep", "-P", str(s.process.pid)], capture_output=True, text=True).stdout.split()
        assert children
        s.process.kill()
        s.process.wait()
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() and _alive(int(pid)) for pid in children), 20)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_requests_still_queued_when_the_grace_period_ends_get_503(tmp_path):
    ferry.save(slow_model(rounds=2000), tmp_path / "slow" / "1", name="slow", version="1")
    with running_server(tmp_path, "--max-batch-size", "1", "--grace-seconds", "1") as s:
        results, code = sigterm_during(s, calls=40, after=0.3)  # 40 runs of about 60 ms: past the 1 s grace
        assert code == 0
    assert 500 not in results and 503 in results, results


def test_loading_a_model_does_not_block_other_requests(tmp_path):
    ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    ferry.save(slow_model(rounds=3000), tmp_path / "big" / "1", name="big", version="1")
    with running_server(tmp_path, "--model-control", "explicit") as s:
        assert post(s, "/v2/repository/models/big/unload", b"{}")[0] == 200
        loader = threading.Thread(target=lambda: post(s, "/v2/repository/models/big/load", b"{}"))
        started = time.monotonic()
        loader.start()
        worst = 0.0
        while loader.is_alive():
            t0 = time.monotonic()
            assert get(s, "/v2/health/live")[0] == 200
            worst = max(worst, time.monotonic() - t0)
        load_seconds = time.monotonic() - started
    assert worst < max(0.5, load_seconds / 2), (worst, load_seconds)
