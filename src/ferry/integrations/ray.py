"""ferry on Ray (`pip install 'ferry[ray]'`): Ray Data for offline prediction, Ray Serve for online.

Offline, two ways:

- your own dataset: ``ds.map_batches(FerryPredictor, fn_constructor_kwargs={"package": path},
  compute=ActorPoolStrategy(size=4), batch_size=32)`` adds the model's outputs as columns (the package is
  loaded once per actor; other columns, such as an id, pass through). `predict_dataset` does that call.
  Ray Data does not keep row order: keep an id column if you need it.
- `ferry predict PKG INPUTS -o OUT --ray [--actors N] [--ray-address HOST:PORT]`: the local job's
  batches (`ferry.batch`) run on an actor pool instead of in this process, each batch saved as it comes
  back, so the output is in input order, written whole, and an interrupted run resumes (`RayCompute`).

Online: `deployment(package)` is a Ray Serve application that speaks the Open Inference Protocol's REST
routes (tritonclient and `ferry.client` work against it unchanged) with `@serve.batch` fed by ferry's
batching settings; `ferry serve PKG --ray` runs it, and `serve run ferry.integrations.ray:app
package=PATH` takes it from Ray's own CLI.

Ray binds its ports on every interface; the tests run it inside network namespaces (tests/netns.py).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

try:
    import ray
    from ray.data import ActorPoolStrategy
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("ferry.integrations.ray needs Ray: pip install 'ferry[ray]'") from exc


def _predictor(package: str | os.PathLike[str], backend: str, threads: int | None) -> Any:
    import ferry

    config = ferry.Config(ferry.load(package))
    config.set_backend(backend)
    if threads:
        config.set_cpu_threads(threads)
    return ferry.create_predictor(config)


class FerryPredictor:
    """A callable class for `Dataset.map_batches`: the model's inputs are read from the columns of the same
    names, its outputs added as columns. `threads` is the engine's threads per actor: give each actor as
    many CPUs (`num_cpus=`) so that actors on one node do not fight over cores."""

    def __init__(self, package: str | os.PathLike[str], backend: str = "auto", threads: int | None = 1):
        self.predictor = _predictor(package, backend, threads)
        self.inputs = [s.name for s in self.predictor.config.package.signature.inputs]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ferry.errors import InputError

        missing = [n for n in self.inputs if n not in batch]
        if missing:
            raise InputError(f"the dataset has no column(s) {missing} for the model's inputs; columns: {list(batch)}")
        feeds = {n: np.stack(batch[n]) if batch[n].dtype == object else batch[n] for n in self.inputs}
        return {**batch, **self.predictor.predict(feeds)}


def predict_dataset(
    dataset: Any,
    package: str | os.PathLike[str],
    actors: int = 2,
    batch_size: int = 32,
    backend: str = "auto",
    threads: int = 1,
) -> Any:
    """`dataset` with the model's outputs added, computed by `actors` actors of `threads` CPUs each."""
    return dataset.map_batches(
        FerryPredictor,
        fn_constructor_kwargs={"package": str(package), "backend": backend, "threads": threads},
        compute=ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=threads,
    )


class _JobBatches:
    """An actor of `RayCompute`: runs whole batches of a `ferry.batch.BatchJob`, by index."""

    def __init__(self, package: str, samples: Any, batch_size: int, backend: str, threads: int | None):
        from ferry.batch import BatchJob

        if isinstance(samples, ray.ObjectRef):
            samples = ray.get(samples)
        self.job = BatchJob(_predictor(package, backend, threads), samples, batch_size)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for index in rows["index"]:
            buffer = io.BytesIO()
            np.savez(buffer, **self.job.predictor.predict(self.job.batch_inputs(int(index))))
            results.append(buffer.getvalue())
        count = len(rows["index"])
        return {"index": rows["index"], "npz": np.array(results, dtype=object), "node": np.array([self.node] * count)}


class RayCompute:
    """Runs a job's pending batches on a Ray actor pool (the `compute` of `ferry.batch.run_job`); `nodes`
    counts the batches each Ray node ran."""

    def __init__(self, job: Any, actors: int = 2, threads: int = 1, backend: str = "auto", address: str | None = None):
        self.job, self.actors, self.threads, self.backend, self.address = job, actors, threads, backend, address
        self.nodes: Counter[str] = Counter()

    def __call__(self, pending: list[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        if not pending:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # ferry predict draws its own
        job = self.job
        package = job.predictor.config.package
        dataset = ray.data.from_items([{"index": i} for i in pending], override_num_blocks=min(len(pending), 200))
        kwargs = {"package": str(package.root or package.model_path), "samples": ray.put(job.samples),
                  "batch_size": job.batch_size, "backend": self.backend, "threads": self.threads}  # fmt: skip
        done = dataset.map_batches(_JobBatches, fn_constructor_kwargs=kwargs, batch_size=1, batch_format="numpy",
                                   compute=ActorPoolStrategy(size=self.actors), num_cpus=self.threads)  # fmt: skip
        for row in done.iter_rows():
            self.nodes[str(row["node"])] += 1
            with np.load(io.BytesIO(row["npz"]), allow_pickle=False) as data:
                yield int(row["index"]), {k: data[k] for k in data.files}
