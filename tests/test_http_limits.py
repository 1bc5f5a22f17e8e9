"""`serving/http_limits.py`: slow, idle and greedy HTTP clients are cut off, and health keeps answering.
Against a real `ferry serve`, with raw sockets, so that each hook into uvicorn's protocol is exercised."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

import ferry
from serving_helpers import get, infer_body, linear_model, post, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    ferry.save(linear_model(), root / "m" / "1", name="m", version="1")
    args = ("--header-timeout", "0.5", "--body-timeout", "0.5", "--idle-timeout", "1", "--max-header-kb", "8",
            "--max-connections", "64")  # fmt: skip
    with running_server(root, *args) as s:
        yield s


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, chunks = time.monotonic(), []
    sock.settimeout(limit)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


def test_half_a_request_line_is_cut_off_with_408(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/m/in")
        data, waited = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408") and waited < 5


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        data, waited = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408") and waited < 5


def test_a_body_that_stops_arriving_is_cut_off(server):
    with connect(server) as sock:
        sock.sendall(b'POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inp')
        data, waited = read_until_closed(sock)
    assert waited < 5  # closed, whatever it managed to say


def test_headers_over_the_cap_get_431_and_cost_no_memory(server):
    before = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{server.process.pid}/status").read_text()).group(1))
    socks = []
    for _ in range(20):
        sock = connect(server)
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(64):
                sock.sendall(b"X-Pad: " + b"a" * 32768 + b"\r\n")  # 2 MiB each, if the server kept reading
        except OSError:
            pass  # the server closed it: what we want
        socks.append(sock)
    answers = [read_until_closed(s)[0] for s in socks]
    for s in socks:
        s.close()
    assert all(a.startswith(b"HTTP/1.1 431") or a == b"" for a in answers)
    assert any(a.startswith(b"HTTP/1.1 431") for a in answers)
    after = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{server.process.pid}/status").read_text()).group(1))
    assert (after - before) / 1024 < 50


def test_an_idle_keep_alive_connection_is_closed(server):
    import http.client

    conn = http.client.HTTPConnection(server.http, timeout=10)
    conn.request("GET", "/v2/health/live")
    assert conn.getresponse().read()
    data, waited = read_until_closed(conn.sock)
    assert data == b"" and waited < 5
    conn.close()


def test_health_answers_while_many_slow_clients_hold_connections(server):
    hogs = []
    try:
        for _ in range(300):  # far past --max-connections 64
            sock = connect(server)
            sock.sendall(b"GET /v2/health/li")
            hogs.append(sock)
        for _ in range(5):
            started = time.monotonic()
            assert get(server, "/v2/health/live")[0] == 200
            assert time.monotonic() - started < 1.0
        status, _, _ = post(server, "/v2/models/m/infer", infer_body(np.ones((1, 4), np.float32)))
        assert status == 200
        open_fds = len(os.listdir(f"/proc/{server.process.pid}/fd"))
        assert open_fds < 64 + 100  # the cap, plus the model's, gRPC's and the runtime's own
    finally:
        for sock in hogs:
            sock.close()
