"""Soak: `ferry serve` under steady load for a bounded time; errors and resident memory over time.

    python benchmarks/soak.py --minutes 10

It serves the tiny MLP, measures peak req/s with wrk at 16 connections, then picks the connection
count whose throughput is closest to 80% of that peak and holds it for the whole run. Every 10 s it
samples the server's resident memory from /proc. It reports non-2xx responses, socket errors and RSS
growth from the first sample after warm-up to the last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from serving import make_model, run_wrk, start, stop, wait_ready  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-soak-"))
    pkg = make_model(work)
    port = 18600
    url = f"http://127.0.0.1:{port}/v2/models/mlp/infer"
    proc = start([sys.executable, "-m", "ferry", "serve", str(pkg), "--http-port", str(port), "--grpc-port", "0"])
    try:
        wait_ready(url.replace("/infer", "/ready"))
        lua = work / "oip.lua"
        peak = run_wrk(url, lua, 16, 5)["rps"]
        trial = {c: run_wrk(url, lua, c, 3)["rps"] for c in (1, 2, 3, 4, 6, 8)}
        conns = min(trial, key=lambda c: abs(trial[c] - 0.8 * peak))
        print(f"peak {peak:.0f} req/s at 16 connections; soaking at {conns} ({trial[conns]:.0f} req/s)", flush=True)
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            start_t = time.monotonic()
            while not done.wait(10):
                samples.append((time.monotonic() - start_t, rss_kb(proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_wrk(url, lua, conns, int(args.minutes * 60))
        done.set()
        sampler.join()
    finally:
        stop(proc)
    warm = samples[min(3, len(samples) - 1)][1]  # after 30 s: arenas and caches have settled
    last = samples[-1][1]
    print(f"requests/s {result['rps']:.0f}, p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
          f"non-2xx {result['errors']:.0f}")  # fmt: skip
    print(
        f"RSS after 30 s {warm / 1024:.1f} MiB, at the end {last / 1024:.1f} MiB, "
        f"growth {100 * (last - warm) / warm:.2f}%"
    )
    print(
        "RSS samples (s, MiB): "
        + ", ".join(f"{t:.0f}:{kb / 1024:.1f}" for t, kb in samples[:: max(1, len(samples) // 12)])
    )


if __name__ == "__main__":
    main()
