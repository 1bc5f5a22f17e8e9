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
    from ferry.inference import create_predictor, make_config

    return create_predictor(make_config(package, backend, threads or None))


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


# --- online: Ray Serve ---------------------------------------------------------------------------------

from ray import serve  # noqa: E402 (after the offline part, which needs only ray)


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0]) if feeds else 1


@serve.deployment
class FerryDeployment:
    """One replica: the package's predictor behind the Open Inference Protocol's REST routes, with
    concurrent requests merged by `@serve.batch` (counted in rows, as ferry's own batcher counts them)."""

    def __init__(self, package: str, name: str, backend: str, threads: int | None, max_batch_size: int,
                 max_delay_ms: float) -> None:  # fmt: skip
        self.predictor = _predictor(package, backend, threads)
        self.package = self.predictor.config.package
        self.name = name
        from ferry.serving.served import batchable

        self._batched.set_max_batch_size(max_batch_size if batchable(self.package) else 1)
        self._batched.set_batch_wait_timeout_s(max_delay_ms / 1000)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.001, batch_size_fn=lambda items: sum(map(_rows, items)))
    async def _batched(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        import asyncio

        return await asyncio.to_thread(self._run, items)

    def _run(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        """Requests of one merge key run as one batch (ferry's batcher's rule); each gets its rows back."""
        from ferry.serving.batching import merge, merge_key, split

        groups: dict[tuple, list[int]] = {}
        for i, feeds in enumerate(items):
            groups.setdefault(merge_key(feeds), []).append(i)
        answers: list[Any] = [None] * len(items)
        for members in groups.values():
            try:
                out = self.predictor.predict(merge([items[i] for i in members]), validate=False)
            except Exception as exc:  # noqa: BLE001 (every request of the batch hears of it)
                out = exc
            parts = (
                [out] * len(members) if isinstance(out, Exception) else split(out, [_rows(items[i]) for i in members])
            )
            for i, part in zip(members, parts):
                answers[i] = part
        return answers

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        from ferry.errors import ModelNotFoundError
        from ferry.protocol import datatypes
        from ferry.serving.codec import HEADER_LENGTH, decode_rest, encode_rest, header_length
        from ferry.serving.http_app import error_response

        parts = request.url.path.strip("/").split("/")
        try:
            if parts[:2] == ["v2", "health"]:
                return JSONResponse({"live": True} if parts[-1] == "live" else {"ready": True})
            if parts == ["v2"]:
                return JSONResponse({"name": "ferry on Ray Serve", "extensions": []})
            if len(parts) < 3 or parts[:2] != ["v2", "models"]:
                return JSONResponse({"error": f"no route {request.url.path}"}, status_code=404)
            if parts[2] != self.name:
                raise ModelNotFoundError(f"unknown model {parts[2]!r}; this deployment serves {self.name!r}")
            action = parts[3] if len(parts) > 3 else ""
            if request.method == "GET" and action == "":
                sig = self.package.signature
                return JSONResponse({"name": self.name, "versions": [self.package.manifest.version],
                                     "platform": "onnx_onnxv1", "inputs": datatypes.tensor_metadata(sig.inputs),
                                     "outputs": datatypes.tensor_metadata(sig.outputs)})  # fmt: skip
            if request.method == "GET" and action == "ready":
                return JSONResponse({"name": self.name, "ready": True})
            if request.method != "POST" or action != "infer":
                return JSONResponse({"error": f"no route {request.method} {request.url.path}"}, status_code=404)
            req = decode_rest(await request.body(), header_length(request.headers.get(HEADER_LENGTH)))
            feeds = self.predictor.check_inputs(req.inputs)
            result = await self._batched(feeds)
            if isinstance(result, Exception):
                raise result
            if req.outputs:
                result = {k: result[k] for k in req.outputs if k in result}
            payload, json_length = encode_rest(req, result, self.name, self.package.manifest.version)
        except Exception as exc:  # noqa: BLE001 (the status comes from the error's class)
            return error_response(exc)
        headers = {} if json_length is None else {HEADER_LENGTH: str(json_length)}
        media = "application/json" if json_length is None else "application/octet-stream"
        return Response(payload, media_type=media, headers=headers)


def deployment(
    package: str | os.PathLike[str],
    *,
    name: str | None = None,
    backend: str = "auto",
    threads: int = 1,
    max_batch_size: int = 8,
    max_delay_ms: float = 1.0,
    replicas: int = 1,
    max_replicas: int | None = None,
    target_ongoing_requests: float = 16.0,
) -> Any:
    """A Ray Serve application serving `package` (run it with `serve.run(app, route_prefix="/")`).
    `max_replicas` above `replicas` turns on Ray's autoscaling between the two; each replica asks Ray for
    `threads` CPUs and gives its engine as many threads."""
    import ferry

    pkg = ferry.load(package)  # a broken package fails here, with ferry's message, not in a replica
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if max_replicas is not None and max_replicas > replicas:
        scaling = {"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                          "target_ongoing_requests": target_ongoing_requests}}  # fmt: skip
    return FerryDeployment.options(
        name=f"ferry-{pkg.name}", ray_actor_options={"num_cpus": threads}, max_ongoing_requests=256, **scaling
    ).bind(str(package), name or pkg.name, backend, threads, max_batch_size, max_delay_ms)


def app(args: dict[str, str]) -> Any:
    """For Ray's own CLI: `serve run ferry.integrations.ray:app package=PATH [max_batch_size=16 ...]`."""
    ints = {"threads", "max_batch_size", "replicas", "max_replicas"}
    floats = {"max_delay_ms", "target_ongoing_requests"}
    options = {k: int(v) if k in ints else float(v) if k in floats else v for k, v in args.items() if k != "package"}
    return deployment(args["package"], **options)


def serve_package(package: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000,
                  address: str | None = None, **options: Any) -> None:  # fmt: skip
    """`ferry serve PKG --ray`: start (or join) Ray, deploy, and block until interrupted."""
    import time

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(package, **options), name="ferry", route_prefix="/")
    print(f"ferry on Ray Serve: http://{host}:{port}/v2 (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
