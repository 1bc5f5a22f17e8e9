"""Every error ferry raises on purpose.

The tree::

    FerryError                      base of all of ours; catch this to catch everything
    ├── PackageError                a model package cannot be trusted or read                      (400)
    │   ├── ManifestError           ferry.json is missing, not JSON, or breaks the schema
    │   ├── ChecksumError           a file's sha256 or size differs from the manifest (tampered, truncated)
    │   ├── UnsafePathError         an external-data path points outside the package
    │   ├── SignatureMismatchError  the manifest's signature disagrees with the graph
    │   └── UnsupportedModelError   opset or op that the chosen backend cannot run
    ├── ConversionError             a converter failed, or its numeric check did not pass
    │   └── ParityError             converted outputs differ from the source beyond tolerance
    ├── ExportError                 an export target cannot be written (its runtime files cannot be had)
    ├── InputError                  inputs do not match the signature (name, dtype, rank, dimension) (400)
    │   └── RequestError            a malformed request to the server (JSON, protobuf, binary sizes)
    │       └── PayloadTooLargeError    the body is over the server's limit                    (413)
    ├── ServingError                the server cannot answer this request now
    │   ├── UnauthorizedError       no API key, or the wrong one                               (401)
    │   ├── ForbiddenError          an admin write from another origin or not as JSON          (403)
    │   ├── ModelNotFoundError      no such model or version                                   (404)
    │   ├── UnavailableError        not ready, unloading, or the queue is full                 (503)
    │   └── DeadlineError           the request waited past its timeout                        (504)
    ├── ConfigError                 an invalid or contradictory Config                             (400)
    │   └── BackendUnavailableError the backend or provider asked for is not installed
    └── BackendError                the engine failed while loading or running a valid model

The number in brackets is the HTTP status the server answers with (each class holds it, with its gRPC
code; anything else a request meets is a logged 500 / INTERNAL). `status_for` looks it up and
`error_for_status` goes the other way, for clients.

Messages name the model, the tensor or file, what was expected and what came, so that the CLI can
print them as one line and a user knows what to change.
"""

from __future__ import annotations

from typing import Any


class FerryError(Exception):
    """Base class of every error ferry raises on purpose.

    `http_status` and `grpc_code` say what the server answers when a request meets this error; a subclass
    inherits its parent's until it sets its own, so the lookup walks the class tree (`status_for`).
    """

    http_status = 500
    grpc_code = "INTERNAL"


class PackageError(FerryError):
    """A model package cannot be trusted or read."""

    http_status, grpc_code = 400, "INVALID_ARGUMENT"  # asked to load a package that does not verify


class ManifestError(PackageError):
    """ferry.json is missing, not valid JSON, or breaks the schema."""


class ChecksumError(PackageError):
    """A file's sha256 or size differs from what the manifest records."""


class UnsafePathError(PackageError):
    """A path inside the model (external data) escapes the package folder."""


class SignatureMismatchError(PackageError):
    """The manifest's signature and the ONNX graph's inputs/outputs disagree."""


class UnsupportedModelError(PackageError):
    """The model uses an opset or op that the chosen backend cannot run."""


class ConversionError(FerryError):
    """A converter failed."""


class ParityError(ConversionError):
    """The converted model's outputs differ from the source model's beyond tolerance. `failures` says what
    differs (for callers that word the error their own way); `report` is the comparison's report, when
    the outputs could be compared at all (not when their count or shapes differ)."""

    def __init__(self, message: str, failures: list[str] | None = None, report: Any = None):
        super().__init__(message)
        self.failures = failures or [message]
        self.report = report


class OptimizeError(FerryError):
    """An optimizer pass failed; the message names it and the passes before it."""


class ExportError(FerryError):
    """An export target cannot be written: the runtime files it ships cannot be had, or the model does not fit."""


class InputError(FerryError):
    """Inputs given to a predictor do not match the model's signature."""

    http_status, grpc_code = 400, "INVALID_ARGUMENT"


class RequestError(InputError):
    """A request to the server is malformed: bad JSON or protobuf, sizes that do not match the data."""


class PayloadTooLargeError(RequestError):
    """The request body is over the server's size limit."""

    http_status, grpc_code = 413, "RESOURCE_EXHAUSTED"


class ServingError(FerryError):
    """The server cannot answer this request now."""


class UnauthorizedError(ServingError):
    """No API key, or the wrong one."""

    http_status, grpc_code = 401, "UNAUTHENTICATED"


class ForbiddenError(ServingError):
    """A write to an admin endpoint from another origin, or not as JSON (the shape of a cross-site request)."""

    http_status, grpc_code = 403, "PERMISSION_DENIED"


class ModelNotFoundError(ServingError):
    """No model or version of that name is loaded."""

    http_status, grpc_code = 404, "NOT_FOUND"


class UnavailableError(ServingError):
    """The model is not ready, is unloading, or its queue is full; retry later."""

    http_status, grpc_code = 503, "UNAVAILABLE"


class DeadlineError(ServingError):
    """The request waited in the queue past its timeout and was dropped unrun."""

    http_status, grpc_code = 504, "DEADLINE_EXCEEDED"


class ConfigError(FerryError):
    """A Config option is invalid or contradicts another."""

    http_status, grpc_code = 400, "FAILED_PRECONDITION"


class BackendUnavailableError(ConfigError):
    """The backend or execution provider asked for is not installed."""


class BackendError(FerryError):
    """The inference engine failed on a model that passed validation."""


def status_for(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, gRPC code name) for an error; 500 / INTERNAL for anything not ours to explain."""
    if isinstance(exc, FerryError):
        return exc.http_status, exc.grpc_code
    return 500, "INTERNAL"


# What a client raises for a server's answer: the first class listed whose status matches.
_ANSWERED = (InputError, PayloadTooLargeError, UnauthorizedError, ForbiddenError, ModelNotFoundError,
             UnavailableError, DeadlineError)  # fmt: skip


def error_for_status(http_status: int | None = None, grpc_code: str | None = None) -> type[FerryError]:
    """The error class a client raises for an HTTP status or a gRPC code name; ServingError if none fits."""
    return next(
        (cls for cls in _ANSWERED if cls.http_status == http_status or cls.grpc_code == grpc_code), ServingError
    )


__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ChecksumError",
    "ConfigError",
    "ConversionError",
    "DeadlineError",
    "FerryError",
    "ForbiddenError",
    "InputError",
    "ManifestError",
    "ModelNotFoundError",
    "PackageError",
    "ParityError",
    "PayloadTooLargeError",
    "RequestError",
    "ServingError",
    "SignatureMismatchError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsafePathError",
    "UnsupportedModelError",
]
