"""A ferry package served by KServe's own Python model server (`pip install 'ferry[kserve]'`).

    python -m ferry.integrations.kserve /mnt/models --model_name digits --http_port 8080 --grpc_port 8081

or in code::

    from ferry.integrations.kserve import FerryModel
    kserve.ModelServer().start([FerryModel("digits", "/mnt/models")])

`FerryModel` is a `kserve.Model`: KServe's server does the protocol (v2 REST and gRPC), ferry's predictor
the work, off the event loop. Requests are what `ferry serve` takes: tensors checked against the
signature (a mismatch is KServe's InvalidInput, a 400), encoded images as BYTES for packages with image
preprocessing, with `labels` and `scores` added after a top-k step. Outputs go back as raw bytes to gRPC
callers (tritonclient's gRPC reader takes nothing else) and to REST callers that ask for binary data.
KServe's REST server binds every interface (0.0.0.0, fixed in kserve/protocol/rest/server.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np

from ferry.errors import InputError
from ferry.processing.image import MAX_PIXELS
from ferry.protocol import datatypes

try:
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
except ImportError as exc:  # pragma: no cover - the message is the test
    raise ImportError("ferry.integrations.kserve needs KServe: pip install 'ferry[kserve]'") from exc


class FerryModel(kserve.Model):
    """A ferry package as a KServe model. `load()` (called by the server, or by you) creates the predictor."""

    def __init__(
        self,
        name: str,
        package: str | os.PathLike[str],
        backend: str = "auto",
        threads: int | None = None,
        max_image_pixels: int | None = MAX_PIXELS,
    ):
        super().__init__(name)
        self.package_path = package
        self.backend = backend
        self.threads = threads
        self.max_image_pixels = max_image_pixels
        self.predictor: Any = None

    def load(self) -> bool:
        from ferry.inference import create_predictor, make_config

        self.predictor = create_predictor(make_config(self.package_path, self.backend, self.threads or None))
        self.ready = True
        return self.ready

    @property
    def package(self):  # noqa: ANN201 (a ModelPackage; imported lazily)
        return self.predictor.config.package

    def get_input_types(self) -> list[dict[str, Any]]:
        return datatypes.tensor_metadata(self.package.signature.inputs)

    def get_output_types(self) -> list[dict[str, Any]]:
        return datatypes.tensor_metadata(self.package.signature.outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What a request does, on numpy arrays: image bytes decoded where the package says, the checked
        prediction, labels and scores after a top-k step. Blocking; `predict` runs it in a thread."""
        from ferry.serving import pipeline

        images = pipeline.wants_decoding(self.package, inputs)
        if images:
            inputs = pipeline.decode_images(self.package, inputs, self.max_image_pixels)
        outputs = self.predictor.predict(inputs)
        return pipeline.label_outputs(self.package, outputs) if images and pipeline.has_topk(self.package) else outputs

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            kind = type(payload).__name__
            raise InvalidInput(f"model {self.name!r} speaks the v2 (Open Inference) protocol; got a {kind}")
        try:
            inputs = {i.name: i.as_numpy() for i in payload.inputs}
            outputs = await asyncio.to_thread(self.run, inputs)
        except InputError as exc:
            raise InvalidInput(str(exc)) from None
        requested = {o.name: (o.parameters or {}) for o in payload.request_outputs or []}
        unknown = sorted(set(requested) - set(outputs))
        if unknown:
            raise InvalidInput(f"model {self.name!r} has no output(s) {unknown}; outputs: {list(outputs)}")
        binary = payload.from_grpc or payload.use_binary_outputs
        infer_outputs = []
        for name, array in outputs.items():
            if requested and name not in requested:
                continue
            out = InferOutput(name=name, shape=list(array.shape), datatype=datatypes.from_numpy(array.dtype))
            out.set_data_from_numpy(array, binary_data=bool(requested.get(name, {}).get("binary_data", binary)))
            infer_outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=infer_outputs,
                             use_binary_outputs=binary)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """KServe's model-server options (`--http_port`, `--grpc_port`, `--model_name`, ...) plus the package."""
    import argparse

    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(parents=[kserve_parser], description="Serve a ferry package with KServe.")
    parser.add_argument("package", nargs="?", default=os.environ.get("STORAGE_URI_PATH", "/mnt/models"),
                        help="The package folder (KServe mounts the model at /mnt/models).")  # fmt: skip
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args, _ = parser.parse_known_args(argv)
    import ferry

    name = args.model_name if args.model_name and args.model_name != "model" else ferry.load(args.package).name
    model = FerryModel(name, args.package, backend=args.backend, threads=args.threads)
    model.load()
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers,
                       enable_grpc=args.enable_grpc).start([model])  # fmt: skip


if __name__ == "__main__":
    main()
