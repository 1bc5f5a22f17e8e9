"""Every error ferry raises on purpose.

The tree::

    FerryError                      base of all of ours; catch this to catch everything
    ├── PackageError                a model package cannot be trusted or read
    │   ├── ManifestError           ferry.json is missing, not JSON, or breaks the schema
    │   ├── ChecksumError           a file's sha256 or size differs from the manifest (tampered, truncated)
    │   ├── UnsafePathError         an external-data path points outside the package
    │   ├── SignatureMismatchError  the manifest's signature disagrees with the graph
    │   └── UnsupportedModelError   opset or op that the chosen backend cannot run
    ├── ConversionError             a converter failed, or its numeric check did not pass
    │   └── ParityError             converted outputs differ from the source beyond tolerance
    ├── InputError                  inputs do not match the signature (name, dtype, rank, dimension)
    │   └── RequestError            a malformed request to the server (JSON, protobuf, binary sizes)
    │       └── PayloadTooLargeError    the body is over the server's limit                    (413)
    ├── ServingError                the server cannot answer this request now
    │   ├── ModelNotFoundError      no such model or version                                   (404)
    │   ├── UnavailableError        not ready, unloading, or the queue is full                 (503)
    │   └── DeadlineError           the request waited past its timeout                        (504)
    ├── ConfigError                 an invalid or contradictory Config
    │   └── BackendUnavailableError the backend or provider asked for is not installed
    └── BackendError                the engine failed while loading or running a valid model

Messages name the model, the tensor or file, what was expected and what came, so that the CLI can
print them as one line and a user knows what to change.
"""

from __future__ import annotations


class FerryError(Exception):
    """Base class of every error ferry raises on purpose."""


class PackageError(FerryError):
    """A model package cannot be trusted or read."""


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
    """The converted model's outputs differ from the source model's beyond tolerance."""


class InputError(FerryError):
    """Inputs given to a predictor do not match the model's signature."""


class RequestError(InputError):
    """A request to the server is malformed: bad JSON or protobuf, sizes that do not match the data."""


class PayloadTooLargeError(RequestError):
    """The request body is over the server's size limit."""


class ServingError(FerryError):
    """The server cannot answer this request now."""


class ModelNotFoundError(ServingError):
    """No model or version of that name is loaded."""


class UnavailableError(ServingError):
    """The model is not ready, is unloading, or its queue is full; retry later."""


class DeadlineError(ServingError):
    """The request waited in the queue past its timeout and was dropped unrun."""


class ConfigError(FerryError):
    """A Config option is invalid or contradicts another."""


class BackendUnavailableError(ConfigError):
    """The backend or execution provider asked for is not installed."""


class BackendError(FerryError):
    """The inference engine failed on a model that passed validation."""


__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ChecksumError",
    "ConfigError",
    "ConversionError",
    "DeadlineError",
    "FerryError",
    "InputError",
    "ManifestError",
    "ModelNotFoundError",
    "PackageError",
    "ParityError",
    "PayloadTooLargeError",
    "RequestError",
    "ServingError",
    "SignatureMismatchError",
    "UnavailableError",
    "UnsafePathError",
    "UnsupportedModelError",
]
