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
    "FerryError",
    "InputError",
    "ManifestError",
    "PackageError",
    "ParityError",
    "SignatureMismatchError",
    "UnsafePathError",
    "UnsupportedModelError",
]
