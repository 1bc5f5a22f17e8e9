"""A real `ferry serve` in a subprocess on free loopback ports, and models to serve."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ferry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.process.stderr.read().decode() if self.process.stderr else ""


@contextlib.contextmanager
def running_server(path: Path, *args: str, timeout: float = 60.0) -> Iterator[Server]:
    http_port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "ferry", "serve", str(path), "--http-port", str(http_port)]
    cmd += ["--grpc-port", str(grpc_port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    server = Server(proc, http_port, grpc_port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ferry serve exited with {proc.returncode}: {server.log()}")
            try:
                with urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def linear_model(scale: float = 1.0) -> onnx.ModelProto:
    """y[batch,3] = x[batch,4] @ (W * scale): small, exact, and easy to check."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(W * scale, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def slow_model(rounds: int = 120, width: int = 1024) -> onnx.ModelProto:
    """A model that takes tens of milliseconds per run (repeated large matmuls), for queue tests."""
    rng = np.random.default_rng(1)
    m = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [prev, "M"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("ReduceSum", [prev, "axes"], ["y"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(m, "M"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def text_model() -> onnx.ModelProto:
    """t[batch] (strings) -> echo[batch]: what comes in must come back byte for byte."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["t"], ["echo"])],
        "text",
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def log_model() -> onnx.ModelProto:
    """y = log(x): NaN for negative x, -inf for 0, +inf for inf; outputs JSON has no numbers for."""
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"])],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def make_repository(root: Path) -> Path:
    """REPO/linear/{1,2} (version 2 doubles the weights) and REPO/slow/1."""
    ferry.save(linear_model(1.0), root / "linear" / "1", name="linear", version="1")
    ferry.save(linear_model(2.0), root / "linear" / "2", name="linear", version="2")
    ferry.save(slow_model(), root / "slow" / "1", name="slow", version="1")
    return root


def post(server, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(server if isinstance(server, str) else server.http, timeout=30)
    conn.request("POST", path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def get(server, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server if isinstance(server, str) else server.http, timeout=30)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def infer_body(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}
    ).encode()


def sigterm_during(server: Server, calls: int, after: float, path: str = "/v2/models/slow/infer") -> tuple[list, int]:
    """Start `calls` requests to the slow model at once, send SIGTERM `after` seconds later; returns their
    statuses and the server's exit code."""
    import threading

    results: list[int] = []
    body = infer_body(np.ones((1, 1024), np.float32))
    threads = [threading.Thread(target=lambda: results.append(post(server, path, body)[0])) for _ in range(calls)]
    for t in threads:
        t.start()
    time.sleep(after)
    server.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    return results, server.process.wait(timeout=60)
