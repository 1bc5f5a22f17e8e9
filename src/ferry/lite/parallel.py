"""Intra-op parallelism for the numpy kernels: numpy releases the GIL inside its loops and copies, so the
memory-bound parts of a kernel (im2col copies, depthwise multiply-adds) can be split across threads.
Matmuls need none of this: the BLAS library numpy links already runs them on several threads.

FERRY_LITE_THREADS sets the thread count (default: the CPU count, at most 4; 1 turns this off).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

THREADS = int(os.environ.get("FERRY_LITE_THREADS", "0")) or min(os.cpu_count() or 1, 4)
_pool: ThreadPoolExecutor | None = None


def parallel_for(fn: Callable[[int, int], None], n: int, min_work: int = 1, work_per_item: int = 1) -> None:
    """Call fn(start, stop) over [0, n) in one chunk per thread; at once when the work is small."""
    global _pool
    chunks = min(THREADS, n)
    if chunks <= 1 or n * work_per_item < min_work:
        fn(0, n)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="ferry-lite")
    bounds = [n * i // chunks for i in range(chunks + 1)]
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, chunks)]
    fn(bounds[0], bounds[1])
    for f in futures:
        f.result()
