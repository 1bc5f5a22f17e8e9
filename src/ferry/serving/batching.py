"""Dynamic batching: requests wait in a queue; worker threads merge compatible ones, run once, split.

`collect` is the policy, a pure function over the queue. `Batcher` owns the queue and the workers (one per
model instance, as Triton's instance count: several batches of one model in flight at once). Results go
back to the asyncio loop that asked, through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry.errors import DeadlineError, FerryError, UnavailableError


class Retired(UnavailableError):
    """This model version was replaced or unloaded after the request found it; look the model up again."""


@dataclass(frozen=True)
class BatchPolicy:
    """How a model's requests are queued and merged (per model, from its config or the command line)."""

    max_batch_size: int = 8  # rows per run; 1 (or a model without a batch axis) turns merging off
    max_delay_ms: float = 1.0  # how long the head of the queue may wait for company
    preferred_batch_sizes: tuple[int, ...] = ()  # run at once when the queue reaches one of these
    max_queue: int = 256  # queued requests beyond this are refused with 503
    timeout_ms: float | None = None  # a request still queued after this is dropped with 504
    instances: int = 1  # batches of this model that may run at the same time


@dataclass
class Pending:
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    rows: int
    enqueued: float = field(default_factory=time.monotonic)
    key: tuple = ()
    times: Any = None  # a tracing.BatchTimes when the request is traced

    def __post_init__(self) -> None:
        # Requests merge only with requests of the same non-batch shapes, dtypes and requested outputs.
        self.key = (merge_key(self.inputs), tuple(self.outputs))


def merge_key(inputs: dict[str, np.ndarray]) -> tuple:
    """Requests with equal keys (names, dtypes, shapes past the batch axis) can run as one batch."""
    return tuple((n, a.dtype, a.shape[1:]) for n, a in sorted(inputs.items()))


def merge(requests: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Requests of one merge key as one batch, in order (a single request is passed through as it is)."""
    if len(requests) == 1:
        return requests[0]
    return {n: np.concatenate([r[n] for r in requests]) for n in requests[0]}


def split(results: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """A batch's results back per request, `rows[i]` rows each, in the order `merge` took them."""
    if len(rows) == 1:
        return [results]
    out, start = [], 0
    for n in rows:
        out.append({k: a[start : start + n] for k, a in results.items()})
        start += n
    return out


def collect(queue: collections.deque[Pending], max_rows: int) -> list[Pending]:
    """Take the head of `queue` and every later request that fits in one batch with it, in order."""
    head = queue.popleft()
    batch, rows = [head], head.rows
    if max_rows <= 1:
        return batch
    kept: list[Pending] = []
    while queue:
        item = queue.popleft()
        if item.key == head.key and rows + item.rows <= max_rows:
            batch.append(item)
            rows += item.rows
        else:
            kept.append(item)
    queue.extendleft(reversed(kept))
    return batch


def _resolve(item: Pending, result: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if item.future.done():
            return  # the client went away and the future was cancelled
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)

    item.loop.call_soon_threadsafe(settle)


class Batcher:
    """One queue and `policy.instances` worker threads for one loaded model version."""

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]],
        policy: BatchPolicy,
        batchable: bool,
        name: str,
        on_batch: Callable[[int, float, list[float]], None] | None = None,
    ):
        self._run = run
        self.policy = policy
        self._max_rows = policy.max_batch_size if batchable else 1
        self._queue: collections.deque[Pending] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = 0
        self._on_batch = on_batch
        self._threads = [
            threading.Thread(target=self._work, name=f"ferry-batcher-{name}-{i}", daemon=True)
            for i in range(max(1, policy.instances))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    async def submit(
        self, inputs: dict[str, np.ndarray], outputs: list[str], times: Any = None
    ) -> dict[str, np.ndarray]:
        """Queue one request and wait for its rows. `times` (a tracing.BatchTimes) gets the moments it was
        queued, started and finished, for the request's trace."""
        loop = asyncio.get_running_loop()
        first = next(iter(inputs.values()))
        item = Pending(inputs, outputs, loop, loop.create_future(), first.shape[0] if first.ndim else 1)
        if times is not None:
            times.enqueued = time.time_ns()
            item.times = times
        with self._cond:
            if self._closing:
                raise Retired("the model version is unloading")
            if len(self._queue) >= self.policy.max_queue:
                raise UnavailableError(f"queue is full ({self.policy.max_queue} requests waiting); retry later")
            self._queue.append(item)
            self._cond.notify()
        return await item.future

    def close(self, drain: bool = True) -> None:
        """Stop taking requests; with `drain`, finish what is queued first."""
        with self._cond:
            self._closing = True
            if not drain:
                while self._queue:
                    _resolve(self._queue.popleft(), error=UnavailableError("the server is shutting down"))
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _wait_for_batch(self) -> list[Pending] | None:
        policy = self.policy
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            # Give the head of the queue a moment to gather company, unless the batch is already full.
            deadline = self._queue[0].enqueued + policy.max_delay_ms / 1000.0
            while self._max_rows > 1 and not self._closing:
                rows = sum(p.rows for p in self._queue)
                if rows >= self._max_rows or rows in policy.preferred_batch_sizes:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._drop_expired()
            if not self._queue:
                return []
            batch = collect(self._queue, self._max_rows)
            self._busy += 1
            return batch

    def _drop_expired(self) -> None:
        if self.policy.timeout_ms is None:
            return
        now = time.monotonic()
        limit = self.policy.timeout_ms / 1000.0
        kept = collections.deque()
        for item in self._queue:
            if item.future.cancelled():
                continue
            if now - item.enqueued > limit:
                _resolve(
                    item,
                    error=DeadlineError(
                        f"waited {1000 * (now - item.enqueued):.0f} ms in the queue, "
                        f"past the {self.policy.timeout_ms:g} ms timeout; not run"
                    ),
                )
            else:
                kept.append(item)
        self._queue.clear()
        self._queue.extend(kept)

    def _work(self) -> None:
        while True:
            batch = self._wait_for_batch()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run_batch([p for p in batch if not p.future.cancelled()])
            finally:
                with self._cond:
                    self._busy -= 1

    def _run_batch(self, batch: list[Pending]) -> None:
        if not batch:
            return
        started = time.monotonic()
        started_ns = time.time_ns()
        waits = [started - p.enqueued for p in batch]
        try:
            results = self._run(merge([p.inputs for p in batch]), batch[0].outputs)
        except FerryError as exc:
            for p in batch:
                _resolve(p, error=exc)
            return
        except Exception as exc:  # an engine fault: every waiting request learns of it
            for p in batch:
                _resolve(p, error=exc)
            return
        rows = sum(p.rows for p in batch)
        if self._on_batch:
            self._on_batch(rows, time.monotonic() - started, waits)
        finished_ns = time.time_ns()
        for p in batch:
            if p.times is not None:
                p.times.started, p.times.finished, p.times.rows = started_ns, finished_ns, rows
        for p, part in zip(batch, split(results, [p.rows for p in batch])):
            _resolve(p, part)
