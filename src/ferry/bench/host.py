"""What a benchmark ran on: the CPU, cores, memory, OS, Python, and the versions of ferry and each engine."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from typing import Any

ENGINES = ("onnxruntime", "openvino", "numpy", "torch", "paddlepaddle")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def host_info() -> dict[str, Any]:
    """Read once per run; `load` is the 1-minute load average at that moment (None where unknown)."""
    versions = {name: v for name in ("ferry", *ENGINES) if (v := _version(name)) is not None}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "versions": versions,
        "load": load,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
