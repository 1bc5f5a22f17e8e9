"""Simulated hosts for servers that bind every interface (KServe's model server, Ray): each host is a
network namespace of its own (`ip netns`, loopback up), optionally joined to others by veth pairs on
10.77.0.0/24, with a private /tmp/ray and /dev/shm (a mount namespace per command), so that two Ray nodes
on this machine do not share their session folders or object stores. Needs root and iproute2, as CI has.

    with Hosts(2) as (a, b):          # a is 10.77.0.1, b is 10.77.0.2
        server = a.start(["python", "-m", "..."])
        result = a.run(["python", "-c", "..."])

Everything a test started is stopped by PID when the block ends, and the namespaces are deleted.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import uuid
from pathlib import Path

# For client scripts that run on a host: prepend it, then `wait_ready(tritonclient_http_client, model, seconds)`.
WAIT_READY = r"""
import time as _time


def wait_ready(client, model, seconds):
    deadline = _time.time() + seconds
    while True:
        try:
            if client.is_server_ready() and client.is_model_ready(model):
                return
        except Exception:  # not listening yet
            pass
        if _time.time() > deadline:
            raise SystemExit(f"{model} was not ready after {seconds} s")
        _time.sleep(0.5)
"""


class Host:
    def __init__(self, name: str, address: str | None, scratch: Path):
        self.name = name
        self.address = address
        self.scratch = scratch  # its /tmp and /dev/shm live under here
        self.processes: list[subprocess.Popen] = []

    def _wrap(self, argv: list[str]) -> list[str]:
        ray, shm = self.scratch / "ray", self.scratch / "shm"
        ray.mkdir(parents=True, exist_ok=True)
        shm.mkdir(parents=True, exist_ok=True)
        inner = (  # Ray keeps its sessions in /tmp/ray and its object store in /dev/shm: one of each per host
            f"mkdir -p /tmp/ray && mount --bind {shlex.quote(str(shm))} /dev/shm && "
            f"mount --bind {shlex.quote(str(ray))} /tmp/ray && exec {shlex.join(argv)}"
        )
        return ["ip", "netns", "exec", self.name, "unshare", "-m", "--propagation", "private", "sh", "-c", inner]

    def run(
        self, argv: list[str], timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run to the end on this host; raises with its output if it fails."""
        result = subprocess.run(self._wrap(argv), capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(
                f"{argv[:3]} failed on {self.name} ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
        """Start in the background on this host; stopped when the Hosts block ends."""
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(self._wrap(argv), stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the process and what it started
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.processes.clear()


class Hosts:
    def __init__(self, count: int, scratch: Path):
        self.tag = uuid.uuid4().hex[:6]
        self.hosts = [
            Host(f"ferry-{self.tag}-{i}", f"10.77.0.{i + 1}" if count > 1 else None, scratch / f"host{i}")
            for i in range(count)
        ]
        self.bridge = f"fb{self.tag}"

    def __enter__(self) -> list[Host]:
        try:
            for host in self.hosts:
                _ip("netns", "add", host.name)
                _ip("-n", host.name, "link", "set", "lo", "up")
            if len(self.hosts) > 1:
                # a bridge in the first host's namespace, one veth pair per other host
                first = self.hosts[0]
                _ip("-n", first.name, "link", "add", self.bridge, "type", "bridge")
                _ip("-n", first.name, "addr", "add", f"{first.address}/24", "dev", self.bridge)
                _ip("-n", first.name, "link", "set", self.bridge, "up")
                for i, host in enumerate(self.hosts[1:], start=1):
                    near, far = f"v{self.tag}a{i}", f"v{self.tag}b{i}"
                    _ip("link", "add", near, "type", "veth", "peer", "name", far)
                    _ip("link", "set", near, "netns", first.name)
                    _ip("link", "set", far, "netns", host.name)
                    _ip("-n", first.name, "link", "set", near, "master", self.bridge)
                    _ip("-n", first.name, "link", "set", near, "up")
                    _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", far)
                    _ip("-n", host.name, "link", "set", far, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.hosts

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            host.stop()
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
